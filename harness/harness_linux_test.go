package harness

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/internal/leaktest"
	"github.com/closewait/closewait/internal/testserver"
	"golang.org/x/sys/unix"
)

// Leaky servers are checked with a short deadline: a correct close on
// loopback takes milliseconds, and the stuck ones wait it out.
const testDeadline = 400 * time.Millisecond

func run(t *testing.T, o Options) *Outcome {
	t.Helper()
	rep, err := Run(t.Context(), o)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

func TestCorrectServerPasses(t *testing.T) {
	t.Parallel()
	for _, listen := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(listen, func(t *testing.T) {
			t.Parallel()
			srv := testserver.Start(t, "correct", "-listen", listen)
			rep := run(t, Options{Target: srv.Addr})
			if !rep.Passed() {
				var b strings.Builder
				WriteTable(&b, rep)
				t.Fatalf("correct server failed:\n%s", b.String())
			}
			if len(rep.Scenarios) != len(DefaultScenarios()) {
				t.Errorf("%d scenarios ran, want the default %d", len(rep.Scenarios), len(DefaultScenarios()))
			}
			for _, s := range rep.Scenarios {
				if s.OK != DefaultConns || s.Max <= 0 || s.Max > DefaultDeadline || s.P50 > s.P99 || s.P99 > s.Max {
					t.Errorf("%s: ok %d, p50 %v p99 %v max %v", s.Name, s.OK, s.P50, s.P99, s.Max)
				}
			}
		})
	}
}

// TestLeakyServersFail checks each scenario's verdict and the cause the
// collector gives for the stuck sockets.
func TestLeakyServersFail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		server string
		listen string
		causes map[string]string // scenario -> first cause; "" means it passes
	}{
		{"leak", "127.0.0.1:0", map[string]string{
			IdleClose: "eof-not-closed", RequestClose: "eof-not-closed", HalfClose: "eof-not-closed",
			AbortMidRequest: "eof-not-closed", Reset: "", Burst: "eof-not-closed",
		}},
		// A dual-stack listener: its sockets are AF_INET6 with
		// ::ffff:127.0.0.1 while the client dials 127.0.0.1.
		{"leak", "[::]:0", map[string]string{IdleClose: "eof-not-closed"}},
		{"noread", "127.0.0.1:0", map[string]string{
			IdleClose: "fin-not-read", RequestClose: "unread-data", HalfClose: "unread-data",
			AbortMidRequest: "unread-data", Reset: "", Burst: "unread-data",
		}},
		{"noread", "[::1]:0", map[string]string{IdleClose: "fin-not-read", RequestClose: "unread-data"}},
	}
	for _, tt := range tests {
		t.Run(tt.server+"/"+tt.listen, func(t *testing.T) {
			t.Parallel()
			srv := testserver.Start(t, tt.server, "-listen", tt.listen)
			target := srv.Addr
			if strings.HasPrefix(target, "[::]:") {
				target = "127.0.0.1:" + strings.TrimPrefix(target, "[::]:")
			}
			var names []string
			for _, s := range Scenarios() {
				if _, ok := tt.causes[s.Name]; ok {
					names = append(names, s.Name)
				}
			}
			const conns = 3
			rep := run(t, Options{Target: target, Scenarios: names, Conns: conns, Deadline: testDeadline})
			for _, s := range rep.Scenarios {
				want := tt.causes[s.Name]
				if want == "" {
					if !s.Passed() {
						t.Errorf("%s failed, want a pass: %s", s.Name, s.Summary())
					}
					continue
				}
				if s.Passed() || len(s.Failures) != conns {
					t.Errorf("%s: %d failures, want %d: %s", s.Name, len(s.Failures), conns, s.Summary())
					continue
				}
				for _, f := range s.Failures {
					if f.Cause() != want {
						t.Errorf("%s: %s: cause %v, want %s", s.Name, f.Client, f.Causes, want)
					}
					if len(f.Owners) == 0 || f.Owners[0].PID != srv.PID() {
						t.Errorf("%s: owners %v, want the server (pid %d)", s.Name, f.Owners, srv.PID())
					}
					if f.Waited < testDeadline {
						t.Errorf("%s: waited %v, less than the deadline", s.Name, f.Waited)
					}
				}
				if !strings.Contains(s.Summary(), want) {
					t.Errorf("%s: summary %q does not name %s", s.Name, s.Summary(), want)
				}
			}
		})
	}
}

