package collector

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// diagMsg holds the fields of one inet_diag_msg for buildDiagMsg.
type diagMsg struct {
	family        uint8
	state         State
	timer         uint8
	local, remote netip.AddrPort
	cookie        uint64
	expires       uint32
	rqueue        uint32
	wqueue        uint32
	uid           uint32
	inode         uint32
}

// buildDiagMsg lays out an inet_diag_msg the way the kernel does, followed
// by attrs (already encoded).
func buildDiagMsg(d diagMsg, attrs []byte) netlink.Message {
	b := make([]byte, sizeofInetDiagMsg, sizeofInetDiagMsg+len(attrs))
	b[0], b[1], b[2] = d.family, uint8(d.state), d.timer
	binary.BigEndian.PutUint16(b[4:], d.local.Port())
	binary.BigEndian.PutUint16(b[6:], d.remote.Port())
	putAddr := func(dst []byte, a netip.Addr) {
		if a.Is4() {
			a4 := a.As4()
			copy(dst, a4[:])
		} else if a.IsValid() {
			a16 := a.As16()
			copy(dst, a16[:])
		}
	}
	putAddr(b[8:24], d.local.Addr())
	putAddr(b[24:40], d.remote.Addr())
	binary.NativeEndian.PutUint32(b[44:], uint32(d.cookie))
	binary.NativeEndian.PutUint32(b[48:], uint32(d.cookie>>32))
	binary.NativeEndian.PutUint32(b[52:], d.expires)
	binary.NativeEndian.PutUint32(b[56:], d.rqueue)
	binary.NativeEndian.PutUint32(b[60:], d.wqueue)
	binary.NativeEndian.PutUint32(b[64:], d.uid)
	binary.NativeEndian.PutUint32(b[68:], d.inode)
	return netlink.Message{
		Header: netlink.Header{Type: sockDiagByFamily, Flags: netlink.Multi},
		Data:   append(b, attrs...),
	}
}

// tcpInfoBytes serializes a unix.TCPInfo, which mirrors the kernel's struct
// tcp_info, so the decoder's offsets are checked against it; n > 0 cuts it
// to n bytes as an older kernel would send it.
func tcpInfoBytes(t testing.TB, lastDataRecv, lastAckRecv uint32, n int) []byte {
	t.Helper()
	info := unix.TCPInfo{State: uint8(StateCloseWait), Last_data_recv: lastDataRecv, Last_ack_recv: lastAckRecv, Rto: 1, Last_ack_sent: 7}
	// The struct's memory, padding included, is the kernel's layout;
	// binary.Write would pack the fields and shift them.
	b := bytes.Clone((*[unix.SizeofTCPInfo]byte)(unsafe.Pointer(&info))[:])
	if n > 0 {
		b = b[:n]
	}
	return b
}

// diagAttrs encodes the attributes the kernel sends with INET_DIAG_INFO
// requested: a shutdown byte and tcp_info (omitted when info is nil).
func diagAttrs(t testing.TB, info []byte) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.Uint8(8, 0) // INET_DIAG_SHUTDOWN
	if info != nil {
		ae.Bytes(inetDiagInfo, info)
	}
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTCPInfoOffsets(t *testing.T) {
	var info unix.TCPInfo
	if off := unsafe.Offsetof(info.Last_data_recv); off != tcpInfoLastDataRecv {
		t.Errorf("tcpi_last_data_recv at %d, decoder uses %d", off, tcpInfoLastDataRecv)
	}
	if off := unsafe.Offsetof(info.Last_ack_recv); off != tcpInfoLastAckRecv {
		t.Errorf("tcpi_last_ack_recv at %d, decoder uses %d", off, tcpInfoLastAckRecv)
	}
}

