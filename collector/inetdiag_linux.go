package collector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/closewait/closewait/ebpf"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Kernel ABI of sock_diag for inet sockets (include/uapi/linux/inet_diag.h);
// golang.org/x/sys/unix does not carry these structs.
const (
	sockDiagByFamily     = unix.SOCK_DIAG_BY_FAMILY
	sizeofInetDiagReqV2  = 56 // struct inet_diag_req_v2
	sizeofInetDiagMsg    = 72 // struct inet_diag_msg
	inetDiagInfo         = 2  // INET_DIAG_INFO: struct tcp_info
	tcpInfoRetransmits   = 2  // offsetof(struct tcp_info, tcpi_retransmits)
	tcpInfoProbes        = 3  // offsetof(struct tcp_info, tcpi_probes)
	tcpInfoLastDataRecv  = 52 // offsetof(struct tcp_info, tcpi_last_data_recv)
	tcpInfoLastAckRecv   = 56 // offsetof(struct tcp_info, tcpi_last_ack_recv)
	tcpInfoMinForAgesLen = tcpInfoLastAckRecv + 4

	// BPF socket storage with each socket (Linux 5.2+): the request's
	// nested INET_DIAG_REQ_SK_BPF_STORAGES holds map fds; the reply's
	// INET_DIAG_SK_BPF_STORAGES holds, per map, its id and the value.
	inetDiagReqSKBPFStorages = 2  // INET_DIAG_REQ_SK_BPF_STORAGES
	skDiagBPFStorageReqMapFD = 1  // SK_DIAG_BPF_STORAGE_REQ_MAP_FD
	inetDiagSKBPFStorages    = 20 // INET_DIAG_SK_BPF_STORAGES
	skDiagBPFStorage         = 1  // SK_DIAG_BPF_STORAGE
	skDiagBPFStorageMapID    = 2  // SK_DIAG_BPF_STORAGE_MAP_ID
	skDiagBPFStorageMapValue = 3  // SK_DIAG_BPF_STORAGE_MAP_VALUE
)

// diagStamps names the installed tracer's stamp map in a dump: sock_diag
// then returns each stamped socket's entry time into CLOSE_WAIT.
type diagStamps struct {
	fd int
	id uint32
}

// errDumpInterrupted marks a dump the kernel flagged NLM_F_DUMP_INTR: the
// tables changed under it, so it may miss or repeat sockets.
var errDumpInterrupted = errors.New("dump interrupted")

// timerNames maps idiag_timer to the names ss prints.
var timerNames = [...]string{1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}

func timerName(t uint8) string {
	switch {
	case t == 0:
		return ""
	case int(t) < len(timerNames):
		return timerNames[t]
	}
	return "unknown"
}

// inetDiagRequest builds the body of a SOCK_DIAG_BY_FAMILY dump request for
// TCP sockets of one family in the given states, asking for tcp_info when
// info is set. A non-nil bc (from portBytecode) goes along as the
// INET_DIAG_REQ_BYTECODE attribute: the kernel then sends only the sockets
// it accepts. Non-nil stamps asks for the tracer's stamps as well.
func inetDiagRequest(family uint8, states StateSet, info bool, bc []byte, stamps *diagStamps) []byte {
	n := sizeofInetDiagReqV2
	if bc != nil {
		n += nlaHdrLen + len(bc) // bytecode is whole ops: no padding
	}
	if stamps != nil {
		n += 2*nlaHdrLen + 4
	}
	b := make([]byte, n)
	b[0] = family
	b[1] = unix.IPPROTO_TCP
	if info {
		b[2] = 1 << (inetDiagInfo - 1) // idiag_ext
	}
	binary.NativeEndian.PutUint32(b[4:], uint32(states))
	// The socket id stays zero: no address or cookie filter.
	if bc != nil {
		a := b[sizeofInetDiagReqV2:]
		binary.NativeEndian.PutUint16(a[0:], uint16(nlaHdrLen+len(bc)))
		binary.NativeEndian.PutUint16(a[2:], inetDiagReqBytecode)
		copy(a[nlaHdrLen:], bc)
	}
	if stamps != nil {
		a := b[n-2*nlaHdrLen-4:]
		binary.NativeEndian.PutUint16(a[0:], 2*nlaHdrLen+4)
		binary.NativeEndian.PutUint16(a[2:], inetDiagReqSKBPFStorages|unix.NLA_F_NESTED)
		binary.NativeEndian.PutUint16(a[4:], nlaHdrLen+4)
		binary.NativeEndian.PutUint16(a[6:], skDiagBPFStorageReqMapFD)
		binary.NativeEndian.PutUint32(a[8:], uint32(stamps.fd))
	}
	return b
}

