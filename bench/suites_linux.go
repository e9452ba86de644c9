package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// churnCount is the body of a churn process: clients goroutines connect,
// get accepted, and close on loopback for d; it prints the connections
// completed per second and the process's CPU time per connection in ns.
// The second holds up better on a shared machine: another load takes
// connections away from a run, but hardly changes what each one costs.
// Loopback's softirq work (most state changes, and the tracer with them)
// runs in this process and counts in its CPU time, unless ksoftirqd takes
// it over.
func churnCount(d time.Duration, clients int) error {
	ln, err := noKeepalive.Listen(context.Background(), "tcp4", "127.0.2.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	var n atomic.Int64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			buf := make([]byte, 1)
			for time.Now().Before(stop) {
				c, err := noKeepaliveDial.Dial("tcp4", ln.Addr().String())
				if err != nil {
					continue // ephemeral ports in TIME_WAIT: try again
				}
				c.Read(buf) // the server's FIN
				c.Close()
				n.Add(1)
			}
		})
	}
	wg.Wait()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return err
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	fmt.Printf("%.0f %.0f\n", float64(n.Load())/d.Seconds(), float64(cpu)/float64(max(n.Load(), 1)))
	return nil
}

// suiteChurn measures loopback connect/accept/close throughput with the
// tracer installed and not, alternating, in separate churn processes; then,
// in one more run outside that comparison, what the tracer program costs
// per event by the kernel's own accounting (BPF_ENABLE_STATS).
func suiteChurn(c config) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	pin := "/sys/fs/bpf/closewait-bench"
	tracer := func(verb string) error {
		out, err := exec.Command(c.closewait, "tracer", verb, "--pin-dir", pin).CombinedOutput()
		if err != nil {
			return fmt.Errorf("tracer %s: %v: %s", verb, err, firstLine(string(out)))
		}
		return nil
	}
	defer tracer("remove")
	const runFor = 2 * time.Second
	churn := func() (rate, cpu float64, err error) {
		out, err := exec.Command(self, "churn", runFor.String(), "4").Output()
		if err != nil {
			return 0, 0, err
		}
		if _, err := fmt.Sscan(string(out), &rate, &cpu); err != nil {
			return 0, 0, fmt.Errorf("churn printed %q: %w", out, err)
		}
		return rate, cpu, nil
	}
	var off, on, offCPU, onCPU []int64
	var pairs []float64 // per round: installed against not, in percent
	for r := range c.churnRuns {
		var rates [2]float64
		for i := range 2 {
			withTracer := (i+r)%2 == 1
			if withTracer {
				if err := tracer("install"); err != nil {
					return err
				}
			}
			rate, cpu, err := churn()
			if withTracer {
				if err := tracer("remove"); err != nil {
					return err
				}
			}
			if err != nil {
				return err
			}
			if withTracer {
				on, onCPU = append(on, int64(rate)), append(onCPU, int64(cpu))
				rates[1] = rate
			} else {
				off, offCPU = append(off, int64(rate)), append(offCPU, int64(cpu))
				rates[0] = rate
			}
		}
		pairs = append(pairs, 100*(rates[1]-rates[0])/rates[0])
	}
	cost, costErr := churnCost(tracer, pin, churn, runFor)
	mOff, mOn := median(off), median(on)
	fmt.Println("### Tracer overhead: loopback connect/accept/close churn")
	fmt.Println()
	fmt.Printf("4 client goroutines for %.0f s per run, %d runs each, alternating runs with and without the tracer installed.\n\n", runFor.Seconds(), c.churnRuns)
	cOff, cOn := median(offCPU), median(onCPU)
	fmt.Println("| tracer | median connections/s | median CPU per connection | runs (connections/s) |")
	fmt.Println("|---|---:|---:|---|")
	fmt.Printf("| not installed | %d | %.2f µs | %v |\n", mOff, float64(cOff)/1e3, off)
	fmt.Printf("| installed | %d | %.2f µs | %v |\n", mOn, float64(cOn)/1e3, on)
	fmt.Printf("\nThroughput change with the tracer: %+.1f%% between the medians, %+.1f%% as the median of the %d back-to-back pairs (target: loss <= 2%%). "+
		"CPU time per connection (the churn process's, softirq included): %+.1f%%.\n\n",
		100*(float64(mOn)-float64(mOff))/float64(mOff), medianFloat(pairs), len(pairs), 100*(float64(cOn)-float64(cOff))/float64(cOff))
	if costErr != nil {
		fmt.Printf("Per-event cost: not measured: %v.\n\n", costErr)
	} else {
		fmt.Println(cost)
		fmt.Println()
	}
	return nil
}

