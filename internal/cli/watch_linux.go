package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/ebpf"
	"github.com/closewait/closewait/watch"
)

func init() { tracerEvents = openWatchEvents }

// openWatchEvents starts a trace of CLOSE_WAIT transitions and turns its
// events into watch events until ctx ends. It needs the tp_btf hook: the
// classic tracepoint's events carry no socket cookie, and the cookie is
// what joins an event to the socket a poll sees.
func openWatchEvents(ctx context.Context) (<-chan watch.Event, error) {
	t, err := ebpf.OpenTrace(ebpf.TraceOptions{})
	if err != nil {
		return nil, err
	}
	if t.Mode() != ebpf.ModeBTF {
		t.Close()
		return nil, fmt.Errorf("the %s hook gives no socket cookies", t.Mode())
	}
	ch := make(chan watch.Event, 1024)
	stop := context.AfterFunc(ctx, func() { t.Close() }) // interrupts Read
	go func() {
		defer close(ch)
		defer func() {
			if stop() {
				t.Close()
			}
		}()
		var e ebpf.Event
		for {
			if err := t.Read(&e, time.Time{}); err != nil {
				return // closed; watch goes back to polling
			}
			ev, ok := watchEvent(&e, t.Time(e.Time))
			if !ok {
				continue
			}
			select {
			case ch <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

// watchEvent converts a tracer event; ok is false for transitions that
// neither enter nor leave CLOSE_WAIT.
func watchEvent(e *ebpf.Event, at time.Time) (watch.Event, bool) {
	cw := uint8(collector.StateCloseWait)
	s := collector.Socket{
		Family: collector.FamilyIPv4,
		Local:  e.Local,
		Remote: e.Remote,
		Cookie: e.Cookie,
		Inode:  e.Inode,
		NetNS:  uint64(e.NetNS),
		State:  collector.State(e.NewState),
	}
	if e.Local.Addr().Is6() {
		s.Family = collector.FamilyIPv6
	}
	switch {
	case e.NewState == cw:
		// The FIN just arrived and counts as one unread byte: fin-not-read
		// until a poll reads the real Recv-Q.
		s.RecvQ = 1
		return watch.Event{Time: at, Socket: s}, true
	case e.OldState == cw:
		return watch.Event{Time: at, Socket: s, Left: true}, true
	}
	return watch.Event{}, false
}
