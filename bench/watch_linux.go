package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// watchBench configures suiteWatch.
type watchBench struct {
	closewait string        // binary to measure
	closeWait int           // CLOSE_WAIT sockets in the steady load
	holders   int           // processes sharing them
	window    time.Duration // CPU is averaged over this, after warmUp
	warmUp    time.Duration // first poll: full owner scan, not steady state
	growth    int           // CLOSE_WAIT sockets per second in the growing case
}

// watchHoldEnv turns this binary into a watch holder: "IP COUNT PERSEC".
// An environment variable rather than a mode of dispatch keeps the watch
// benchmark in this file.
const watchHoldEnv = "CLOSEWAIT_BENCH_WATCH_HOLD"

func init() {
	if spec := os.Getenv(watchHoldEnv); spec != "" {
		if err := watchHold(spec); err != nil {
			fmt.Fprintln(os.Stderr, "bench: watch holder:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// suiteWatch measures `closewait watch` at a steady load: average CPU over
// o.window from /proc/PID/stat (utime+stime) after o.warmUp, and RSS over
// the window. Cases: polling without BPF (--source netlink) with plain
// output and on a terminal (tmux), polling with the auto source, the
// tracer's events, and polling and events while a leak grows.
// Targets (issue 6): <= 10% of one core polling, <= 3% with the tracer,
// RSS flat.
func suiteWatch(o watchBench) error {
	if o.window <= 0 {
		o.window = time.Minute
	}
	if o.warmUp <= 0 {
		o.warmUp = 10 * time.Second
	}
	if o.growth <= 0 {
		o.growth = 20
	}
	per := o.closeWait / max(o.holders, 1)
	l := &load{}
	defer l.stop()
	for i := range max(o.holders, 1) {
		if err := startWatchHolder(l, fmt.Sprintf("127.0.%d.1", 40+i), per, 0); err != nil {
			return err
		}
	}
	type result struct {
		name string
		m    watchSample
		err  error
	}
	plain := func(args ...string) func() (*watchRun, error) {
		return func() (*watchRun, error) { return startWatchPlain(o.closewait, args) }
	}
	poll := []string{"--no-tracer", "--source", "netlink"}
	cases := []struct {
		name  string
		start func() (*watchRun, error)
		grow  bool
	}{
		{"polling, netlink (no BPF), plain output", plain(poll...), false},
		{"polling, netlink (no BPF), terminal (tmux 200x50)", func() (*watchRun, error) {
			return startWatchTmux(o.closewait, poll)
		}, false},
		{"polling, auto source (BPF iterator when available)", plain("--no-tracer"), false},
		{"tracer events, plain output", plain(), false},
		{fmt.Sprintf("polling, netlink (no BPF), leak growing %d/s", o.growth), plain(poll...), true},
		{fmt.Sprintf("tracer events, leak growing %d/s", o.growth), plain(), true},
	}
	var results []result
	for _, c := range cases {
		var grow *load
		if c.grow {
			grow = &load{}
			if err := startWatchHolder(grow, "127.0.60.1", 0, o.growth); err != nil {
				return err
			}
		}
		w, err := c.start()
		var m watchSample
		if err == nil {
			m, err = w.measure(o.warmUp, o.window)
			w.stop()
		}
		if grow != nil {
			grow.stop()
		}
		results = append(results, result{c.name, m, err})
	}

	fmt.Printf("### closewait watch, %d CLOSE_WAIT sockets in %d processes, --interval 1s\n\n", per*max(o.holders, 1), max(o.holders, 1))
	fmt.Printf("CPU of the watch process (utime+stime from /proc/PID/stat) averaged over %v after a %v warm-up; "+
		"the warm-up (first poll: every owner resolved) is shown apart.\n\n", o.window, o.warmUp)
	fmt.Println("| case | mode seen | avg CPU (% of one core) | warm-up CPU | RSS after warm-up | RSS at end | RSS max |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|")
	for _, r := range results {
		if r.err != nil {
			fmt.Printf("| %s | failed: %v | | | | | |\n", r.name, r.err)
			continue
		}
		m := r.m
		fmt.Printf("| %s | %s | %.1f%% | %.2f s | %.1f MiB | %.1f MiB | %.1f MiB |\n", r.name, m.mode,
			100*m.cpu.Seconds()/m.window.Seconds(), m.warmCPU.Seconds(),
			float64(m.rssStart)/1024, float64(m.rssEnd)/1024, float64(m.rssMax)/1024)
	}
	fmt.Println()
	return nil
}

// startWatchHolder starts a holder process: count CLOSE_WAIT sockets at
// once, then perSec more every second.
func startWatchHolder(l *load, ip string, count, perSec int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d", watchHoldEnv, ip, count, perSec))
	return l.start(cmd)
}

// watchHold is the body of a watch holder. Keepalive is off on both ends:
// Go turns it on by default, and the probes would get RST once the closed
// client end times out of FIN_WAIT2 (60 s), silently emptying the load
// in the middle of a measurement.
func watchHold(spec string) error {
	f := strings.Fields(spec)
	if len(f) != 3 {
		return fmt.Errorf("bad spec %q", spec)
	}
	count, _ := strconv.Atoi(f[1])
	perSec, _ := strconv.Atoi(f[2])
	p := &pairer{ip: f[0]}
	defer p.close()
	var keep []net.Conn
	leak := func() error {
		c, s, err := p.pair()
		if err != nil {
			return err
		}
		p.hangUp(c)
		keep = append(keep, s)
		return nil
	}
	for range count {
		if err := leak(); err != nil {
			return err
		}
	}
	p.flush()
	fmt.Println("ready")
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	// The conns must stay reachable: a net.Conn the GC collects is closed
	// by its finalizer, and the load would melt away.
	defer func() {
		for _, c := range keep {
			abort(c)
		}
	}()
	if perSec > 0 {
		t := time.NewTicker(time.Second / time.Duration(perSec))
		defer t.Stop()
		for {
			select {
			case <-done:
				return nil
			case <-t.C:
				if err := leak(); err != nil {
					return err
				}
			}
		}
	}
	<-done
	return nil
}

var closeWaitCount = regexp.MustCompile(`CLOSE_WAIT (\d+)`)

// modeOf reads a watch header line: "events" or "polling", and the
// number of sockets it shows.
func modeOf(header string) string {
	mode := "polling"
	if strings.Contains(header, "tracer events") {
		mode = "events"
	}
	if m := closeWaitCount.FindStringSubmatch(header); m != nil {
		mode += ", " + m[1] + " seen"
	}
	return mode
}

// watchRun is a running `closewait watch`.
type watchRun struct {
	pid  int
	stop func()
	mode func() string // what the watch said it does: polling or events
}

// startWatchPlain runs watch with stdout on a pipe (plain snapshots),
// reading the output so the pipe never fills.
func startWatchPlain(bin string, args []string) (*watchRun, error) {
	cmd := exec.Command(bin, append([]string{"watch", "--interval", "1s"}, args...)...)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var header string // the latest snapshot's first line
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if closeWaitCount.MatchString(sc.Text()) {
				mu.Lock()
				header = sc.Text()
				mu.Unlock()
			}
		}
	}()
	mode := func() string {
		mu.Lock()
		defer mu.Unlock()
		m := modeOf(header)
		if strings.Contains(stderr.String(), "tracer events unavailable") {
			m += " (tracer unavailable)"
		}
		return m
	}
	return &watchRun{
		pid:  cmd.Process.Pid,
		mode: mode,
		stop: func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		},
	}, nil
}

// lockedBuffer is a bytes.Buffer safe to write from exec's copying
// goroutine while the benchmark reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what was written so far.
func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startWatchTmux runs watch full screen in a detached tmux session.
func startWatchTmux(bin string, args []string) (*watchRun, error) {
	if _, err := exec.LookPath("tmux"); err != nil {
		return nil, errors.New("tmux not installed")
	}
	// A server of our own: one already running elsewhere (in another
	// network namespace, say) would run watch there.
	server := fmt.Sprintf("cwbench%d", os.Getpid())
	tmux := func(args ...string) *exec.Cmd {
		return exec.Command("tmux", append([]string{"-L", server}, args...)...)
	}
	argv := append([]string{"exec", bin, "watch", "--interval", "1s"}, args...)
	if out, err := tmux("new-session", "-d", "-x", "200", "-y", "50", strings.Join(argv, " ")).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("tmux: %v: %s", err, out)
	}
	kill := func() { tmux("kill-server").Run() }
	out, err := tmux("display-message", "-p", "#{pane_pid}").Output()
	if err != nil {
		kill()
		return nil, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		kill()
		return nil, err
	}
	mode := func() string {
		screen, _ := tmux("capture-pane", "-p").Output()
		line, _, _ := strings.Cut(string(screen), "\n")
		return modeOf(line)
	}
	return &watchRun{pid: pid, mode: mode, stop: kill}, nil
}