// churnCost runs the churn once more with the tracer installed and the
// kernel's BPF run-time statistics on, and says what the tracer program
// cost per state change. The statistics cost two clock reads per run, so
// this run is kept out of the throughput comparison. The figure covers the
// program only: not the hook's dispatch, nor the kernel freeing a stamp
// with its socket.
func churnCost(tracer func(string) error, pin string, churn func() (float64, float64, error), runFor time.Duration) (string, error) {
	if err := tracer("install"); err != nil {
		return "", err
	}
	defer tracer("remove")
	l, err := link.LoadPinnedLink(filepath.Join(pin, "link"), nil)
	if err != nil {
		return "", fmt.Errorf("opening the tracer's link: %w", err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return "", fmt.Errorf("reading the tracer's link: %w", err)
	}
	prog, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		return "", fmt.Errorf("opening the tracer program: %w", err)
	}
	defer prog.Close()
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		return "", fmt.Errorf("enabling BPF statistics: %w", err)
	}
	before, err := prog.Stats()
	if err != nil {
		stats.Close()
		return "", err
	}
	rate, _, err := churn()
	after, err2 := prog.Stats()
	stats.Close()
	if err := errors.Join(err, err2); err != nil {
		return "", err
	}
	n := after.RunCount - before.RunCount
	if n == 0 || rate == 0 {
		return "", errors.New("the tracer program never ran")
	}
	ns := float64(after.Runtime-before.Runtime) / float64(n)
	conns := rate * runFor.Seconds()
	return fmt.Sprintf("Per-event cost of the tracer program (`%s`), from the kernel's BPF statistics in one further run of %.0f connections/s: "+
		"%.0f ns per state change over %d changes (%.1f per connection, %.0f ns per connection); %d runs skipped by the kernel's recursion guard. "+
		"This is the program's own time: not the hook's dispatch, nor freeing a stamp with its socket.",
		progName(prog), rate, ns, n, float64(n)/conns, ns*float64(n)/conns, after.RecursionMisses-before.RecursionMisses), nil
}

func progName(p *ebpf.Program) string {
	if info, err := p.Info(); err == nil {
		return info.Name
	}
	return "?"
}

func medianFloat(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// suiteScrape compares one Prometheus scrape with one listing at the big
// load: the listing, `serve --textfile` as a whole process, and an HTTP
// scrape of a running `serve` (cache off), alternated.
func suiteScrape(c config) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	l, err := startHolders(c.holders, c.cw, c.est)
	if err != nil {
		return err
	}
	defer l.stop()
	addr, stop, err := startServe(c.closewait)
	if err != nil {
		return err
	}
	defer stop()
	prom := filepath.Join(os.TempDir(), "closewait-bench.prom")
	defer os.Remove(prom)
	tools := []tool{
		{"closewait (listing, auto source)", []string{c.closewait}},
		{"closewait serve --textfile (one scrape, whole process)", []string{c.closewait, "serve", "--textfile", prom}},
		{"GET /metrics of a running closewait serve --cache-ttl 0", []string{self, "fetch", "http://" + addr + "/metrics"}},
		{"closewait --source netlink (listing)", []string{c.closewait, "--source", "netlink"}},
		{"closewait serve --source netlink --textfile", []string{c.closewait, "serve", "--source", "netlink", "--textfile", prom}},
	}
	res, fails := alternate(tools, c.rounds)
	fmt.Printf("### Scrape cost, %d CLOSE_WAIT + %d ESTABLISHED sockets in %d processes\n\n", c.cw, c.est, c.holders)
	fmt.Println("| command | median wall | peak RSS |")
	fmt.Println("|---|---:|---:|")
	for _, t := range tools {
		if err := fails[t.name]; err != nil {
			fmt.Printf("| %s | failed: %s | |\n", t.name, err)
			continue
		}
		s := res[t.name]
		rssCell := fmt.Sprintf("%.1f MiB", float64(median(rss(s)))/1024)
		if strings.HasPrefix(t.name, "GET") {
			rssCell = "(client)"
		}
		fmt.Printf("| `%s` | %s | %s |\n", t.name, ms(median(walls(s))), rssCell)
	}
	fmt.Println()
	return nil
}