// TestDeadPeer drops a client's packets with a real nftables rule: the
// server with 1 s keepalive idle and interval and 3 probes drops the
// connection after about 4 s; the one without keepalive never does.
func TestDeadPeer(t *testing.T) {
	t.Parallel()
	leaktest.RequireRoot(t)
	nft, err := exec.LookPath("nft")
	if err != nil {
		leaktest.Missing(t, "needs nft(8) (Debian package nftables) to check the rules are gone")
	}
	const deadline = 7 * time.Second
	for _, tt := range []struct {
		server string
		pass   bool
	}{{"keepalive", true}, {"nokeepalive", false}} {
		t.Run(tt.server, func(t *testing.T) {
			t.Parallel()
			srv := testserver.Start(t, tt.server)
			rep := run(t, Options{Target: srv.Addr, Scenarios: []string{DeadPeer}, Conns: 2, DeadPeerDeadline: deadline})
			s := rep.Scenarios[0]
			if s.Passed() != tt.pass {
				t.Fatalf("passed %v, want %v: %s", s.Passed(), tt.pass, s.Summary())
			}
			if tt.pass {
				// Keepalive gives up after idle + 3 probes: about 4 s after
				// the last data, never before the first probe.
				if s.P50 < time.Second || s.Max > deadline {
					t.Errorf("dropped after p50 %v, max %v; want 1s..%v", s.P50, s.Max, deadline)
				}
				return
			}
			for _, f := range s.Failures {
				if f.Cause() != CauseKeepaliveOff || f.State.String() != "ESTABLISHED" {
					t.Errorf("%s: %s %v, want ESTABLISHED keepalive-off", f.Client, f.State, f.Causes)
				}
			}
			if ka := s.Keepalive; ka != nil && ka.Enabled {
				t.Errorf("keepalive %+v, want off or unknown", ka)
			}
		})
	}
	t.Cleanup(func() {
		out, err := exec.Command(nft, "list", "tables").CombinedOutput()
		if err != nil {
			t.Errorf("nft list tables: %v\n%s", err, out)
		}
		if mine := tablePrefix + strconv.Itoa(os.Getpid()) + "_"; strings.Contains(string(out), mine) {
			t.Errorf("nftables tables left behind:\n%s", out)
		}
	})
}

// TestServerClosesFirst: a server that answers and closes (HTTP with
// "Connection: close") never has a socket in CLOSE_WAIT; the report says
// so instead of claiming it closed fast.
func TestServerClosesFirst(t *testing.T) {
	t.Parallel()
	addr := testserver.Serve(t, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 4096)
		if n, err := c.Read(buf); err == nil {
			c.Write(buf[:n])
		}
	})
	rep := run(t, Options{Target: addr, Scenarios: []string{RequestClose}, Conns: 3})
	s := rep.Scenarios[0]
	if !s.Passed() || s.ServerClosedFirst != 3 || !strings.Contains(s.Note, "could not leak") {
		t.Errorf("passed %v, server closed first %d, note %q; want a pass, 3, a note", s.Passed(), s.ServerClosedFirst, s.Note)
	}
}

func TestTargetNotReachable(t *testing.T) {
	t.Parallel()
	_, err := Run(t.Context(), Options{Target: testserver.ClosedAddr(t)})
	if err == nil || !strings.Contains(err.Error(), "not reachable") {
		t.Fatalf("error %v, want target not reachable", err)
	}
}

