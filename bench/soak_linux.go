package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The soak's load (issue 14): a loopback churn of soakRate connections per
// second whose server leaks one in soakLeakEvery for soakHold, plus a
// short-lived process every second holding a few CLOSE_WAIT sockets. The
// ports are below the ephemeral range and nothing else uses them, so
// serve, watch and ss can all be narrowed to the load.
const (
	soakChurnPort = 31001 // the churn's server
	soakProcPorts = 10    // 31002..31011: the short-lived processes, in turn
	soakRate      = 1000
	soakLeakEvery = 50
	// A leaked connection is closed after soakHold, so the CLOSE_WAIT
	// population is steady (about 600) and memory is free to stay flat.
	soakHold = 30 * time.Second
)

func soakPorts() string {
	p := make([]string, 0, 1+soakProcPorts)
	for i := range 1 + soakProcPorts {
		p = append(p, strconv.Itoa(soakChurnPort+i))
	}
	return strings.Join(p, ",")
}

// procStats is what the soak samples of a process.
type procStats struct {
	rss     int64 // KiB
	fds     int
	threads int
}

func readProcStats(pid int) (procStats, error) {
	var s procStats
	var err error
	if s.rss, err = procRSS(pid); err != nil {
		return s, err
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.fds = len(fds)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Threads:"); ok {
			s.threads, _ = strconv.Atoi(strings.TrimSpace(rest))
		}
	}
	return s, nil
}

type soakSample struct {
	at         time.Duration
	serve      procStats
	watch      [2]procStats // events, polling
	goroutines int          // serve's go_goroutines
	scrapes    int64
	scrapeErrs int64
}

var (
	metricGoroutines = regexp.MustCompile(`(?m)^go_goroutines (\d+)`)
	metricCloseWait  = regexp.MustCompile(`(?m)^closewait_sockets\{state="close_wait"\} (\d+)`)
)

// scrape fetches serve's metrics and returns its goroutines and CLOSE_WAIT count.
func scrape(addr string) (goroutines, closeWait int, err error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("scrape: %s", resp.Status)
	}
	g, c := metricGoroutines.FindSubmatch(b), metricCloseWait.FindSubmatch(b)
	if g == nil || c == nil {
		return 0, 0, errors.New("scrape: no go_goroutines or closewait_sockets{state=\"close_wait\"}")
	}
	goroutines, _ = strconv.Atoi(string(g[1]))
	closeWait, _ = strconv.Atoi(string(c[1]))
	return goroutines, closeWait, nil
}

// ssCloseWait counts the load's CLOSE_WAIT sockets as ss sees them.
func ssCloseWait() (int, error) {
	filter := fmt.Sprintf("( sport >= :%d and sport <= :%d )", soakChurnPort, soakChurnPort+soakProcPorts)
	out, err := exec.Command("ss", "-Htan", "state", "close-wait", filter).Output()
	if err != nil {
		return 0, fmt.Errorf("ss: %w", err)
	}
	return strings.Count(string(out), "\n"), nil
}

// hostTCPSockets is the TCP sockets allocated on the host (sockstat):
// the listing may walk every one of them whatever the filters,
// and other programs on a shared machine move it.
func hostTCPSockets() int { return sockstatTCP("alloc") }

// sockstatTCP returns a field of the TCP line of /proc/net/sockstat
// ("alloc", "tw"), -1 if unread.
func sockstatTCP(field string) int {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "TCP: "); ok {
			f := strings.Fields(rest)
			for i := 0; i+1 < len(f); i += 2 {
				if f[i] == field {
					n, _ := strconv.Atoi(f[i+1])
					return n
				}
			}
		}
	}
	return -1
}

