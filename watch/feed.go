package watch

import (
	"context"
	"errors"
	"time"

	"github.com/closewait/closewait/collector"
)

// Source is where a watch gets its sockets; *collector.Poller is one.
type Source interface {
	// PollChanges reads the socket table and reports what changed since
	// the last poll (everything, the first time).
	PollChanges(ctx context.Context) (*collector.Changes, error)
	// Complete fills owners and causes of sockets the tracer reported and
	// returns those that pass the filter.
	Complete(ctx context.Context, socks []collector.Socket) (*collector.Changes, error)
	// Refresh re-reads owners that may have changed since (an accept, a
	// close, an exit) and reports the sockets whose owners did.
	Refresh(ctx context.Context) (*collector.Changes, error)
	// Forget drops sockets the tracer saw leave, so nothing reports them
	// again before the next poll.
	Forget(ids []collector.SocketID)
}

// Event is one socket entering or leaving CLOSE_WAIT, as the tracer saw it.
type Event struct {
	// Time is when the socket changed state.
	Time time.Time
	// Socket is the socket as the tracer read it. Cookie is required: it
	// joins events to polls. Family, State, Local, Remote, RecvQ and Inode
	// (0 while the socket waits in an accept queue) should be set on
	// entering; Age is ignored, it comes from Time.
	Socket collector.Socket
	// Left is false when the socket entered the state, true when it left.
	Left bool
}

// Config says what to watch and how often.
type Config struct {
	Source Source
	// Events, when not nil, streams the tracer's transitions: the view
	// follows them and polls only every Resync. When it closes, the watch
	// polls every Interval again.
	Events <-chan Event
	// Interval is the time between samples (and polls, without events).
	Interval time.Duration
	// Resync is the time between polls while events flow: they catch what
	// events cannot say (a Recv-Q that changed, a lost event). Owners are
	// re-read every Interval (Source.Refresh). 0 means 30s.
	Resync time.Duration
	// Count stops the watch after that many samples; 0 runs until stopped.
	Count int
	// FDUsage reads a process's fd usage; nil leaves the columns empty.
	FDUsage func(pid int) (collector.FDUsage, error)
	// Label names what is counted, e.g. "CLOSE_WAIT".
	Label string
	// Highlight is how long a new socket stays highlighted; 0 means 5s.
	Highlight time.Duration
	// Warn receives warnings and errors in plain mode, each once (the
	// terminal view shows them on its status line instead).
	Warn func(msg string)
	// Tracer says whether a tracer is installed, for the header; the zero
	// value says nothing.
	Tracer TracerState
	// Closed counts, by pid, the fds holding sockets the kernel already
	// closed (see list --state closed), every ClosedEvery (0: 30s); nil
	// shows none.
	Closed      func(ctx context.Context) (map[int]ClosedFDs, error)
	ClosedEvery time.Duration
	// Settle, when not nil, is called at the tick after a poll that read
	// the whole table (the first, each refresh, or a burst of new sockets),
	// when the view has applied it: its dump and report are garbage then,
	// as large as the sockets.
	Settle func()
}

// ClosedFDs is a process's fds holding sockets the kernel closed.
type ClosedFDs struct {
	Comm string
	N    int
}

// TracerState is whether "closewait tracer install" has left a tracer.
type TracerState int

// The TracerStates.
const (
	TracerUnknown TracerState = iota
	TracerInstalled
	TracerNotInstalled
)

func (c *Config) defaults() {
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.Resync <= 0 {
		c.Resync = 30 * time.Second
	}
	if c.Label == "" {
		c.Label = "CLOSE_WAIT"
	}
	if c.Highlight <= 0 {
		c.Highlight = 5 * time.Second
	}
	if c.ClosedEvery <= 0 {
		c.ClosedEvery = 30 * time.Second
	}
}

// update is one step of the feed, applied to the model in order.
type update struct {
	at      time.Time
	changes *collector.Changes   // from a poll, or completed events
	left    []collector.SocketID // from events, after changes
	sample  bool                 // take a sample: one interval has passed
	events  bool                 // the view follows events
	closed  map[int]ClosedFDs    // closed-socket fds by pid, when counted
	err     error
}

// apply brings the model up to date with u.
func (u *update) apply(m *Model) {
	if u.changes != nil {
		m.Update(u.changes, u.at)
	}
	if u.closed != nil {
		m.SetClosed(u.closed)
	}
	if len(u.left) > 0 {
		m.Leave(u.left, u.at)
	}
	if u.sample {
		m.Sample(u.at)
	}
}

// errFirstPoll marks a failure of the first poll: there is nothing to
// show, so the watch stops.
var errFirstPoll = errors.New("first poll")

// settleAfter is the size of a report that, like a full one, is worth a
// collection once applied.
const settleAfter = 1000