func TestStartServer(t *testing.T) {
	t.Parallel()
	bin := testserver.Build(t, "correct")
	addr := testserver.FreeAddr(t)

	srv, err := StartServer(t.Context(), []string{bin, "-listen", addr}, addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Exited(); err != nil {
		t.Fatalf("server exited at once: %v", err)
	}
	srv.Stop(5 * time.Second)
	if srv.Exited() == nil {
		t.Error("server still running after Stop")
	}
	if !strings.Contains(srv.Output(), "listening on "+addr) {
		t.Errorf("output %q", srv.Output())
	}

	// A server that fails to start: its exit is the error, its output kept.
	srv, err = StartServer(t.Context(), []string{bin, "-listen", "nonsense"}, addr, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited before accepting") {
		t.Fatalf("error %v, want exited before accepting", err)
	}
	if !strings.Contains(srv.Output(), "nonsense") {
		t.Errorf("output %q does not show the server's complaint", srv.Output())
	}

	if _, err := StartServer(t.Context(), []string{"/nonexistent/server"}, addr, time.Second); err == nil {
		t.Error("no error for a missing command")
	}

	// A server that never listens is stopped after the timeout.
	srv, err = StartServer(t.Context(), []string{"sleep", "60"}, addr, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not accept") {
		t.Fatalf("error %v, want did not accept", err)
	}
	if srv.Exited() == nil {
		t.Error("server left running after a failed start")
	}
}

// TestServerExitsMidRun checks that a server dying during a scenario
// fails it and the rest, instead of passing them.
func TestServerExitsMidRun(t *testing.T) {
	t.Parallel()
	bin := testserver.Build(t, "correct")
	addr := testserver.FreeAddr(t)
	srv, err := StartServer(t.Context(), []string{bin, "-listen", addr}, addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(time.Second)
	first := true
	rep := run(t, Options{Target: addr, Scenarios: []string{IdleClose, Reset, Burst}, Conns: 2,
		ServerAlive: func() error {
			if first {
				first = false
				srv.Stop(time.Second)
			}
			return srv.Exited()
		}})
	if rep.Passed() || len(rep.Scenarios) != 3 {
		t.Fatalf("passed %v with %d scenarios, want a failure over 3", rep.Passed(), len(rep.Scenarios))
	}
	for _, s := range rep.Scenarios {
		if s.Passed() || !strings.Contains(s.Err, "server exited") {
			t.Errorf("%s: err %q, want server exited", s.Name, s.Err)
		}
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	t.Parallel()
	for _, o := range []Options{
		{},
		{Target: "127.0.0.1"},
		{Target: "127.0.0.1:0"},
		{Target: "127.0.0.1:80", Scenarios: []string{"nope"}},
		{Target: "127.0.0.1:80", Conns: -1},
	} {
		if _, err := Run(context.Background(), o); err == nil {
			t.Errorf("Run(%+v): no error", o)
		} else if errors.Is(err, context.Canceled) {
			t.Errorf("Run(%+v): %v", o, err)
		}
	}
}

// TestProbeHandshakeUnfinished probes a server that defers accept (as
// nginx's "deferred" does): the client's connect succeeds, and the server
// side stays SYN_RECV until data comes, as it does when the handshake's
// last ACK is lost. The probe must find it on each source; it did not,
// and failed a CI run after 1 s.
func TestProbeHandshakeUnfinished(t *testing.T) {
	t.Parallel()
	leaktest.RequireRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0") // listened here: no port to find free first
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 30)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	addr := ln.Addr().String()

	// The oracle: ss sees the server side of a connected client in SYN-RECV.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ss", "-tanH", "state", "syn-recv", "src", addr).Output()
	abort(c.(*net.TCPConn))
	if err != nil || !strings.Contains(string(out), c.LocalAddr().String()) {
		t.Fatalf("ss -tanH state syn-recv: %v\n%s\nwant the server side of %s", err, out, c.LocalAddr())
	}

	for _, src := range []string{collector.SourceNetlink, collector.SourceEBPF} {
		t.Run(src, func(t *testing.T) {
			o, port, err := Options{Target: addr, Source: src}.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			r := &runner{opts: o, port: port}
			if err := r.probe(t.Context()); err != nil {
				t.Fatal(err)
			}
			if r.pollSource != src {
				t.Errorf("poll source %q, want %q", r.pollSource, src)
			}
		})
	}
}