// runSoak is `bench soak`: closewait serve scraped every second and
// closewait watch (plain, --interval 1s) against the soak load, sampled
// every --sample; it prints a Markdown table and the verdict, and fails when
// anything grows after --warm-up or the final counts disagree with ss.
func runSoak(args []string) error {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	bin := fs.String("closewait", "./closewait", "closewait binary")
	duration := fs.Duration("duration", 30*time.Minute, "how long to run")
	every := fs.Duration("sample", time.Minute, "time between samples")
	warmUp := fs.Duration("warm-up", 5*time.Minute, "growth before this is not counted")
	if err := fs.Parse(args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ports := soakPorts()

	l := &load{}
	if err := l.start(exec.Command(self, "soakchurn")); err != nil {
		return err
	}
	defer l.stop()
	churn := l.procs[0].Process

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	var serveErr lockedBuffer
	serve := exec.Command(*bin, "serve", "--listen", addr, "--cache-ttl", "0s", "--sport", ports)
	serve.Stderr = &serveErr
	if err := serve.Start(); err != nil {
		return err
	}
	defer func() { serve.Process.Signal(syscall.SIGTERM); serve.Wait() }()
	events, err := startSoakWatch(*bin, "watch", ports)
	if err != nil {
		return err
	}
	defer events.stop()
	polling, err := startSoakWatch(*bin, "watch --no-tracer", ports, "--no-tracer")
	if err != nil {
		return err
	}
	defer polling.stop()
	watches := []*soakWatch{events, polling}

	// The scraper: one scrape a second, as Prometheus would.
	var scrapes, scrapeErrs atomic.Int64
	var goroutines atomic.Int64
	var lastScrapeErr atomic.Value
	stopScrape := make(chan struct{})
	scraperDone := make(chan struct{})
	go func() {
		defer close(scraperDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopScrape:
				return
			case <-t.C:
			}
			g, _, err := scrape(addr)
			scrapes.Add(1)
			if err != nil {
				scrapeErrs.Add(1)
				lastScrapeErr.Store(err.Error())
				continue
			}
			goroutines.Store(int64(g))
		}
	}()

	fmt.Printf("soak: %v, closewait %s, serve on %s (--cache-ttl 0s), watch and watch --no-tracer at --interval 1s, ports %s\n\n", *duration, *bin, addr, ports)
	fmt.Println("| minute | serve RSS MiB | serve fds | serve goroutines | serve threads | watch RSS MiB | watch fds | watch threads | watch --no-tracer RSS MiB | fds | threads | load CLOSE_WAIT (ss) | host TCP sockets | scrapes (failed) |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	start := time.Now()
	var samples []soakSample
	for next := start.Add(*every); !next.After(start.Add(*duration)); next = next.Add(*every) {
		time.Sleep(time.Until(next))
		var s soakSample
		s.at = time.Since(start)
		if s.serve, err = readProcStats(serve.Process.Pid); err != nil {
			return fmt.Errorf("serve: %w (stderr %q)", err, serveErr.String())
		}
		for i, w := range watches {
			if s.watch[i], err = readProcStats(w.pid); err != nil {
				return fmt.Errorf("%s: %w (stderr %q)", w.name, err, w.stderr.String())
			}
		}
		s.goroutines = int(goroutines.Load())
		s.scrapes, s.scrapeErrs = scrapes.Load(), scrapeErrs.Load()
		ss, _ := ssCloseWait()
		samples = append(samples, s)
		fmt.Printf("| %.0f | %.1f | %d | %d | %d | %.1f | %d | %d | %.1f | %d | %d | %d | %d | %d (%d) |\n", s.at.Minutes(),
			float64(s.serve.rss)/1024, s.serve.fds, s.goroutines, s.serve.threads,
			float64(s.watch[0].rss)/1024, s.watch[0].fds, s.watch[0].threads,
			float64(s.watch[1].rss)/1024, s.watch[1].fds, s.watch[1].threads, ss, hostTCPSockets(), s.scrapes, s.scrapeErrs)
	}

	// Counts under load: ss, serve and the watches one after the other.
	ss1, err := ssCloseWait()
	if err != nil {
		return err
	}
	_, served, serr := scrape(addr)
	watched := soakWatchCounts(watches)
	ss2, _ := ssCloseWait()
	fmt.Printf("\nUnder load at %s: ss %d then %d; serve %d (%v); %s\n",
		time.Now().UTC().Format(time.RFC3339), ss1, ss2, served, serr, watched)

	// Counts with the load paused: the churn stops connecting and keeps
	// its leaked connections; the short-lived processes end within 8 s.
	churn.Signal(syscall.SIGUSR1)
	stable, last := 0, -1
	for range 60 {
		time.Sleep(time.Second)
		n, err := ssCloseWait()
		if err != nil {
			return err
		}
		if n == last {
			stable++
		} else {
			stable = 0
		}
		last = n
		if stable >= 10 {
			break
		}
	}
	time.Sleep(3 * time.Second) // a watch refresh or two after the last change
	ssP1, _ := ssCloseWait()
	_, servedP, serrP := scrape(addr)
	watchedP := soakWatchCounts(watches)
	ssP2, _ := ssCloseWait()
	close(stopScrape)
	<-scraperDone
	fmt.Printf("Paused at %s: ss %d then %d; serve %d (%v); %s\n",
		time.Now().UTC().Format(time.RFC3339), ssP1, ssP2, servedP, serrP, watchedP)
	for _, w := range watches {
		if e := w.stderr.String(); e != "" {
			fmt.Printf("%s stderr: %q\n", w.name, e)
		}
	}
	if e, ok := lastScrapeErr.Load().(string); ok {
		fmt.Printf("Last failed scrape: %s\n", e)
	}

	var fails []string
	if ssP1 != ssP2 || servedP != ssP1 || serrP != nil {
		fails = append(fails, fmt.Sprintf("paused: ss %d then %d, serve %d (%v)", ssP1, ssP2, servedP, serrP))
	}
	for _, w := range watches {
		if n, _ := w.count(); n != ssP1 {
			fails = append(fails, fmt.Sprintf("paused: %s shows %d, ss %d", w.name, n, ssP1))
		}
	}
	fails = append(fails, soakGrowth(samples, *warmUp)...)
	if len(fails) == 0 {
		fmt.Println("\nPASS")
		return nil
	}
	fmt.Println("\nFAIL:\n- " + strings.Join(fails, "\n- "))
	return errors.New("soak failed")
}

// soakSlack is how far fds, goroutines and threads may be above their
// warm-up maximum and still count as flat: a sample can catch a scrape's
// connection and its goroutines in flight. A leak passes it in minutes.
const soakSlack = 2

// soakGrowth applies the pass rule to the samples after warmUp: RSS
// within 10% of its warm-up maximum (a collector's sawtooth reaches its
// top in the warm-up; a leak passes 10% in time), fds, goroutines and
// threads within soakSlack of their warm-up maximum.
func soakGrowth(samples []soakSample, warmUp time.Duration) []string {
	var warm bool
	var maxWarm soakSample
	var after []soakSample
	for i := range samples {
		s := &samples[i]
		if s.at <= warmUp+time.Second {
			warm = true
			maxWarm.serve.rss = max(maxWarm.serve.rss, s.serve.rss)
			maxWarm.serve.fds = max(maxWarm.serve.fds, s.serve.fds)
			maxWarm.serve.threads = max(maxWarm.serve.threads, s.serve.threads)
			for i := range s.watch {
				maxWarm.watch[i].rss = max(maxWarm.watch[i].rss, s.watch[i].rss)
				maxWarm.watch[i].fds = max(maxWarm.watch[i].fds, s.watch[i].fds)
				maxWarm.watch[i].threads = max(maxWarm.watch[i].threads, s.watch[i].threads)
			}
			maxWarm.goroutines = max(maxWarm.goroutines, s.goroutines)
			continue
		}
		after = append(after, *s)
	}
	if !warm || len(after) == 0 {
		return []string{fmt.Sprintf("too short to judge growth: no samples both within and after the %v warm-up", warmUp)}
	}
	var fails []string
	check := func(what string, at time.Duration, got, limit int64) {
		if got > limit {
			fails = append(fails, fmt.Sprintf("minute %.0f: %s %d, above %d", at.Minutes(), what, got, limit))
		}
	}
	for _, s := range after {
		check("serve RSS KiB", s.at, s.serve.rss, maxWarm.serve.rss*11/10)
		check("serve fds", s.at, int64(s.serve.fds), int64(maxWarm.serve.fds+soakSlack))
		check("serve goroutines", s.at, int64(s.goroutines), int64(maxWarm.goroutines+soakSlack))
		check("serve threads", s.at, int64(s.serve.threads), int64(maxWarm.serve.threads+soakSlack))
		for i, name := range []string{"watch", "watch --no-tracer"} {
			check(name+" RSS KiB", s.at, s.watch[i].rss, maxWarm.watch[i].rss*11/10)
			check(name+" fds", s.at, int64(s.watch[i].fds), int64(maxWarm.watch[i].fds+soakSlack))
			check(name+" threads", s.at, int64(s.watch[i].threads), int64(maxWarm.watch[i].threads+soakSlack))
		}
	}
	return fails
}

// soakWatch is a `closewait watch` with stdout on a pipe (plain
// snapshots), keeping the latest snapshot's header line.
type soakWatch struct {
	name   string
	pid    int
	stderr lockedBuffer
	mu     sync.Mutex
	header string
	stop   func()
}

func startSoakWatch(bin, name, ports string, args ...string) (*soakWatch, error) {
	cmd := exec.Command(bin, append([]string{"watch", "--interval", "1s", "--sport", ports}, args...)...)
	w := &soakWatch{name: name}
	cmd.Stderr = &w.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	w.pid = cmd.Process.Pid
	w.stop = func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if closeWaitCount.MatchString(sc.Text()) {
				w.mu.Lock()
				w.header = sc.Text()
				w.mu.Unlock()
			}
		}
	}()
	return w, nil
}