// inet_diag bytecode (include/uapi/linux/inet_diag.h). A program is a run
// of struct inet_diag_bc_op { u8 code; u8 yes; u16 no; }, in host order.
// The kernel (inet_diag_bc_run) evaluates an op and moves on by yes bytes
// when it holds, by no bytes when not; a socket is sent when the program
// ends exactly at its end, and a jump 4 bytes past the end rejects it.
// A port comparison takes two ops, the port in the second one's no field.
const (
	nlaHdrLen           = 4
	inetDiagReqBytecode = 1 // INET_DIAG_REQ_BYTECODE
	inetDiagBCJmp       = 1 // INET_DIAG_BC_JMP: always takes no
	inetDiagBCSEq       = 11
	inetDiagBCDEq       = 12
	bcOpLen             = 4
	bcPortLen           = 2 * bcOpLen
	// bcMaxLen keeps the program's length, and every jump in it, within
	// the u16 of the attribute's length and of an op's no field.
	bcMaxLen = 0xffff - nlaHdrLen
)

// portBytecode compiles the port part of f (Ports, SPorts, DPorts) into
// inet_diag bytecode that accepts what Filter.matchSocket accepts on
// ports: the groups that are set are ANDed, the ports of a group ORed,
// and Ports matches the local or the remote port. It returns nil when f
// has no port filter, or too many ports for one program (the kernel then
// sends every socket, and the userspace filter alone decides).
//
// The layout is the one ss builds (iproute2 ssfilter_bytecode): in a group,
// each comparison but the last is followed by a JMP to the group's end, and
// a failed comparison skips that JMP to the next one. So a match jumps to
// the next group (or the end: accept), and the last comparison's failure
// jumps 4 bytes past the end of the whole program: reject. The kernel's
// audit (inet_diag_bc_audit) walks the yes chain, which here visits every
// op, and checks that each jump lands on one or 4 bytes past the end.
func portBytecode(f *Filter) []byte {
	type cmp struct {
		code uint8
		port uint16
	}
	var groups [][]cmp
	if len(f.Ports) > 0 {
		g := make([]cmp, 0, 2*len(f.Ports))
		for _, p := range f.Ports {
			g = append(g, cmp{inetDiagBCSEq, p}, cmp{inetDiagBCDEq, p})
		}
		groups = append(groups, g)
	}
	for _, set := range []struct {
		code  uint8
		ports []uint16
	}{{inetDiagBCSEq, f.SPorts}, {inetDiagBCDEq, f.DPorts}} {
		if len(set.ports) > 0 {
			g := make([]cmp, 0, len(set.ports))
			for _, p := range set.ports {
				g = append(g, cmp{set.code, p})
			}
			groups = append(groups, g)
		}
	}
	if len(groups) == 0 {
		return nil
	}
	groupLen := func(g []cmp) int { return len(g)*bcPortLen + (len(g)-1)*bcOpLen }
	total := 0
	for _, g := range groups {
		total += groupLen(g)
	}
	if total > bcMaxLen {
		return nil
	}
	b := make([]byte, 0, total)
	op := func(code, yes uint8, no int) {
		b = append(b, code, yes)
		b = binary.NativeEndian.AppendUint16(b, uint16(no))
	}
	for _, g := range groups {
		end := len(b) + groupLen(g) // where a match goes on
		for i, c := range g {
			if i == len(g)-1 {
				// No match in the group: 4 bytes past the program's end.
				op(c.code, bcPortLen, total+bcOpLen-len(b))
				op(0, 0, int(c.port))
				break
			}
			op(c.code, bcPortLen, bcPortLen+bcOpLen) // a miss skips the JMP
			op(0, 0, int(c.port))
			op(inetDiagBCJmp, bcOpLen, end-len(b))
		}
	}
	return b
}

// checkDiagMsg checks what any reader of a dump must before it reads the
// fixed inet_diag_msg at the start of m.Data.
func checkDiagMsg(m netlink.Message) error {
	switch {
	case m.Header.Flags&netlink.DumpInterrupted != 0:
		return errDumpInterrupted
	case m.Header.Type != sockDiagByFamily:
		return fmt.Errorf("unexpected message type %d", m.Header.Type)
	case len(m.Data) < sizeofInetDiagMsg:
		return fmt.Errorf("short inet_diag_msg: %d bytes, want %d", len(m.Data), sizeofInetDiagMsg)
	}
	return nil
}

