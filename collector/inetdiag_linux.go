package collector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

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
	tcpInfoLastDataRecv  = 52 // offsetof(struct tcp_info, tcpi_last_data_recv)
	tcpInfoLastAckRecv   = 56 // offsetof(struct tcp_info, tcpi_last_ack_recv)
	tcpInfoMinForAgesLen = tcpInfoLastAckRecv + 4
)

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
// TCP sockets of one family in the given states, asking for tcp_info.
func inetDiagRequest(family uint8, states StateSet) []byte {
	b := make([]byte, sizeofInetDiagReqV2)
	b[0] = family
	b[1] = unix.IPPROTO_TCP
	b[2] = 1 << (inetDiagInfo - 1) // idiag_ext
	binary.NativeEndian.PutUint32(b[4:], uint32(states))
	// The socket id stays zero: no port, address or cookie filter.
	return b
}

// parseInetDiag decodes the messages of a sock_diag dump. It returns every
// socket, and the address of each listener among them for markInbound.
// Malformed input gives an error, never a panic.
func parseInetDiag(msgs []netlink.Message) ([]Socket, []netip.AddrPort, error) {
	socks := make([]Socket, 0, len(msgs))
	var listeners []netip.AddrPort
	for i, m := range msgs {
		s, err := parseInetDiagMsg(m)
		if err != nil {
			return nil, nil, fmt.Errorf("message %d: %w", i, err)
		}
		if s.State == StateListen {
			listeners = append(listeners, s.Local)
		}
		socks = append(socks, s)
	}
	return socks, listeners, nil
}

// parseInetDiagMsg decodes one inet_diag_msg and its attributes.
func parseInetDiagMsg(m netlink.Message) (Socket, error) {
	var s Socket
	if m.Header.Flags&netlink.DumpInterrupted != 0 {
		return s, errDumpInterrupted
	}
	if m.Header.Type != sockDiagByFamily {
		return s, fmt.Errorf("unexpected message type %d", m.Header.Type)
	}
	b := m.Data
	if len(b) < sizeofInetDiagMsg {
		return s, fmt.Errorf("short inet_diag_msg: %d bytes, want %d", len(b), sizeofInetDiagMsg)
	}
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
	if len(attrs) == 0 {
		return s, nil
	}
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return s, fmt.Errorf("attributes: %w", err)
	}
	for ad.Next() {
		if ad.Type() == inetDiagInfo {
			ad.Do(func(info []byte) error {
				setAges(&s, info)
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return s, fmt.Errorf("attributes: %w", err)
	}
	return s, nil
}

// setAges fills the age fields of a CLOSE_WAIT socket from its tcp_info.
// The FIN's arrival stamps last_ack_recv, but any later ACK moves it too, so
// it is a lower bound. A bare FIN does not move last_data_recv, and nothing
// after the FIN can, so it is an upper bound. In other states neither value
// bounds the time spent in the state, so the age stays unknown.
func setAges(s *Socket, info []byte) {
	if s.State != StateCloseWait || len(info) < tcpInfoMinForAgesLen {
		return // older kernels send a shorter tcp_info
	}
	lastAck := time.Duration(binary.NativeEndian.Uint32(info[tcpInfoLastAckRecv:])) * time.Millisecond
	lastData := time.Duration(binary.NativeEndian.Uint32(info[tcpInfoLastDataRecv:])) * time.Millisecond
	s.Age, s.AgeKnown = lastAck, true
	switch {
	case lastData == lastAck:
		s.AgeExact, s.AgeMax = true, lastData
	case lastData > lastAck:
		s.AgeMax = lastData
	}
}
