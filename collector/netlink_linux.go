package collector

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// dumpAttempts bounds the tries of a dump the kernel marks interrupted.
const dumpAttempts = 4

// netlinkSource dumps TCP sockets over NETLINK_SOCK_DIAG, with the state
// filter applied in the kernel, and leaves owners to resolveOwners.
type netlinkSource struct{}

func (netlinkSource) name() string { return SourceNetlink }

func (netlinkSource) dump(ctx context.Context, q query) (dumpResult, error) {
	// Listeners come along so markInbound can tell our own outbound
	// connections apart; they are dropped unless asked for.
	states := q.states.With(StateListen)
	// Each dump walks the whole TCP hash, whatever its family, so the two
	// run side by side, each on its own netlink socket.
	fams := []struct {
		af   uint8
		name string
	}{{unix.AF_INET, "AF_INET"}, {unix.AF_INET6, "AF_INET6"}}
	results := make([]diagDump, len(fams))
	errs := make([]error, len(fams))
	var wg sync.WaitGroup
	for i, fam := range fams {
		wg.Go(func() {
			if err := results[i].run(ctx, fam.af, states, q.states); err != nil {
				errs[i] = fmt.Errorf("dumping %s: %w", fam.name, err)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return dumpResult{}, err
	}
	if err := errors.Join(errs...); err != nil {
		return dumpResult{}, err
	}

	n := 0
	for _, r := range results {
		n += r.n
	}
	socks := make([]Socket, 0, n)
	var listeners []netip.AddrPort
	for _, r := range results {
		for _, c := range r.chunks {
			socks = append(socks, c...)
		}
		listeners = append(listeners, r.listeners...)
	}
	netns := netnsInode(q.procRoot)
	for i := range socks {
		socks[i].NetNS = netns
	}
	markInbound(socks, listeners)
	return dumpResult{sockets: socks}, nil
}

// diagDump is what one family's dump decoded. Sockets go into fixed-size
// chunks, copied once into the result, rather than one growing slice that
// would copy these large structs again and again.
type diagDump struct {
	chunks    [][]Socket
	n         int
	listeners []netip.AddrPort
}

const diagChunkSize = 512

func (d *diagDump) add(s Socket) {
	if len(d.chunks) == 0 || len(d.chunks[len(d.chunks)-1]) == diagChunkSize {
		d.chunks = append(d.chunks, make([]Socket, 0, diagChunkSize))
	}
	last := &d.chunks[len(d.chunks)-1]
	*last = append(*last, s)
	d.n++
}

func (d *diagDump) reset() { *d = diagDump{} }

// run dumps one family on its own netlink socket, again when the kernel
// marks the dump interrupted.
func (d *diagDump) run(ctx context.Context, af uint8, states, want StateSet) error {
	c, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, &netlink.Config{
		// A fixed, large receive buffer lets the kernel fill datagrams up
		// to its 32 KiB cap and spares a peek per datagram.
		MessageBufferSize: 64 << 10,
	})
	if err != nil {
		if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT) {
			err = fmt.Errorf("sock_diag is %w by this kernel: %w", ErrUnsupported, err)
		}
		return fmt.Errorf("opening sock_diag: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	for attempt := 1; ; attempt++ {
		d.reset()
		err := d.once(c, af, states, want)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, errDumpInterrupted) || attempt == dumpAttempts {
			if attempt > 1 {
				err = fmt.Errorf("%w (%d attempts)", err, attempt)
			}
			return err
		}
	}
}

// once runs one dump. It streams the reply rather than collecting it, so
// memory stays at one datagram plus the decoded sockets. A dump that fails
// to decode is still read to its end, so the socket is clean for a retry.
func (d *diagDump) once(c *netlink.Conn, af uint8, states, want StateSet) error {
	req, err := c.Send(netlink.Message{
		Header: netlink.Header{
			Type:  sockDiagByFamily,
			Flags: netlink.Request | netlink.Dump,
		},
		Data: inetDiagRequest(af, states),
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
		if m.Header.Sequence != req.Header.Sequence {
			failed = fmt.Errorf("reply sequence %d, want %d", m.Header.Sequence, req.Header.Sequence)
			continue
		}
		s, err := parseInetDiagMsg(m)
		if err != nil {
			failed = err
			continue
		}
		if s.State == StateListen {
			d.listeners = append(d.listeners, s.Local)
		}
		if want.Has(s.State) {
			d.add(s)
		}
	}
	return failed
}

// netnsInode returns the inode of this process's network namespace, which
// is the one sock_diag and /proc/net report on; 0 when it cannot be read.
func netnsInode(procRoot string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(procRoot+"/self/ns/net", &st); err != nil {
		return 0
	}
	return st.Ino
}