// maxBatch bounds the events folded into one update.
const maxBatch = 4096

// feed reads the source and sends updates until ctx ends or send returns
// false. Without events it polls every interval; with them it applies them
// as they come, samples every interval and polls every Resync.
func feed(ctx context.Context, cfg *Config, send func(update) bool) {
	ch, err := cfg.Source.PollChanges(ctx)
	if err != nil {
		send(update{at: time.Now(), err: errors.Join(errFirstPoll, err)})
		return
	}
	// The closed sockets cost a walk of every fd: counted at the start,
	// then every ClosedEvery, apart from the polls.
	countClosed := func() map[int]ClosedFDs {
		if cfg.Closed == nil {
			return nil
		}
		n, err := cfg.Closed(ctx)
		if err != nil {
			return nil // the listing's own errors say more
		}
		if n == nil {
			n = map[int]ClosedFDs{}
		}
		return n
	}
	if !send(update{at: time.Now(), changes: ch, sample: true, events: cfg.Events != nil, closed: countClosed()}) {
		return
	}
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	var closedTick <-chan time.Time
	if cfg.Closed != nil {
		t := time.NewTicker(cfg.ClosedEvery)
		defer t.Stop()
		closedTick = t.C
	}
	// A full poll, or one that found many new sockets (and so dumped in
	// full), leaves its dump and its report as garbage, up to as large as
	// the sockets. By the next tick the view has applied it.
	settle := cfg.Settle != nil
	events := cfg.Events
	var resync <-chan time.Time
	if events != nil {
		t := time.NewTicker(cfg.Resync)
		defer t.Stop()
		resync = t.C
	}
	poll := func(sample bool) bool {
		ch, err := cfg.Source.PollChanges(ctx)
		if ctx.Err() != nil {
			return false
		}
		settle = cfg.Settle != nil && (settle || (ch != nil && (ch.Full || len(ch.Sockets) > settleAfter)))
		return send(update{at: time.Now(), changes: ch, sample: sample, err: err, events: events != nil})
	}
	for {
		var ok bool
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if settle {
				cfg.Settle()
				settle = false
			}
			if events == nil {
				ok = poll(true)
				break
			}
			// Events tell of no accept, close or exit: owners are
			// re-read with the sample.
			ch, err := cfg.Source.Refresh(ctx)
			ok = send(update{at: time.Now(), changes: ch, err: err, sample: true, events: true})
		case <-resync:
			ok = poll(false)
		case <-closedTick:
			if n := countClosed(); n != nil {
				ok = send(update{at: time.Now(), closed: n, events: events != nil})
			} else {
				ok = true
			}
		case ev, open := <-events:
			if !open {
				events, resync = nil, nil
				ok = send(update{at: time.Now(), err: errors.New("tracer events stopped: polling")})
				break
			}
			ok = send(batch(ctx, cfg, ev, events))
		}
		if !ok {
			return
		}
	}
}

// batch folds ev and the events that follow within a moment into one
// update, and completes the sockets that entered: a burst of events then
// costs one search for owners, not one each.
func batch(ctx context.Context, cfg *Config, ev Event, events <-chan Event) update {
	var entered []collector.Socket
	var left []collector.SocketID
	var times []time.Time
	add := func(ev Event) {
		if ev.Left {
			// In and out within the batch: Complete must not learn it
			// after Forget, or it stays until the next full poll.
			id := ev.Socket.ID()
			for i := 0; i < len(entered); i++ {
				if entered[i].ID() == id {
					entered = append(entered[:i], entered[i+1:]...)
					times = append(times[:i], times[i+1:]...)
					i--
				}
			}
			left = append(left, id)
			return
		}
		entered = append(entered, ev.Socket)
		times = append(times, ev.Time)
	}
	add(ev)
	linger := time.NewTimer(min(cfg.Interval/4, 100*time.Millisecond))
	defer linger.Stop()
collect:
	for len(entered)+len(left) < maxBatch {
		select {
		case ev, ok := <-events:
			if !ok {
				break collect
			}
			add(ev)
		case <-linger.C:
			break collect
		case <-ctx.Done():
			break collect
		}
	}
	now := time.Now()
	for i := range entered {
		s := &entered[i]
		s.Age, s.AgeKnown, s.AgeExact, s.AgeMax = 0, false, false, 0
		if !times[i].IsZero() {
			s.Age = max(now.Sub(times[i]), 0)
			s.AgeKnown, s.AgeExact, s.AgeMax = true, true, s.Age
		}
	}
	u := update{at: now, left: left, events: true}
	if len(left) > 0 {
		cfg.Source.Forget(left)
	}
	if len(entered) > 0 {
		u.changes, u.err = cfg.Source.Complete(ctx, entered)
	}
	return u
}
