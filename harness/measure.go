package harness

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/closewait/closewait/collector"
)

// pollStates are the states a server socket can be in while the harness
// watches it. TIME_WAIT is left out: a server socket reaches it only after
// both FINs, and time-wait sockets can be many.
var pollStates = collector.StateSet(0).
	With(collector.StateEstablished).With(collector.StateCloseWait).
	With(collector.StateFinWait1).With(collector.StateFinWait2).
	With(collector.StateLastAck).With(collector.StateClosing)

// open reports whether a server socket in state st still holds the
// connection: it has not closed its side.
func open(st collector.State) bool {
	return st == collector.StateEstablished || st == collector.StateCloseWait
}

// tuple is a server socket's 4-tuple as the server sees it, with
// IPv4-mapped addresses unmapped so dual-stack listeners match.
type tuple struct{ local, remote netip.AddrPort }

func unmap(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }

func tupleOf(s *collector.Socket) tuple { return tuple{unmap(s.Local), unmap(s.Remote)} }

// tupleOfClient is the server-side tuple of a client connection: the
// server's local end is the client's remote end.
func tupleOfClient(c net.Conn) tuple {
	return tuple{
		unmap(c.RemoteAddr().(*net.TCPAddr).AddrPort()),
		unmap(c.LocalAddr().(*net.TCPAddr).AddrPort()),
	}
}

// tracked is one connection under measurement. Fields after mu in
// tracker are guarded by it.
type tracked struct {
	conn  *net.TCPConn // nil when the dial failed
	key   tuple
	err   error // dial error
	seen  bool  // the server socket was found at least once
	finAt time.Time
	// done: resolved one way or the other; left: the server socket left
	// ESTABLISHED and CLOSE_WAIT at leftAt.
	done, left   bool
	leftAt       time.Time
	closedFirst  bool             // the server closed before the client left
	last         collector.Socket // the server socket as last seen
	notEstablish bool             // never found before the deadline
}

// tracker finds the server sockets of a scenario's connections and
// watches them leave, with one dump per tick for all of them.
type tracker struct {
	collect  func(ctx context.Context) (*collector.Snapshot, error)
	tick     time.Duration
	deadline time.Duration

	mu    sync.Mutex
	conns []*tracked
	byKey map[tuple]*tracked
}

func newTracker(collect func(context.Context) (*collector.Snapshot, error), tick, deadline time.Duration, conns []*tracked) *tracker {
	t := &tracker{collect: collect, tick: tick, deadline: deadline, conns: conns, byKey: map[tuple]*tracked{}}
	for _, c := range conns {
		if c.err != nil {
			c.done = true
			continue
		}
		t.byKey[c.key] = c
	}
	return t
}

// fin records the moment the client left; call it just before the close,
// shutdown or abort, so the latency never comes out short.
func (t *tracker) fin(c *tracked, at time.Time) {
	t.mu.Lock()
	if c.finAt.IsZero() {
		c.finAt = at
	}
	t.mu.Unlock()
}

// serverClosed records that the server closed a connection before the
// client left: its socket never enters CLOSE_WAIT.
func (t *tracker) serverClosed(c *tracked) {
	t.mu.Lock()
	c.closedFirst = true
	t.mu.Unlock()
}

// waitSeen polls until every connection's server socket has been found,
// or timeout. Those never found are resolved as not established.
func (t *tracker) waitSeen(ctx context.Context, timeout time.Duration) error {
	end := time.Now().Add(timeout)
	for {
		missing := 0
		t.mu.Lock()
		for _, c := range t.conns {
			if !c.done && !c.seen {
				missing++
			}
		}
		t.mu.Unlock()
		if missing == 0 {
			return nil
		}
		if time.Now().After(end) {
			t.mu.Lock()
			for _, c := range t.conns {
				if !c.done && !c.seen {
					c.done, c.notEstablish = true, true
				}
			}
			t.mu.Unlock()
			return nil
		}
		snap, err := t.collect(ctx)
		if err != nil {
			return err
		}
		t.update(snap)
		if err := sleep(ctx, t.tick); err != nil {
			return err
		}
	}
}

// run polls until every connection is resolved: its server socket left
// in time, or it was still open when its deadline passed. Ticks without
// a pending FIN cost nothing.
func (t *tracker) run(ctx context.Context) error {
	var lastDump time.Duration
	for {
		pending, lastFIN := t.pending()
		if !pending {
			return nil
		}
		if !lastFIN.IsZero() {
			start := time.Now()
			snap, err := t.collect(ctx)
			if err != nil {
				return err
			}
			lastDump = time.Since(start)
			t.update(snap)
		}
		if err := sleep(ctx, t.interval(lastFIN, lastDump)); err != nil {
			return err
		}
	}
}

// interval is the pause before the next dump. Right after a FIN it is
// short, so a fast close is measured in fractions of a millisecond, and
// it grows to the tick as the FIN ages: the resolution stays about half
// the latency. It is never shorter than the last dump took, which keeps
// the harness under half a core on a host with many sockets.
func (t *tracker) interval(lastFIN time.Time, lastDump time.Duration) time.Duration {
	if lastFIN.IsZero() {
		return t.tick
	}
	d := time.Since(lastFIN) / 2
	return min(t.tick, max(d, t.tick/20, lastDump))
}

// pending reports whether any connection is unresolved, and the latest
// FIN among those (zero when none has left yet: no dump is needed).
func (t *tracker) pending() (pending bool, lastFIN time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.conns {
		if !c.done {
			pending = true
			if c.finAt.After(lastFIN) {
				lastFIN = c.finAt
			}
		}
	}
	return pending, lastFIN
}

// update applies one dump. The dump's start time is the observation
// time: a dump that started before a FIN says nothing about after it.
func (t *tracker) update(snap *collector.Snapshot) {
	at := snap.Time
	found := make(map[tuple]*collector.Socket, len(snap.Sockets))
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		if c := t.byKey[tupleOf(s)]; c != nil {
			found[c.key] = s
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.conns {
		if c.done {
			continue
		}
		s := found[c.key]
		if s != nil {
			c.seen = true
			c.last = *s
		}
		if c.finAt.IsZero() || !at.After(c.finAt) {
			continue
		}
		if s == nil || !open(s.State) {
			c.done, c.left, c.leftAt = true, true, at
			continue
		}
		if at.Sub(c.finAt) >= t.deadline {
			c.done = true
		}
	}
}

// stuck returns the connections whose server socket was still open at
// their deadline; call it once run has returned.
func (t *tracker) stuck() []*tracked {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*tracked
	for _, c := range t.conns {
		if c.err == nil && !c.notEstablish && !c.left {
			out = append(out, c)
		}
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}
