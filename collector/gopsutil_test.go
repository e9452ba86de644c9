package collector

import (
	"context"
	"maps"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	gnet "github.com/shirou/gopsutil/v4/net"
)

func TestParseStatus(t *testing.T) {
	tests := map[string]State{
		// Linux and Windows / macOS (lsof) spellings.
		"CLOSE_WAIT": StateCloseWait, "ESTABLISHED": StateEstablished, "LISTEN": StateListen,
		"SYN_SENT": StateSynSent, "SYN_RECV": StateSynRecv, "SYN_RECEIVED": StateSynRecv,
		"FIN_WAIT1": StateFinWait1, "FIN_WAIT_1": StateFinWait1, "FIN_WAIT2": StateFinWait2,
		"FIN_WAIT_2": StateFinWait2, "TIME_WAIT": StateTimeWait, "CLOSE": StateClose,
		"CLOSED": StateClose, "DELETE": StateClose, "LAST_ACK": StateLastAck, "CLOSING": StateClosing,
	}
	for in, want := range tests {
		if got, ok := parseStatus(in); !ok || got != want {
			t.Errorf("parseStatus(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "NONE", "BOUND"} {
		if st, ok := parseStatus(in); ok {
			t.Errorf("parseStatus(%q) = %v, want not ok", in, st)
		}
	}
}

func TestGopsutilSocketOf(t *testing.T) {
	c := gnet.ConnectionStat{
		Fd: 9, Family: 10, Type: 1, Status: "CLOSE_WAIT", Pid: 321,
		Laddr: gnet.Addr{IP: "::1", Port: 8080}, Raddr: gnet.Addr{IP: "::1", Port: 50000},
	}
	for _, fdKnown := range []bool{true, false} {
		s, ok := gopsutilSource{fdKnown: fdKnown}.socketOf(c)
		wantFD := 9
		if !fdKnown {
			wantFD = -1
		}
		if !ok || s.Family != FamilyIPv6 || s.State != StateCloseWait || s.Local.String() != "[::1]:8080" ||
			s.Remote.String() != "[::1]:50000" || len(s.Owners) != 1 || s.Owners[0] != (Owner{PID: 321, FD: wantFD}) {
			t.Errorf("fdKnown %v: %+v, %v", fdKnown, s, ok)
		}
		if !s.QueuesUnknown || !s.InodeUnknown || !s.UIDUnknown {
			t.Errorf("fdKnown %v: queues, inode and uid not marked unknown: %+v", fdKnown, s)
		}
	}
	listen := gnet.ConnectionStat{Family: 2, Type: 1, Status: "LISTEN", Laddr: gnet.Addr{IP: "0.0.0.0", Port: 80}, Uids: []int32{1000}}
	if s, ok := (gopsutilSource{}).socketOf(listen); !ok || s.Remote.IsValid() || len(s.Owners) != 0 || s.UIDUnknown || s.UID != 1000 {
		t.Errorf("listener: %+v, %v", s, ok)
	}
	for _, bad := range []gnet.ConnectionStat{
		{Type: 2, Status: "CLOSE_WAIT"}, // UDP
		{Type: 1, Status: "NONE"},
		{Type: 1, Status: "CLOSE_WAIT", Laddr: gnet.Addr{IP: "not-an-ip"}},
	} {
		if s, ok := (gopsutilSource{}).socketOf(bad); ok {
			t.Errorf("%+v accepted as %+v", bad, s)
		}
	}
}

// lsof lists a socket once per fd: one Socket with every owner, and the
// listener, in whatever state the query asks for, marks it inbound.
func TestGopsutilFromConnections(t *testing.T) {
	l, r := gnet.Addr{IP: "127.0.0.1", Port: 8080}, gnet.Addr{IP: "127.0.0.1", Port: 50000}
	conns := []gnet.ConnectionStat{
		{Fd: 4, Family: 2, Type: 1, Status: "CLOSE_WAIT", Pid: 20, Laddr: l, Raddr: r},
		{Fd: 3, Family: 2, Type: 1, Status: "LISTEN", Pid: 10, Laddr: gnet.Addr{IP: "*", Port: 8080}},
		{Fd: 7, Family: 2, Type: 1, Status: "CLOSE_WAIT", Pid: 10, Laddr: l, Raddr: r},
		{Fd: 5, Family: 2, Type: 1, Status: "ESTABLISHED", Pid: 10, Laddr: l, Raddr: gnet.Addr{IP: "127.0.0.1", Port: 50001}},
	}
	res, pids := gopsutilSource{fdKnown: true}.fromConnections(conns, query{states: StatesCloseWait, owners: true})
	if len(res.sockets) != 1 || len(res.listeners) != 1 || len(pids) != 2 {
		t.Fatalf("%d sockets, %d listeners, pids %v; want 1, 1, two", len(res.sockets), len(res.listeners), pids)
	}
	s := res.sockets[0]
	want := []Owner{{PID: 10, FD: 7}, {PID: 20, FD: 4}}
	if !s.Inbound || len(s.Owners) != 2 || s.Owners[0] != want[0] || s.Owners[1] != want[1] {
		t.Errorf("socket %+v, want inbound with owners %v", s, want)
	}
	res, _ = gopsutilSource{fdKnown: true}.fromConnections(conns, query{states: StatesCloseWait, countAll: true})
	if len(res.sockets) != 1 || res.sockets[0].Owners != nil {
		t.Errorf("without owners: %+v", res.sockets)
	}
	// Each socket counted once, however many fds hold it.
	want4 := StateCounts{StateCloseWait: 1, StateListen: 1, StateEstablished: 1}
	if res.counts == nil || !maps.Equal(res.counts[0], want4) || len(res.counts[1]) != 0 {
		t.Errorf("counts %v, want IPv4 %v and no IPv6", res.counts, want4)
	}
}

// TestGopsutilSource runs the macOS and Windows fallback source on Linux,
// where gopsutil reads /proc: a real CLOSE_WAIT socket of this process.
func TestGopsutilSource(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	local, remote := netip.MustParseAddrPort(server.LocalAddr().String()), netip.MustParseAddrPort(client.LocalAddr().String())
	client.Close()
	f, err := server.(*net.TCPConn).File() // its fd number; Linux's gopsutil lists one fd a socket
	if err != nil {
		t.Fatal(err)
	}
	server.Close()
	defer f.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var found *Socket
	n := 0
	for found == nil && ctx.Err() == nil { // the FIN lands a moment after Close
		res, err := gopsutilSource{fdKnown: true}.dump(ctx, query{states: StatesCloseWait, owners: true, filter: Filter{Ports: []uint16{local.Port()}}})
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range res.sockets {
			if s.State != StateCloseWait {
				t.Errorf("%v -> %v in state %v, asked for CLOSE_WAIT only", s.Local, s.Remote, s.State)
			}
			if s.Local == local && s.Remote == remote {
				found = &res.sockets[i]
				n++
			}
		}
		if found == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if found == nil {
		t.Fatalf("%v -> %v not listed in CLOSE_WAIT", local, remote)
	}
	if !found.Inbound {
		t.Error("accepted socket not marked inbound")
	}
	self, _ := os.Executable()
	fds := map[int]bool{}
	for _, o := range found.Owners {
		if o.PID != os.Getpid() || o.Comm == "" {
			t.Errorf("owner %+v, want pid %d (%s) with its name", o, os.Getpid(), self)
		}
		fds[o.FD] = true
	}
	if n != 1 || len(fds) != 1 || !fds[int(f.Fd())] {
		t.Errorf("listed %d times, owners %+v: want once, with fd %d", n, found.Owners, f.Fd())
	}
}