// parseInetDiagMsg decodes one inet_diag_msg and its attributes. With
// stamps, a CLOSE_WAIT socket's stamp makes its age exact.
func parseInetDiagMsg(m netlink.Message, stamps *diagStamps) (Socket, error) {
	var s Socket
	if err := checkDiagMsg(m); err != nil {
		return s, err
	}
	b := m.Data
	var local, remote netip.Addr
	switch b[0] {
	case unix.AF_INET:
		s.Family = FamilyIPv4
		local = netip.AddrFrom4([4]byte(b[8:12]))
		remote = netip.AddrFrom4([4]byte(b[24:28]))
	case unix.AF_INET6:
		// Dual-stack sockets keep their ::ffff:a.b.c.d form, as ss shows them.
		s.Family = FamilyIPv6
		local = netip.AddrFrom16([16]byte(b[8:24]))
		remote = netip.AddrFrom16([16]byte(b[24:40]))
	default:
		return s, fmt.Errorf("unknown address family %d", b[0])
	}
	s.State = State(b[1])
	s.Timer = timerName(b[2])
	// Ports are in network byte order, the rest of the struct in host order.
	s.Local = netip.AddrPortFrom(local, binary.BigEndian.Uint16(b[4:6]))
	if s.State != StateListen {
		s.Remote = netip.AddrPortFrom(remote, binary.BigEndian.Uint16(b[6:8]))
	}
	s.Cookie = uint64(binary.NativeEndian.Uint32(b[44:48])) | uint64(binary.NativeEndian.Uint32(b[48:52]))<<32
	if s.Timer != "" {
		s.TimerLeft = time.Duration(binary.NativeEndian.Uint32(b[52:56])) * time.Millisecond
	}
	s.RecvQ = binary.NativeEndian.Uint32(b[56:60])
	s.SendQ = binary.NativeEndian.Uint32(b[60:64])
	s.UID = binary.NativeEndian.Uint32(b[64:68])
	s.Inode = uint64(binary.NativeEndian.Uint32(b[68:72]))

	attrs := b[sizeofInetDiagMsg:]
	info, err := diagAttr(attrs, inetDiagInfo)
	if err != nil {
		return s, fmt.Errorf("attributes: %w", err)
	}
	setAges(&s, info)
	if stamps != nil && s.State == StateCloseWait {
		v, err := stampValue(attrs, stamps.id)
		if err != nil {
			return s, fmt.Errorf("attributes: %w", err)
		}
		if age, ok := ebpf.StampAge(v, ebpf.Monotonic()); ok {
			s.Age, s.AgeKnown, s.AgeExact, s.AgeMax = age, true, true, age
		}
	}
	return s, nil
}

// stampValue returns the value of the BPF socket storage of map id among
// a message's attributes, nil when there is none.
func stampValue(attrs []byte, id uint32) ([]byte, error) {
	stgs, err := diagAttr(attrs, inetDiagSKBPFStorages)
	if err != nil || stgs == nil {
		return nil, err
	}
	var value []byte
	err = eachAttr(stgs, func(typ uint16, stg []byte) error {
		if typ != skDiagBPFStorage || value != nil {
			return nil
		}
		mapID, err := diagAttr(stg, skDiagBPFStorageMapID)
		if err != nil || len(mapID) < 4 || binary.NativeEndian.Uint32(mapID) != id {
			return err
		}
		value, err = diagAttr(stg, skDiagBPFStorageMapValue)
		return err
	})
	return value, err
}

// diagAttr returns the payload of the attribute of type typ in attrs, a
// run of netlink attributes (struct nlattr, 4-byte aligned), or nil when
// there is none. A hand walk: the library's decoder allocates per message,
// which at 45k sockets was a third of a listing's garbage.
func diagAttr(attrs []byte, typ uint16) ([]byte, error) {
	var found []byte
	err := eachAttr(attrs, func(t uint16, payload []byte) error {
		if t == typ && found == nil {
			found = payload
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return found, nil
}

// eachAttr calls fn with the type (flags cleared) and payload of each
// attribute in attrs, checking every length.
func eachAttr(attrs []byte, fn func(typ uint16, payload []byte) error) error {
	for len(attrs) > 0 {
		if len(attrs) < 4 {
			return fmt.Errorf("%d trailing bytes", len(attrs))
		}
		n := int(binary.NativeEndian.Uint16(attrs[0:2]))
		t := binary.NativeEndian.Uint16(attrs[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if n < 4 || n > len(attrs) {
			return fmt.Errorf("attribute length %d of %d bytes left", n, len(attrs))
		}
		if err := fn(t, attrs[4:n:n]); err != nil {
			return err
		}
		next := (n + 3) &^ 3
		if next > len(attrs) {
			next = len(attrs)
		}
		attrs = attrs[next:]
	}
	return nil
}

// setAges fills the age fields of a CLOSE_WAIT socket from its tcp_info.
// The FIN's arrival stamps last_ack_recv, but any later ACK moves it too, so
// it is a lower bound. A bare FIN does not move last_data_recv, and nothing
// after the FIN can, so it is an upper bound. In other states neither value
// bounds the time spent in the state, so the age stays unknown.
// Every full socket gets its idle time, as keepalive counts it.
func setAges(s *Socket, info []byte) {
	if len(info) < tcpInfoMinForAgesLen {
		return // older kernels send a shorter tcp_info
	}
	lastAck := time.Duration(binary.NativeEndian.Uint32(info[tcpInfoLastAckRecv:])) * time.Millisecond
	lastData := time.Duration(binary.NativeEndian.Uint32(info[tcpInfoLastDataRecv:])) * time.Millisecond
	if s.State != StateListen {
		s.Idle, s.IdleKnown = min(lastAck, lastData), true
		s.Unanswered = max(info[tcpInfoRetransmits], info[tcpInfoProbes])
	}
	if s.State != StateCloseWait {
		return
	}
	ageBounds(s, lastAck, lastData) // shared with the ebpf source
}