func TestInetDiagRequest(t *testing.T) {
	b := inetDiagRequest(unix.AF_INET6, StatesCloseWait.With(StateListen), true, nil, nil)
	if len(b) != sizeofInetDiagReqV2 {
		t.Fatalf("request is %d bytes, want %d", len(b), sizeofInetDiagReqV2)
	}
	if b[0] != unix.AF_INET6 || b[1] != unix.IPPROTO_TCP || b[2] != 1<<(inetDiagInfo-1) {
		t.Errorf("family/protocol/ext = %d/%d/%#x", b[0], b[1], b[2])
	}
	if got := binary.NativeEndian.Uint32(b[4:]); got != 1<<8|1<<10 {
		t.Errorf("idiag_states = %#x, want %#x", got, 1<<8|1<<10)
	}

	bc := portBytecode(&Filter{SPorts: []uint16{80}})
	b = inetDiagRequest(unix.AF_INET, StatesCloseWait, false, bc, nil)
	if b[2] != 0 {
		t.Errorf("idiag_ext = %#x without tcp_info", b[2])
	}
	if len(b) != sizeofInetDiagReqV2+4+len(bc) {
		t.Fatalf("request with bytecode is %d bytes, want %d", len(b), sizeofInetDiagReqV2+4+len(bc))
	}
	a := b[sizeofInetDiagReqV2:]
	if l, typ := binary.NativeEndian.Uint16(a), binary.NativeEndian.Uint16(a[2:]); int(l) != 4+len(bc) || typ != 1 {
		t.Errorf("attribute length %d type %d, want %d INET_DIAG_REQ_BYTECODE (1)", l, typ, 4+len(bc))
	}
	if !bytes.Equal(a[4:], bc) {
		t.Errorf("attribute holds % x, want % x", a[4:], bc)
	}
}

// bcOps lays out inet_diag_bc_ops, each {code, yes, no}, as the kernel
// reads them.
func bcOps(ops ...[3]int) []byte {
	var b []byte
	for _, op := range ops {
		b = append(b, byte(op[0]), byte(op[1]))
		b = binary.NativeEndian.AppendUint16(b, uint16(op[2]))
	}
	return b
}

// TestPortBytecode checks the programs byte by byte. The expected ones are
// what ss builds for the same expression, e.g. "sport = :80 or dport =
// :80" for Ports 80.
func TestPortBytecode(t *testing.T) {
	const jmp, seq, deq = 1, 11, 12
	tests := []struct {
		name string
		f    Filter
		want []byte
	}{
		{"none", Filter{PIDs: []int{1}, IPv4: true}, nil},
		{"sport", Filter{SPorts: []uint16{80}}, bcOps(
			[3]int{seq, 8, 12}, [3]int{0, 0, 80},
		)},
		{"dport", Filter{DPorts: []uint16{443}}, bcOps(
			[3]int{deq, 8, 12}, [3]int{0, 0, 443},
		)},
		{"port: local or remote", Filter{Ports: []uint16{80}}, bcOps(
			[3]int{seq, 8, 12}, [3]int{0, 0, 80}, // miss: to the D_EQ
			[3]int{jmp, 4, 12},                   // match: to the end
			[3]int{deq, 8, 12}, [3]int{0, 0, 80}, // miss: 4 past the end
		)},
		{"two sports", Filter{SPorts: []uint16{80, 8080}}, bcOps(
			[3]int{seq, 8, 12}, [3]int{0, 0, 80},
			[3]int{jmp, 4, 12},
			[3]int{seq, 8, 12}, [3]int{0, 0, 8080},
		)},
		{"sport and dport", Filter{SPorts: []uint16{80}, DPorts: []uint16{443}}, bcOps(
			[3]int{seq, 8, 20}, [3]int{0, 0, 80}, // miss: 4 past the end
			[3]int{deq, 8, 12}, [3]int{0, 0, 443},
		)},
		{"every group", Filter{Ports: []uint16{1}, SPorts: []uint16{2, 3}, DPorts: []uint16{4}}, bcOps(
			[3]int{seq, 8, 12}, [3]int{0, 0, 1},
			[3]int{jmp, 4, 12}, // to the SPorts group
			[3]int{deq, 8, 40}, [3]int{0, 0, 1},
			[3]int{seq, 8, 12}, [3]int{0, 0, 2},
			[3]int{jmp, 4, 12}, // to the DPorts group
			[3]int{seq, 8, 20}, [3]int{0, 0, 3},
			[3]int{deq, 8, 12}, [3]int{0, 0, 4},
		)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := portBytecode(&tt.f)
			if !bytes.Equal(got, tt.want) {
				t.Errorf("portBytecode:\n got % x\nwant % x", got, tt.want)
			}
			if got != nil {
				if err := bcAudit(got); err != nil {
					t.Errorf("the kernel would refuse it: %v", err)
				}
			}
		})
	}

	many := make([]uint16, 3000)
	for i := range many {
		many[i] = uint16(i + 1)
	}
	if bc := portBytecode(&Filter{Ports: many}); bc != nil {
		t.Errorf("%d ports: a %d-byte program, longer than an attribute holds", len(many), len(bc))
	}
	if bc := portBytecode(&Filter{SPorts: many}); bc == nil || bcAudit(bc) != nil {
		t.Errorf("%d sports: no valid program", len(many))
	}
}

