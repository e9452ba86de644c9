package collector

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/closewait/closewait/ebpf"
	"github.com/closewait/closewait/internal/leaktest"
)

// fakeSource is an event stream fed by the test. Event times are
// CLOCK_MONOTONIC-like: nanoseconds since base.
type fakeSource struct {
	mu     sync.Mutex
	events []ebpf.Event
	errs   []error // returned before the events, one per Read
	base   time.Time
	closed bool
}

func (f *fakeSource) Read(e *ebpf.Event, deadline time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return ebpf.ErrTraceClosed
	case len(f.errs) > 0:
		err := f.errs[0]
		f.errs = f.errs[1:]
		return err
	case len(f.events) > 0:
		*e = f.events[0]
		f.events = f.events[1:]
		return nil
	}
	return os.ErrDeadlineExceeded // never blocks: the test feeds first
}

func (f *fakeSource) Time(mono uint64) time.Time                 { return f.base.Add(time.Duration(mono)) }
func (f *fakeSource) Lost() uint64                               { return 0 }
func (f *fakeSource) NotedOwner(inode uint64) (ebpf.Owner, bool) { return ebpf.Owner{}, false }
func (f *fakeSource) Close() error                               { f.closed = true; return nil }

// fakeOwners knows sockets by inode once scanned.
type fakeOwners struct {
	held    map[uint64][]ebpf.Owner // what a scan would find
	known   map[uint64][]ebpf.Owner
	scanned int
}

func (o *fakeOwners) Scan() error { o.known = o.held; o.scanned++; return nil }
func (o *fakeOwners) Lookup(e *ebpf.Event) ([]ebpf.Owner, bool) {
	w, ok := o.known[e.Inode]
	return w, ok
}
func (o *fakeOwners) Stale(e *ebpf.Event) bool { _, ok := o.known[e.Inode]; return !ok && e.Inode != 0 }
func (o *fakeOwners) Close() error             { return nil }

func rawEvent(at time.Duration, inode uint64, from, to State, port uint16) ebpf.Event {
	return ebpf.Event{Time: uint64(at), Inode: inode, Family: 2, OldState: uint8(from), NewState: uint8(to),
		Local:  netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port),
		Remote: netip.MustParseAddrPort("127.0.0.1:50000")}
}

func TestEventsBatchOwnersFilter(t *testing.T) {
	base := time.Now().Add(-time.Minute)
	src := &fakeSource{base: base, events: []ebpf.Event{
		rawEvent(1, 10, StateEstablished, StateCloseWait, 80),
		rawEvent(2, 11, StateEstablished, StateCloseWait, 80),
		rawEvent(3, 12, StateEstablished, StateCloseWait, 443), // filtered out by port
		rawEvent(4, 10, StateCloseWait, StateLastAck, 80),
	}}
	owners := &fakeOwners{held: map[uint64][]ebpf.Owner{10: {{PID: 7, Comm: "srv", FD: 3}}, 11: {{PID: 8, Comm: "other", FD: 4}}}}
	es := newEvents(src, "test", Filter{Ports: []uint16{80}, Comms: []string{"srv"}})
	es.owners = owners
	batch, err := es.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// One burst, one snapshot; the comm filter keeps srv's two events.
	if owners.scanned != 1 || len(batch) != 2 {
		t.Fatalf("%d scans, batch %+v; want 1 scan and srv's 2 events", owners.scanned, batch)
	}
	if batch[0].Kind() != "enter" || batch[1].Kind() != "leave" || batch[1].Socket.Owners[0].PID != 7 {
		t.Errorf("batch %+v", batch)
	}
	if !batch[0].Time.Equal(base.Add(1)) {
		t.Errorf("time %v, want %v", batch[0].Time, base.Add(1))
	}
	if batch, err := es.Next(context.Background()); err != nil || len(batch) != 0 {
		t.Errorf("quiet stream: %v, %v; want an empty batch", batch, err)
	}
}

