package collector

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// countStates adds to counts the TCP sockets in states that pass the
// address filters (families, ports), by state, over sock_diag. It asks for
// no tcp_info and reads only the fixed header of each message, so it costs
// the kernel's walk of the tables and little else: the cheap way for an
// exporter to count the states it does not list.
func countStates(ctx context.Context, states StateSet, f Filter, counts StateCounts) error {
	c, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, &netlink.Config{MessageBufferSize: 64 << 10})
	if err != nil {
		if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT) {
			err = fmt.Errorf("sock_diag is %w by this kernel: %w", ErrUnsupported, err)
		}
		return fmt.Errorf("opening sock_diag: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	for _, af := range []uint8{unix.AF_INET, unix.AF_INET6} {
		// Dual-stack sockets are AF_INET6, as Socket.Family has them.
		if f.IPv4 != f.IPv6 && (af == unix.AF_INET) != f.IPv4 {
			continue
		}
		for attempt := 1; ; attempt++ {
			part := StateCounts{}
			err := countFamily(c, af, states, &f, part)
			if err == nil {
				for st, n := range part {
					counts[st] += n
				}
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !errors.Is(err, errDumpInterrupted) || attempt == dumpAttempts {
				return fmt.Errorf("counting sockets: %w", err)
			}
		}
	}
	return nil
}

// countFamily runs one dump of one family. It reads the reply to its end
// even after an error, so the connection is clean for a retry.
func countFamily(c *netlink.Conn, af uint8, states StateSet, f *Filter, counts StateCounts) error {
	req := make([]byte, sizeofInetDiagReqV2)
	req[0] = af
	req[1] = unix.IPPROTO_TCP
	// req[2], idiag_ext, stays 0: no tcp_info, no other attribute.
	binary.NativeEndian.PutUint32(req[4:], uint32(states))
	sent, err := c.Send(netlink.Message{
		Header: netlink.Header{Type: sockDiagByFamily, Flags: netlink.Request | netlink.Dump},
		Data:   req,
	})
	if err != nil {
		return err
	}
	var failed error
	for m, err := range c.ReceiveIter() {
		if err != nil {
			return err
		}
		if failed != nil {
			continue
		}
		switch {
		case m.Header.Flags&netlink.DumpInterrupted != 0:
			failed = errDumpInterrupted
		case m.Header.Sequence != sent.Header.Sequence:
			failed = fmt.Errorf("reply sequence %d, want %d", m.Header.Sequence, sent.Header.Sequence)
		case m.Header.Type != sockDiagByFamily:
			failed = fmt.Errorf("unexpected message type %d", m.Header.Type)
		case len(m.Data) < sizeofInetDiagMsg:
			failed = fmt.Errorf("short inet_diag_msg: %d bytes, want %d", len(m.Data), sizeofInetDiagMsg)
		default:
			b := m.Data
			st := State(b[1])
			if !states.Has(st) {
				continue
			}
			// Ports are in network byte order (struct inet_diag_sockid).
			sport, dport := binary.BigEndian.Uint16(b[4:6]), binary.BigEndian.Uint16(b[6:8])
			if st == StateListen {
				dport = 0 // as the decoder leaves Remote empty for listeners
			}
			if portsMatch(f, sport, dport) {
				counts[st]++
			}
		}
	}
	return failed
}

// portsMatch is the port part of Filter.matchSocket, on raw ports.
func portsMatch(f *Filter, sport, dport uint16) bool {
	if len(f.Ports) > 0 && !slices.Contains(f.Ports, sport) && !slices.Contains(f.Ports, dport) {
		return false
	}
	if len(f.SPorts) > 0 && !slices.Contains(f.SPorts, sport) {
		return false
	}
	if len(f.DPorts) > 0 && !slices.Contains(f.DPorts, dport) {
		return false
	}
	return true
}