// TestPortBytecodeMatches runs the programs the way the kernel does and
// checks that each accepts exactly the ports Filter.portsMatch accepts.
func TestPortBytecodeMatches(t *testing.T) {
	filters := []Filter{
		{Ports: []uint16{1}},
		{Ports: []uint16{1, 2}},
		{SPorts: []uint16{1, 3}},
		{DPorts: []uint16{2}},
		{Ports: []uint16{1}, DPorts: []uint16{2, 3}},
		{Ports: []uint16{3}, SPorts: []uint16{1, 2}},
		{SPorts: []uint16{2}, DPorts: []uint16{1}},
		{Ports: []uint16{0, 2}, SPorts: []uint16{1, 2, 3}, DPorts: []uint16{0, 3}},
	}
	for _, f := range filters {
		bc := portBytecode(&f)
		if err := bcAudit(bc); err != nil {
			t.Errorf("%+v: the kernel would refuse the program: %v", f, err)
			continue
		}
		for sport := range uint16(5) {
			for dport := range uint16(5) {
				if got, want := bcRun(bc, sport, dport), f.portsMatch(sport, dport); got != want {
					t.Errorf("%+v: sport %d dport %d: kernel %v, filter %v", f, sport, dport, got, want)
				}
			}
		}
	}
}

// bcAudit is the kernel's inet_diag_bc_audit for the ops portBytecode
// uses: every op reached along the yes chain, each jump a multiple of 4,
// at least the op's length, landing on an op or 4 bytes past the end.
func bcAudit(bc []byte) error {
	if len(bc) < 4 {
		return errors.New("shorter than one op")
	}
	// validCC is the kernel's valid_cc: is the op cc bytes before the
	// end reached along the yes chain?
	validCC := func(cc int) bool {
		for rest := len(bc); rest >= 0; {
			if cc > rest {
				return false
			}
			if cc == rest {
				return true
			}
			yes := int(bc[len(bc)-rest+1])
			if yes < 4 || yes%4 != 0 {
				return false
			}
			rest -= yes
		}
		return false
	}
	for rest := len(bc); rest > 0; {
		op := bc[len(bc)-rest:]
		code, yes, no := op[0], int(op[1]), int(binary.NativeEndian.Uint16(op[2:]))
		minLen := 4
		switch code {
		case inetDiagBCSEq, inetDiagBCDEq:
			minLen += 4
			if rest < minLen {
				return fmt.Errorf("port comparison cut short at %d", len(bc)-rest)
			}
		case inetDiagBCJmp:
		default:
			return fmt.Errorf("op code %d at %d", code, len(bc)-rest)
		}
		if no < minLen || no > rest+4 || no%4 != 0 {
			return fmt.Errorf("no %d at %d", no, len(bc)-rest)
		}
		if no < rest && !validCC(rest-no) {
			return fmt.Errorf("no %d at %d lands inside an op", no, len(bc)-rest)
		}
		if yes < minLen || yes > rest+4 || yes%4 != 0 {
			return fmt.Errorf("yes %d at %d", yes, len(bc)-rest)
		}
		rest -= yes
	}
	return nil
}

// bcRun is the kernel's inet_diag_bc_run on a socket's ports.
func bcRun(bc []byte, sport, dport uint16) bool {
	rest := len(bc)
	for rest > 0 {
		op := bc[len(bc)-rest:]
		yes := true
		switch op[0] {
		case inetDiagBCJmp:
			yes = false
		case inetDiagBCSEq:
			yes = sport == binary.NativeEndian.Uint16(op[6:])
		case inetDiagBCDEq:
			yes = dport == binary.NativeEndian.Uint16(op[6:])
		}
		if yes {
			rest -= int(op[1])
		} else {
			rest -= int(binary.NativeEndian.Uint16(op[2:]))
		}
	}
	return rest == 0
}

