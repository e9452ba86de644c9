package main

import (
	"fmt"
	"os"
	"os/exec"
	"time"
)

// suiteNetNS times the listing of the big load spread over many network
// namespaces against the same load in one. The two loads run one after the
// other (together, the single-namespace listing would walk the other's
// sockets too: the kernel's TCP hash is shared), each measured over the
// same rounds.
func suiteNetNS(c config, nns int) error {
	tools := []tool{
		{"closewait --source ebpf", []string{c.closewait, "--source", "ebpf"}},
		{"closewait --source netlink", []string{c.closewait, "--source", "netlink"}},
	}
	type phase struct {
		name  string
		start func() (*load, error)
		res   map[string][]sample
		fails map[string]error
	}
	phases := []*phase{
		{name: "1 namespace", start: func() (*load, error) { return startHolders(c.holders, c.cw, c.est) }},
		{name: fmt.Sprintf("%d namespaces", nns), start: func() (*load, error) { return startNetNSHolders(nns, c.cw, c.est) }},
	}
	for _, p := range phases {
		l, err := p.start()
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		p.res, p.fails = alternate(tools, c.rounds)
		l.stop()
	}
	fmt.Printf("### Listing across network namespaces: %d CLOSE_WAIT + %d ESTABLISHED sockets, in %d processes in one namespace, then in %d namespaces (one holder each)\n\n",
		c.cw, c.est, c.holders, nns)
	fmt.Println("| command | median wall, 1 namespace | median wall, " + phases[1].name + " | ratio | peak RSS, 1 / many | output lines, 1 / many |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, t := range tools {
		one, many := phases[0], phases[1]
		if err := cmpErr(one.fails[t.name], many.fails[t.name]); err != nil {
			fmt.Printf("| `%s` | failed: %s | | | | |\n", t.name, err)
			continue
		}
		w1, wn := median(walls(one.res[t.name])), median(walls(many.res[t.name]))
		fmt.Printf("| `%s` | %s | %s | %s | %.1f / %.1f MiB | %d / %d |\n", t.name, ms(w1), ms(wn), ratio(wn, w1),
			float64(median(rss(one.res[t.name])))/1024, float64(median(rss(many.res[t.name])))/1024,
			median(lines(one.res[t.name])), median(lines(many.res[t.name])))
	}
	fmt.Println()
	return nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// startNetNSHolders makes nns network namespaces (ip netns add), each with
// one holder process holding its share of the sockets on its own loopback.
// Stopping the load deletes them.
func startNetNSHolders(nns, cw, est int) (*load, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	l := &load{}
	for i := range nns {
		name := fmt.Sprintf("cwbench-%d", i)
		exec.Command("ip", "netns", "delete", name).Run() // left by a killed run
		for _, args := range [][]string{{"netns", "add", name}, {"-n", name, "link", "set", "lo", "up"}} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				l.stop()
				return nil, fmt.Errorf("ip %v: %v: %s", args, err, out)
			}
			if args[1] == "add" {
				l.after = append(l.after, func() { exec.Command("ip", "netns", "delete", name).Run() })
			}
		}
		cmd := exec.Command("ip", "netns", "exec", name, self, "hold", "127.0.0.1", fmt.Sprint(cw/nns), fmt.Sprint(est/nns/2))
		if err := l.start(cmd); err != nil {
			l.stop()
			return nil, err
		}
	}
	time.Sleep(time.Second) // the last FINs
	return l, nil
}