// startServe runs `closewait serve` on a free loopback port.
func startServe(bin string) (string, func(), error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "serve", "--listen", addr, "--cache-ttl", "0s")
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait() }
	for range 100 {
		if c, err := net.Dial("tcp4", addr); err == nil {
			c.Close()
			return addr, stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return "", nil, errors.New("closewait serve did not start")
}

// suiteHarness times `closewait test` with its default scenarios against
// the example server that closes correctly.
func suiteHarness(c config) error {
	dir, err := os.MkdirTemp("", "closewait-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if out, err := exec.Command("go", "build", "-o", dir, "./testdata/servers/correct").CombinedOutput(); err != nil {
		return fmt.Errorf("building the correct server: %v: %s", err, out)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	srv := exec.Command(filepath.Join(dir, "correct"), "-listen", "127.0.0.1:"+port)
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	time.Sleep(300 * time.Millisecond)
	t := tool{"closewait test --port P (default scenarios, 10 connections each)", []string{c.closewait, "test", "--port", port}}
	res, fails := alternate([]tool{t}, c.rounds)
	fmt.Println("### closewait test against testdata/servers/correct")
	fmt.Println()
	if err := fails[t.name]; err != nil {
		fmt.Printf("failed: %v\n\n", err)
		return nil
	}
	var all []string
	for _, s := range res[t.name] {
		all = append(all, ms(s.wall))
	}
	fmt.Printf("`%s`: median %s wall over %d runs (%s); target: under 5 s.\n\n", strings.Join(t.argv[1:], " "), ms(median(walls(res[t.name]))), len(all), strings.Join(all, ", "))
	return nil
}

// fetch GETs url and copies the body to stdout: the client side of a scrape.
func fetch(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	_, err = io.Copy(os.Stdout, resp.Body)
	return err
}

// suiteKeepalive times closewait keepalive against the listing of the same
// states, which it must stay within 1.2x of, over the big load.
func suiteKeepalive(c config) error {
	l, err := startHolders(c.holders, c.cw, c.est)
	if err != nil {
		return err
	}
	defer l.stop()
	tools := []tool{
		{"closewait --source ebpf --state close-wait,established", []string{c.closewait, "--source", "ebpf", "--state", "close-wait,established"}},
		{"closewait keepalive --source ebpf", []string{c.closewait, "keepalive", "--source", "ebpf"}},
		{"closewait --source netlink --state close-wait,established", []string{c.closewait, "--source", "netlink", "--state", "close-wait,established"}},
		{"closewait keepalive --source netlink", []string{c.closewait, "keepalive", "--source", "netlink"}},
	}
	res, fails := alternate(tools, c.rounds)
	fmt.Printf("### Keepalive audit, %d CLOSE_WAIT + %d ESTABLISHED sockets in %d processes\n\n", c.cw, c.est, c.holders)
	fmt.Println("| command | median wall | vs the listing | peak RSS | output lines |")
	fmt.Println("|---|---:|---:|---:|---:|")
	var base time.Duration
	for i, t := range tools {
		if err := fails[t.name]; err != nil {
			fmt.Printf("| `%s` | failed: %s | | | |\n", t.name, err)
			continue
		}
		s := res[t.name]
		w := median(walls(s))
		if i%2 == 0 {
			base = w // the listing of the same source, the row above keepalive's
		}
		fmt.Printf("| `%s` | %s | %s | %.1f MiB | %d |\n", t.name, ms(w), ratio(w, base), float64(median(rss(s)))/1024, median(lines(s)))
	}
	fmt.Println()
	return nil
}

// suiteFaults measures what the collector's prefault saves: 16 MiB of
// fresh anonymous memory written a page at a time, each page a fault,
// against the same after one MADV_POPULATE_WRITE, and after MADV_HUGEPAGE
// and then that (prefaultHuge, a one-shot listing's sockets: where
// transparent huge pages are off it measures small pages again);
// alternated, medians.
func suiteFaults(c config) error {
	const size = 16 << 20
	pages := size / os.Getpagesize()
	run := func(advice ...int) (time.Duration, error) {
		start := time.Now()
		b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return 0, err
		}
		defer unix.Munmap(b)
		for _, a := range advice {
			if err := unix.Madvise(b, a); err != nil {
				return 0, fmt.Errorf("madvise %d: %w", a, err)
			}
		}
		for i := 0; i < size; i += os.Getpagesize() {
			b[i] = 1
		}
		return time.Since(start), nil
	}
	rows := []struct {
		name   string
		advice []int
		walls  []time.Duration
	}{
		{name: "a fault each"},
		{name: "one `MADV_POPULATE_WRITE` first (collector's prefault)", advice: []int{unix.MADV_POPULATE_WRITE}},
		{name: "`MADV_HUGEPAGE`, then `MADV_POPULATE_WRITE` (prefaultHuge)", advice: []int{unix.MADV_HUGEPAGE, unix.MADV_POPULATE_WRITE}},
	}
	for range c.rounds {
		for i := range rows {
			w, err := run(rows[i].advice...)
			if err != nil {
				return err
			}
			rows[i].walls = append(rows[i].walls, w)
		}
	}
	mode, _ := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	fmt.Printf("### Page faults: 16 MiB of fresh memory (%d pages) written a page at a time\n\n", pages)
	fmt.Printf("Transparent huge pages: `%s`.\n\n", strings.TrimSpace(string(mode)))
	fmt.Println("| how the pages are mapped in | median wall | per page | vs faults |")
	fmt.Println("|---|---:|---:|---:|")
	f := median(rows[0].walls)
	for _, r := range rows {
		w := median(r.walls)
		fmt.Printf("| %s | %s | %.2f µs | %s |\n", r.name, ms(w), float64(w.Microseconds())/float64(pages), ratio(w, f))
	}
	fmt.Println()
	return nil
}
