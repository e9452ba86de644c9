package harness

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/closewait/closewait/collector"
)

// Defaults for the zero values of Options.
const (
	DefaultConns            = 10
	DefaultDeadline         = 2 * time.Second
	DefaultDeadPeerDeadline = 10 * time.Second
	DefaultTick             = 5 * time.Millisecond
)

// DefaultPayload is what clients send when no payload is given: one line,
// which line-based and echo servers answer.
var DefaultPayload = []byte("closewait test\n")

// HTTPRequest returns a minimal HTTP/1.1 request for target (HOST:PORT).
// It keeps the connection alive, so the client decides when it ends.
func HTTPRequest(target string) []byte {
	return []byte("GET / HTTP/1.1\r\nHost: " + target + "\r\nUser-Agent: closewait-test\r\nAccept: */*\r\n\r\n")
}

// Options configures a run. The zero value of each field means its default.
type Options struct {
	// Target is the server under test, HOST:PORT. It must run on this
	// host, in this network namespace.
	Target string
	// Scenarios to run, in run order; nil means DefaultScenarios.
	Scenarios []string
	// Conns is the number of connections per scenario.
	Conns int
	// Deadline is how long after the client's FIN each server socket may
	// stay in CLOSE_WAIT.
	Deadline time.Duration
	// DeadPeerDeadline is how long the server may keep a connection whose
	// peer vanished (dead-peer).
	DeadPeerDeadline time.Duration
	// Payload is what clients send; nil means DefaultPayload.
	Payload []byte
	// Source is the collector source for stuck sockets' details; polling
	// uses netlink when this is "" or auto, as it is the cheapest dump.
	Source string
	// Tick is the longest pause between polls; right after a FIN they
	// come faster, so short latencies are measured finely.
	Tick time.Duration
	// ServerAlive, when set, is called after each scenario; an error
	// (e.g. "server exited") fails that scenario and ends the run.
	ServerAlive func() error
}

func (o Options) withDefaults() (Options, uint16, error) {
	if o.Target == "" {
		return o, 0, errors.New("no target")
	}
	_, p, err := net.SplitHostPort(o.Target)
	if err != nil {
		return o, 0, fmt.Errorf("target %q: %w", o.Target, err)
	}
	port, err := net.LookupPort("tcp", p)
	if err != nil || port == 0 {
		return o, 0, fmt.Errorf("target %q: bad port %q", o.Target, p)
	}
	if o.Scenarios == nil {
		o.Scenarios = DefaultScenarios()
	}
	for _, s := range o.Scenarios {
		if !validScenario(s) {
			return o, 0, fmt.Errorf("unknown scenario %q", s)
		}
	}
	o.Conns = cmp.Or(o.Conns, DefaultConns)
	o.Deadline = cmp.Or(o.Deadline, DefaultDeadline)
	o.DeadPeerDeadline = cmp.Or(o.DeadPeerDeadline, DefaultDeadPeerDeadline)
	o.Tick = cmp.Or(o.Tick, DefaultTick)
	if o.Payload == nil {
		o.Payload = DefaultPayload
	}
	if o.Source == "" {
		o.Source = collector.SourceAuto
	}
	switch {
	case o.Conns < 0:
		return o, 0, fmt.Errorf("connections per scenario %d: want at least 1", o.Conns)
	case o.Deadline < 0 || o.DeadPeerDeadline < 0 || o.Tick < 0:
		return o, 0, errors.New("negative duration")
	case len(o.Payload) == 0:
		return o, 0, errors.New("empty payload")
	}
	return o, uint16(port), nil
}