func TestParseInetDiag(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		name      string
		msg       netlink.Message
		want      Socket
		listeners []netip.AddrPort
	}{{
		name: "ipv4 close-wait with bounded age",
		msg: buildDiagMsg(diagMsg{
			family: unix.AF_INET, state: StateCloseWait,
			local: ap("127.0.0.1:8080"), remote: ap("127.0.0.1:51552"),
			cookie: 0x1122334455667788, rqueue: 1, wqueue: 3, uid: 1000, inode: 4242,
		}, diagAttrs(t, tcpInfoBytes(t, 5000, 1200, 0))),
		want: Socket{
			Family: FamilyIPv4, State: StateCloseWait,
			Local: ap("127.0.0.1:8080"), Remote: ap("127.0.0.1:51552"),
			RecvQ: 1, SendQ: 3, Inode: 4242, Cookie: 0x1122334455667788, UID: 1000,
			Age: 1200 * time.Millisecond, AgeKnown: true, AgeMax: 5 * time.Second,
			Idle: 1200 * time.Millisecond, IdleKnown: true,
		},
	}, {
		name: "dual-stack socket keeps its mapped address, exact age",
		msg: buildDiagMsg(diagMsg{
			family: unix.AF_INET6, state: StateCloseWait, timer: 2, expires: 7000,
			local: ap("[::ffff:127.0.0.1]:8080"), remote: ap("[::ffff:127.0.0.1]:40000"),
			inode: 7,
		}, diagAttrs(t, tcpInfoBytes(t, 3000, 3000, 0))),
		want: Socket{
			Family: FamilyIPv6, State: StateCloseWait,
			Local: ap("[::ffff:127.0.0.1]:8080"), Remote: ap("[::ffff:127.0.0.1]:40000"),
			Inode: 7, Timer: "keepalive", TimerLeft: 7 * time.Second,
			Age: 3 * time.Second, AgeKnown: true, AgeExact: true, AgeMax: 3 * time.Second,
			Idle: 3 * time.Second, IdleKnown: true,
		},
	}, {
		name: "listener has no remote and is reported",
		msg: buildDiagMsg(diagMsg{
			family: unix.AF_INET6, state: StateListen,
			local: ap("[::]:443"), remote: ap("[::]:0"), rqueue: 2, wqueue: 128, inode: 9,
		}, diagAttrs(t, tcpInfoBytes(t, 0, 0, 0))),
		want: Socket{
			Family: FamilyIPv6, State: StateListen, Local: ap("[::]:443"),
			RecvQ: 2, SendQ: 128, Inode: 9,
		},
		listeners: []netip.AddrPort{ap("[::]:443")},
	}, {
		name: "established gets no age from tcp_info, only an idle time",
		msg: buildDiagMsg(diagMsg{
			family: unix.AF_INET, state: StateEstablished, timer: 1, expires: 200,
			local: ap("10.0.0.1:22"), remote: ap("10.0.0.2:50000"), inode: 11,
		}, diagAttrs(t, tcpInfoBytes(t, 100, 100, 0))),
		want: Socket{
			Family: FamilyIPv4, State: StateEstablished,
			Local: ap("10.0.0.1:22"), Remote: ap("10.0.0.2:50000"), Inode: 11,
			Timer: "on", TimerLeft: 200 * time.Millisecond,
			Idle: 100 * time.Millisecond, IdleKnown: true,
		},
	}, {
		name: "accept queue socket without attributes",
		msg: buildDiagMsg(diagMsg{
			family: unix.AF_INET, state: StateCloseWait,
			local: ap("127.0.0.1:8080"), remote: ap("127.0.0.1:40001"), rqueue: 1,
		}, nil),
		want: Socket{
			Family: FamilyIPv4, State: StateCloseWait,
			Local: ap("127.0.0.1:8080"), Remote: ap("127.0.0.1:40001"), RecvQ: 1,
		},
	}, {
		name: "short tcp_info from an old kernel",
		msg: buildDiagMsg(diagMsg{
			family: unix.AF_INET, state: StateCloseWait, timer: 9,
			local: ap("127.0.0.1:8080"), remote: ap("127.0.0.1:40002"), inode: 12,
		}, diagAttrs(t, tcpInfoBytes(t, 5000, 1000, tcpInfoMinForAgesLen-4))),
		want: Socket{
			Family: FamilyIPv4, State: StateCloseWait,
			Local: ap("127.0.0.1:8080"), Remote: ap("127.0.0.1:40002"), Inode: 12,
			Timer: "unknown",
		},
	}, {
		name: "later ack than data is not an upper bound",
		msg: buildDiagMsg(diagMsg{
			family: unix.AF_INET, state: StateCloseWait,
			local: ap("127.0.0.1:8080"), remote: ap("127.0.0.1:40003"), inode: 13,
		}, diagAttrs(t, tcpInfoBytes(t, 1000, 5000, tcpInfoMinForAgesLen))),
		want: Socket{
			Family: FamilyIPv4, State: StateCloseWait,
			Local: ap("127.0.0.1:8080"), Remote: ap("127.0.0.1:40003"), Inode: 13,
			Age: 5 * time.Second, AgeKnown: true,
			Idle: time.Second, IdleKnown: true,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			socks, listeners, err := parseInetDiag([]netlink.Message{tt.msg})
			if err != nil {
				t.Fatalf("parseInetDiag: %v", err)
			}
			if len(socks) != 1 {
				t.Fatalf("got %d sockets, want 1", len(socks))
			}
			if !equalSocket(socks[0], tt.want) {
				t.Errorf("got  %+v\nwant %+v", socks[0], tt.want)
			}
			if len(listeners) != len(tt.listeners) || (len(listeners) > 0 && listeners[0] != tt.listeners[0]) {
				t.Errorf("listeners = %v, want %v", listeners, tt.listeners)
			}
		})
	}
}