// After ctx ends, Next returns what happened before, then io.EOF, even
// when the ring keeps filling.
func TestEventsDrain(t *testing.T) {
	base := time.Now().Add(-time.Minute)
	src := &fakeSource{base: base, events: []ebpf.Event{
		rawEvent(1, 0, StateEstablished, StateCloseWait, 80),
		rawEvent(2*time.Minute, 0, StateEstablished, StateCloseWait, 81), // after the stop
		rawEvent(3*time.Minute, 0, StateEstablished, StateCloseWait, 82),
	}}
	es := newEvents(src, "test", Filter{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	batch, err := es.Next(ctx)
	if err != nil || len(batch) != 1 || batch[0].Socket.Local.Port() != 80 {
		t.Fatalf("draining: %+v, %v; want the one event before the stop", batch, err)
	}
	if _, err := es.Next(ctx); !errors.Is(err, io.EOF) {
		t.Errorf("after draining: %v, want io.EOF", err)
	}
}

// A bad event is skipped and counted; maxBadEvents in a row break the
// stream; a closed trace ends it.
func TestEventsErrors(t *testing.T) {
	bad := errors.New("short record")
	src := &fakeSource{base: time.Now(), errs: []error{bad, bad}, events: []ebpf.Event{rawEvent(1, 0, StateEstablished, StateCloseWait, 80)}}
	es := newEvents(src, "test", Filter{})
	if batch, err := es.Next(context.Background()); err != nil || len(batch) != 1 || es.Bad() != 2 {
		t.Errorf("two bad events: batch %d, %v, bad %d; want the good event and 2 skipped", len(batch), err, es.Bad())
	}

	src.errs = make([]error, maxBadEvents)
	for i := range src.errs {
		src.errs[i] = bad
	}
	if _, err := es.Next(context.Background()); !errors.Is(err, ErrEventsBroken) {
		t.Errorf("%d bad events in a row: %v, want ErrEventsBroken", maxBadEvents, err)
	}

	src.errs = nil
	src.Close()
	if _, err := es.Next(context.Background()); !errors.Is(err, io.EOF) {
		t.Errorf("closed: %v, want io.EOF", err)
	}
}

// TestEventsOwners: real transitions on both hooks, with the owner from
// the iterator's snapshot on entering CLOSE_WAIT and remembered on
// leaving it, when the fd is gone.
func TestEventsOwners(t *testing.T) {
	requireEBPF(t)
	for _, hook := range []string{"tp_btf", "tracepoint"} {
		t.Run(hook, func(t *testing.T) {
			ln := leaktest.Listen(t, "tcp4")
			port := ln.Addr().(*net.TCPAddr).AddrPort().Port()
			es, err := OpenEvents(EventOptions{Hook: hook, PinDir: t.TempDir(), Owners: true, Filter: Filter{SPorts: []uint16{port}}})
			if err != nil {
				t.Fatalf("%+v", err)
			}
			defer es.Close()
			if err := es.OwnersErr(); err != nil {
				t.Fatalf("owners from /proc: %v", err)
			}
			conns := leaktest.Accepted(t, ln, 1)
			c := conns[0]
			want := []Owner{{PID: os.Getpid(), Comm: leaktest.SelfComm(t), FD: int(c.File.Fd())}}
			leaktest.CloseClients(t, conns) // the server side enters CLOSE_WAIT
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// next reads until an event of kind comes.
			next := func(kind string) *Event {
				for ctx.Err() == nil {
					batch, err := es.Next(ctx)
					if err != nil {
						t.Fatal(err)
					}
					for i := range batch {
						if batch[i].Kind() == kind {
							return &batch[i]
						}
					}
				}
				return nil
			}
			// The fd stays open until the entry is read, so that the
			// snapshot it triggers sees it.
			enter := next("enter")
			if enter != nil {
				enter = &Event{Socket: enter.Socket} // the batch is reused
			}
			c.File.Close() // the socket leaves CLOSE_WAIT
			c.File = nil
			leave := next("leave")
			if enter == nil || leave == nil {
				t.Fatalf("events: enter %v, leave %v", enter, leave)
			}
			if enter.Socket.Local != c.Local || enter.Socket.Remote != c.Remote {
				t.Errorf("addresses %v %v, want %v %v", enter.Socket.Local, enter.Socket.Remote, c.Local, c.Remote)
			}
			if !sameOwners(enter.Socket.Owners, want) || !sameOwners(leave.Socket.Owners, want) {
				t.Errorf("owners on entering %v, on leaving %v; want %v", enter.Socket.Owners, leave.Socket.Owners, want)
			}
			if !leave.InCloseWaitKnown || leave.InCloseWait <= 0 {
				t.Errorf("leave without a duration: %+v", leave)
			}
			if es.Lost() != 0 || es.Bad() != 0 {
				t.Errorf("lost %d, bad %d", es.Lost(), es.Bad())
			}
		})
	}
}