// Run drives the target through the scenarios, one after another, and
// reports each. It returns an error only when the run cannot measure
// (target unreachable, its sockets not visible, dead-peer prerequisites
// missing, the socket table unreadable); failing scenarios are in the
// report.
func Run(ctx context.Context, opts Options) (*Outcome, error) {
	o, port, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &runner{opts: o, port: port}
	rep := &Outcome{Target: o.Target, Started: time.Now()}
	rep.Host, _ = os.Hostname()
	if slices.Contains(o.Scenarios, DeadPeer) {
		// Set up first, so a missing prerequisite fails before any scenario runs.
		d, err := newDropper()
		if err != nil {
			return nil, fmt.Errorf("dead-peer: %w", err)
		}
		defer d.close()
		r.dropper = d
	}
	if err := r.probe(ctx); err != nil {
		return nil, err
	}
	// One poller for the run: it keeps its netlink socket and re-reads
	// the table without tcp_info, about half the cost of a Collect.
	r.poller = collector.NewPoller(r.query(r.pollSource, false, pollStates))
	defer r.poller.Close()
	rep.Source = r.pollSource
	for i, name := range o.Scenarios {
		res, err := r.scenario(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if o.ServerAlive != nil {
			if err := o.ServerAlive(); err != nil {
				res.Err = err.Error()
				rep.Scenarios = append(rep.Scenarios, res)
				for _, rest := range o.Scenarios[i+1:] {
					rep.Scenarios = append(rep.Scenarios, ScenarioResult{
						Name: rest, Conns: o.Conns, Deadline: r.deadline(rest), Err: "not run: " + err.Error(),
					})
				}
				break
			}
		}
		rep.Scenarios = append(rep.Scenarios, res)
	}
	rep.Warnings = r.warnings
	rep.Duration = time.Since(rep.Started)
	return rep, nil
}

// runner holds what the scenarios of one run share.
type runner struct {
	opts       Options
	port       uint16
	pollSource string
	poller     *collector.Poller // used by one scenario at a time
	dropper    *dropper

	mu       sync.Mutex
	warnings []string
}

func (r *runner) deadline(name string) time.Duration {
	if name == DeadPeer {
		return r.opts.DeadPeerDeadline
	}
	return r.opts.Deadline
}

// dumpTimeout bounds one read of the socket table: a stuck source must
// not hang a CI job.
const dumpTimeout = 10 * time.Second

// query selects the server sockets on the target port in states: those
// a server socket passes through while the harness watches it are
// pollStates.
func (r *runner) query(source string, owners bool, states collector.StateSet) collector.Options {
	return collector.Options{
		Source:   source,
		States:   states,
		Filter:   collector.Filter{SPorts: []uint16{r.port}},
		NoOwners: !owners,
	}
}

// collect reads the server sockets on the target port once. Owners cost
// a /proc scan, so only the final look at stuck sockets asks for them.
func (r *runner) collect(ctx context.Context, source string, owners bool, states collector.StateSet) (*collector.Snapshot, error) {
	dctx, cancel := context.WithTimeout(ctx, dumpTimeout)
	defer cancel()
	snap, err := collector.Collect(dctx, r.query(source, owners, states))
	return r.checked(ctx, snap, err)
}

// poll is collect for the tick loop, through the run's poller.
func (r *runner) poll(ctx context.Context) (*collector.Snapshot, error) {
	dctx, cancel := context.WithTimeout(ctx, dumpTimeout)
	defer cancel()
	snap, err := r.poller.Poll(dctx)
	return r.checked(ctx, snap, err)
}

// details reads the sockets from the best source (the eBPF one knows
// keepalive settings), with their owners if asked; when that fails, from
// the poll source.
func (r *runner) details(ctx context.Context, owners bool) (*collector.Snapshot, error) {
	snap, err := r.collect(ctx, r.opts.Source, owners, pollStates)
	if err == nil || ctx.Err() != nil || r.opts.Source == r.pollSource {
		return snap, err
	}
	r.warn(fmt.Sprintf("%s source failed for details (%v): using %s", r.opts.Source, err, r.pollSource))
	return r.collect(ctx, r.pollSource, owners, pollStates)
}

func (r *runner) checked(ctx context.Context, snap *collector.Snapshot, err error) (*collector.Snapshot, error) {
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("reading the socket table: %w", err)
	}
	for _, w := range snap.Warnings {
		r.warn(w)
	}
	return snap, nil
}

func (r *runner) warn(w string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.warnings, w) {
		r.warnings = append(r.warnings, w)
	}
}

// probe checks that the target accepts connections and that its server
// sockets show in this host's socket table, and picks the poll source.
func (r *runner) probe(ctx context.Context) error {
	c, err := r.dial(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("target %s is not reachable: %w", r.opts.Target, err)
	}
	// An RST leaves nothing behind on the server, not even a leaked socket.
	defer abort(c)
	key := tupleOfClient(c)
	src := r.opts.Source
	if src == collector.SourceAuto {
		src = collector.SourceNetlink
		if _, err := r.collect(ctx, src, false, pollStates); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			src = collector.SourceAuto
		}
	}
	// The client's connect returns before the server has taken the
	// handshake's last ACK. A server that defers accept leaves its side
	// SYN_RECV until data comes, and one whose accept queue is full, or
	// that lost the ACK, until TCP retransmits: a second or more. It is
	// in the table all the same.
	states := pollStates.With(collector.StateSynRecv)
	end := time.Now().Add(time.Second)
	for {
		snap, err := r.collect(ctx, src, false, states)
		if err != nil {
			return err
		}
		src = snap.Source // pin what auto chose: no fallback on every tick
		for i := range snap.Sockets {
			if tupleOf(&snap.Sockets[i]) == key {
				r.pollSource = src
				return nil
			}
		}
		if time.Now().After(end) {
			return fmt.Errorf("the server side of %s (%s) is not in this host's socket table (%d sockets on port %d, none from %s): run closewait test on the server's host, in its network namespace",
				unmap(key.local).String(), r.opts.Target, len(snap.Sockets), r.port, unmap(key.remote))
		}
		if err := sleep(ctx, r.opts.Tick); err != nil {
			return err
		}
	}
}

const (
	dialTimeout  = 3 * time.Second
	dialParallel = 64 // connects in flight: more only overflows SYN queues
)

func (r *runner) dial(ctx context.Context) (*net.TCPConn, error) {
	// Client keepalive is off: the client's side must never be what ends
	// a connection.
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: -1}
	c, err := d.DialContext(ctx, "tcp", r.opts.Target)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