// count returns the CLOSE_WAIT count of the latest header, -1 if none.
func (w *soakWatch) count() (int, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := closeWaitCount.FindStringSubmatch(w.header)
	if m == nil {
		return -1, w.header
	}
	n, _ := strconv.Atoi(m[1])
	return n, w.header
}

func soakWatchCounts(ws []*soakWatch) string {
	var parts []string
	for _, w := range ws {
		n, h := w.count()
		parts = append(parts, fmt.Sprintf("%s %d (%q)", w.name, n, h))
	}
	return strings.Join(parts, "; ")
}

// soakChurn is the body of the churn process: it prints "ready", runs the
// load until stdin closes, and on SIGUSR1 stops connecting and starting
// processes and keeps the connections it holds.
func soakChurn() error {
	ln, err := noKeepalive.Listen(context.Background(), "tcp4", fmt.Sprintf("127.0.3.1:%d", soakChurnPort))
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var paused atomic.Bool
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	go func() { <-sig; paused.Store(true) }()
	go func() {
		for n := 1; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if n%soakLeakEvery != 0 {
				c.Close()
				continue
			}
			time.AfterFunc(soakHold, func() {
				if !paused.Load() {
					c.Close()
				}
			})
		}
	}()
	const workers = 4
	for range workers {
		go func() {
			next := time.Now()
			for {
				if paused.Load() {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				next = next.Add(workers * time.Second / soakRate)
				time.Sleep(time.Until(next))
				c, err := noKeepaliveDial.Dial("tcp4", ln.Addr().String())
				if err != nil {
					continue
				}
				c.Close() // first: the server's end goes to CLOSE_WAIT
			}
		}()
	}
	go func() {
		for i := 0; ; i++ {
			if !paused.Load() {
				port := soakChurnPort + 1 + i%soakProcPorts
				life := 2*time.Second + rand.N(6*time.Second)
				cmd := exec.Command(self, "soakproc", strconv.Itoa(port), life.String())
				if cmd.Start() == nil {
					go cmd.Wait()
				}
			}
			time.Sleep(time.Second)
		}
	}()
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// soakProc is the body of a short-lived process: five CLOSE_WAIT sockets
// on its own listener, held for life, then exit.
func soakProc(port string, life time.Duration) error {
	ln, err := noKeepalive.Listen(context.Background(), "tcp4", "127.0.4.1:"+port)
	if err != nil {
		return err
	}
	var keep []net.Conn
	for range 5 {
		s, err := closedByPeer(ln)
		if err != nil {
			return err
		}
		keep = append(keep, s)
	}
	time.Sleep(life)
	runtime.KeepAlive(keep) // a collected conn's finalizer would close it
	return nil
}