// watchSample is one measured case.
type watchSample struct {
	mode                     string
	window                   time.Duration
	cpu, warmCPU             time.Duration
	rssStart, rssEnd, rssMax int64 // KiB
}

func (w *watchRun) measure(warmUp, window time.Duration) (watchSample, error) {
	var s watchSample
	time.Sleep(warmUp)
	c0, err := procCPU(w.pid)
	if err != nil {
		return s, fmt.Errorf("watch exited during warm-up: %w", err)
	}
	s.mode = w.mode()
	s.warmCPU = c0
	s.rssStart, _ = procRSS(w.pid)
	s.rssMax = s.rssStart
	t0 := time.Now()
	for time.Since(t0) < window {
		time.Sleep(min(5*time.Second, window-time.Since(t0)))
		if r, err := procRSS(w.pid); err == nil {
			s.rssEnd, s.rssMax = r, max(s.rssMax, r)
		}
	}
	c1, err := procCPU(w.pid)
	if err != nil {
		return s, fmt.Errorf("watch exited during the window: %w", err)
	}
	s.mode = w.mode() // at the end: what it did, and how many it saw
	if n, err := ssHostCloseWait(); err == nil {
		s.mode += fmt.Sprintf(" (ss: %d)", n) // next to it: is the load or the view short?
	}
	s.window, s.cpu = time.Since(t0), c1-c0
	return s, nil
}

// ssHostCloseWait counts the host's CLOSE_WAIT sockets as ss sees them.
func ssHostCloseWait() (int, error) {
	out, err := exec.Command("ss", "-tanH", "state", "close-wait").Output()
	if err != nil {
		return 0, err
	}
	return bytes.Count(out, []byte{'\n'}), nil
}

// procCPU reads utime+stime of pid.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	// Fields 14 and 15 of stat(5), counted after the command name.
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ
	return time.Duration(ut+st) * time.Second / clkTck, nil
}

// procRSS reads VmRSS of pid in KiB.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, errors.New("no VmRSS")
}