func (r *runner) dialAll(ctx context.Context, n int) []*tracked {
	out := make([]*tracked, n)
	sem := make(chan struct{}, dialParallel)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := r.dial(ctx)
			t := &tracked{conn: c, err: err}
			if err == nil {
				t.key = tupleOfClient(c)
			}
			out[i] = t
		})
	}
	wg.Wait()
	return out
}

// scenario runs one scenario: connect, find every server socket, let the
// clients leave, watch the server sockets go.
func (r *runner) scenario(ctx context.Context, name string) (ScenarioResult, error) {
	start := time.Now()
	deadline := r.deadline(name)
	res := ScenarioResult{Name: name, Conns: r.opts.Conns, Deadline: deadline}
	conns := r.dialAll(ctx, r.opts.Conns)
	var bg sync.WaitGroup // clients still reading after they left (half-close)
	defer func() {
		for _, c := range conns {
			if c.conn != nil {
				c.conn.Close()
			}
		}
		bg.Wait()
	}()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	tr := newTracker(r.poll, r.opts.Tick, deadline, conns)
	if err := tr.waitSeen(ctx, max(deadline, time.Second)); err != nil {
		return res, err
	}

	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	measured := make(chan error, 1)
	go func() { measured <- tr.run(mctx) }()
	playErr := r.play(ctx, name, tr, &bg, &res)
	if playErr != nil {
		cancel()
	}
	if err := <-measured; playErr == nil && err != nil {
		return res, err
	}
	if playErr != nil {
		return res, playErr
	}

	stuck := tr.stuck()
	if len(stuck) > 0 {
		// One more dump, with owners and the best source, to say who
		// holds the stuck sockets and why.
		snap, err := r.details(ctx, true)
		if err != nil {
			return res, err
		}
		byKey := map[tuple]*collector.Socket{}
		for i := range snap.Sockets {
			byKey[tupleOf(&snap.Sockets[i])] = &snap.Sockets[i]
		}
		for _, c := range stuck {
			res.Failures = append(res.Failures, r.stuckFailure(name, c, byKey[c.key], snap.Time, deadline))
		}
	}
	if name == DeadPeer && r.dropper != nil {
		// Let the clients' retransmitted FINs through from now on.
		if err := r.dropper.clear(); err != nil {
			return res, err
		}
	}
	var lat []time.Duration
	for _, c := range conns {
		if c.closedFirst {
			res.ServerClosedFirst++
		}
		switch {
		case c.err != nil:
			res.Failures = append(res.Failures, ConnFailure{Causes: []string{CauseConnect}, Err: "connect: " + c.err.Error()})
		case c.notEstablish:
			res.Failures = append(res.Failures, ConnFailure{Server: c.key.local, Client: c.key.remote, Causes: []string{CauseNotEstablished}})
		case c.left:
			d := c.leftAt.Sub(c.finAt)
			if d <= deadline {
				res.OK++
				lat = append(lat, d)
				continue
			}
			res.Failures = append(res.Failures, ConnFailure{
				Server: c.key.local, Client: c.key.remote, State: c.last.State, RecvQ: c.last.RecvQ, QueuesUnknown: c.last.QueuesUnknown,
				Causes: []string{CauseClosedLate}, Waited: d,
			})
		}
	}
	slices.Sort(lat)
	res.P50, res.P99 = percentile(lat, 0.50), percentile(lat, 0.99)
	if len(lat) > 0 {
		res.Max = lat[len(lat)-1]
	}
	slices.SortFunc(res.Failures, func(a, b ConnFailure) int { return a.Client.Compare(b.Client) })
	var notes []string
	if name == Reset {
		notes = append(notes, "an RST makes the kernel drop the server socket; this checks that none stays")
	}
	if n := res.ServerClosedFirst; n > 0 {
		notes = append(notes, fmt.Sprintf("the server closed %d of %d connections before the client left: those could not leak", n, res.Conns))
	}
	res.Note = strings.Join(notes, "; ")
	res.Duration = time.Since(start)
	return res, nil
}

// stuckFailure describes a connection whose server socket was still open
// at its deadline; s is its socket in the final dump, nil if it has gone
// since (then it closed, late).
func (r *runner) stuckFailure(name string, c *tracked, s *collector.Socket, at time.Time, deadline time.Duration) ConnFailure {
	f := ConnFailure{Server: c.key.local, Client: c.key.remote, Waited: at.Sub(c.finAt)}
	if s == nil || !open(s.State) {
		f.State, f.RecvQ, f.QueuesUnknown = c.last.State, c.last.RecvQ, c.last.QueuesUnknown
		f.Causes = []string{CauseClosedLate}
		return f
	}
	f.State, f.RecvQ, f.QueuesUnknown, f.Owners = s.State, s.RecvQ, s.QueuesUnknown, s.Owners
	f.Keepalive, f.Timer = s.Keepalive, s.Timer
	switch {
	case s.State == collector.StateCloseWait:
		for _, cause := range s.Causes {
			f.Causes = append(f.Causes, string(cause))
		}
	case name == DeadPeer:
		f.Causes = []string{deadPeerCause(s, deadline)}
	default:
		f.Causes = []string{CauseFINNotReceived}
	}
	return f
}