// equalSocket compares the fields a source fills; owners and causes come later.
func equalSocket(a, b Socket) bool {
	a.Owners, a.Causes, b.Owners, b.Causes = nil, nil, nil, nil
	return reflect.DeepEqual(a, b)
}

func TestParseInetDiagMalformed(t *testing.T) {
	ap := netip.MustParseAddrPort
	good := buildDiagMsg(diagMsg{
		family: unix.AF_INET, state: StateCloseWait,
		local: ap("127.0.0.1:8080"), remote: ap("127.0.0.1:51552"), inode: 1,
	}, diagAttrs(t, tcpInfoBytes(t, 10, 10, 0)))
	with := func(f func(m *netlink.Message)) netlink.Message {
		m := good
		m.Data = bytes.Clone(good.Data)
		f(&m)
		return m
	}
	tests := []struct {
		name string
		msg  netlink.Message
		is   error
	}{
		{"empty", with(func(m *netlink.Message) { m.Data = nil }), nil},
		{"short message", with(func(m *netlink.Message) { m.Data = m.Data[:sizeofInetDiagMsg-1] }), nil},
		{"unknown family", with(func(m *netlink.Message) { m.Data[0] = 7 }), nil},
		{"attribute longer than message", with(func(m *netlink.Message) {
			binary.NativeEndian.PutUint16(m.Data[sizeofInetDiagMsg:], 0xfff0)
		}), nil},
		{"attribute header cut", with(func(m *netlink.Message) {
			m.Data = append(m.Data[:sizeofInetDiagMsg], 8, 0)
		}), nil},
		{"attribute length below header", with(func(m *netlink.Message) {
			m.Data = append(m.Data[:sizeofInetDiagMsg], 2, 0, 2, 0, 1, 2)
		}), nil},
		{"wrong message type", with(func(m *netlink.Message) { m.Header.Type = 16 }), nil},
		{"dump interrupted", with(func(m *netlink.Message) { m.Header.Flags |= netlink.DumpInterrupted }), errDumpInterrupted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			socks, _, err := parseInetDiag([]netlink.Message{good, tt.msg})
			if err == nil {
				t.Fatalf("no error; sockets %+v", socks)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
}

func FuzzParseInetDiag(f *testing.F) {
	ap := netip.MustParseAddrPort
	seeds := []netlink.Message{
		buildDiagMsg(diagMsg{family: unix.AF_INET, state: StateCloseWait, local: ap("127.0.0.1:80"), remote: ap("127.0.0.1:5000"), rqueue: 1, inode: 3, cookie: 99},
			diagAttrs(f, tcpInfoBytes(f, 900, 300, 0))),
		buildDiagMsg(diagMsg{family: unix.AF_INET6, state: StateListen, local: ap("[::]:80")}, diagAttrs(f, nil)),
		buildDiagMsg(diagMsg{family: unix.AF_INET6, state: StateCloseWait, timer: 2, expires: 10, local: ap("[::ffff:10.0.0.1]:80"), remote: ap("[::ffff:10.0.0.2]:1")},
			diagAttrs(f, tcpInfoBytes(f, 5, 5, tcpInfoMinForAgesLen))),
		buildDiagMsg(diagMsg{family: unix.AF_INET, state: StateTimeWait, timer: 3}, nil),
	}
	for _, m := range seeds {
		f.Add(m.Data, uint16(m.Header.Flags))
	}
	f.Add([]byte{}, uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, flags uint16) {
		msg := netlink.Message{Header: netlink.Header{Type: sockDiagByFamily, Flags: netlink.HeaderFlags(flags)}, Data: data}
		socks, listeners, err := parseInetDiag([]netlink.Message{msg})
		if err != nil {
			if socks != nil || listeners != nil {
				t.Fatalf("error %v with results", err)
			}
			return
		}
		if len(socks) == 0 && data[1] >= 32 {
			return // a state no StateSet holds: dropped, as a dump would
		}
		if len(socks) != 1 || len(listeners) > 1 {
			t.Fatalf("one message gave %d sockets, %d listeners", len(socks), len(listeners))
		}
		s := socks[0]
		if s.Family != FamilyIPv4 && s.Family != FamilyIPv6 {
			t.Fatalf("family %v", s.Family)
		}
		if !s.Local.IsValid() || (s.Family == FamilyIPv4) != s.Local.Addr().Is4() {
			t.Fatalf("local %v for family %v", s.Local, s.Family)
		}
		if (s.State == StateListen) != (len(listeners) == 1) || (s.State == StateListen && s.Remote.IsValid()) {
			t.Fatalf("listener %v: remote %v, listeners %v", s.State, s.Remote, listeners)
		}
		if s.AgeKnown && (s.State != StateCloseWait || s.Age < 0 || (s.AgeMax != 0 && s.AgeMax < s.Age)) {
			t.Fatalf("age %v max %v for %v", s.Age, s.AgeMax, s.State)
		}
		if !s.AgeKnown && (s.Age != 0 || s.AgeExact || s.AgeMax != 0) {
			t.Fatalf("unknown age with values %+v", s)
		}
		if s.AgeExact && s.Age != s.AgeMax {
			t.Fatalf("exact age %v != max %v", s.Age, s.AgeMax)
		}
		if s.Timer == "" && s.TimerLeft != 0 {
			t.Fatalf("timer left %v without a timer", s.TimerLeft)
		}
	})
}

// TestDiagAttr walks past an attribute whose length is not a multiple of
// four (its padding) and finds the one asked for; the last attribute may
// lack its padding.
func TestDiagAttr(t *testing.T) {
	attr := func(typ uint16, payload ...byte) []byte {
		b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(payload)))
		b = binary.NativeEndian.AppendUint16(b, typ)
		b = append(b, payload...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	attrs := slices.Concat(attr(1, 9), attr(unix.NLA_F_NESTED|5, 1, 2, 3, 4), attr(inetDiagInfo, 7, 8, 9))
	got, err := diagAttr(attrs, inetDiagInfo)
	if err != nil || !bytes.Equal(got, []byte{7, 8, 9}) {
		t.Fatalf("diagAttr = %v, %v; want [7 8 9]", got, err)
	}
	if got, err := diagAttr(attrs[:len(attrs)-1], inetDiagInfo); err != nil || !bytes.Equal(got, []byte{7, 8, 9}) {
		t.Errorf("without the last padding byte: %v, %v", got, err)
	}
	if got, err := diagAttr(attrs, 6); err != nil || got != nil {
		t.Errorf("absent type: %v, %v; want nil, nil", got, err)
	}
	if got, err := diagAttr(attrs, 5); err != nil || !bytes.Equal(got, []byte{1, 2, 3, 4}) {
		t.Errorf("type with NLA_F_NESTED set: %v, %v", got, err)
	}
}

// parseInetDiag decodes msgs as a dump does (diagDump.take), keeping the
// sockets of every state a StateSet can hold, and returns them with the
// listeners noted.
func parseInetDiag(msgs []netlink.Message) ([]Socket, []netip.AddrPort, error) {
	var d diagDump
	for i, m := range msgs {
		if err := d.take(m, ^StateSet(0), nil); err != nil {
			return nil, nil, fmt.Errorf("message %d: %w", i, err)
		}
	}
	socks := []Socket{}
	for _, c := range d.chunks {
		socks = append(socks, c...)
	}
	var ls []netip.AddrPort
	for _, l := range d.listeners {
		ls = append(ls, l.local)
	}
	return socks, ls, nil
}
