package collector

import (
	"cmp"
	"context"
	"slices"
	"time"
)

// StatesKeepalive are the states closewait keepalive lists by default:
// the connections a dead peer would leave open.
var StatesKeepalive = setOf(StateEstablished, StateCloseWait)

// DeadPeer is what a socket's settings say about noticing a dead peer.
// Each value comes with whether the source knows it: the ebpf source reads
// the settings from the kernel socket; sock_diag (netlink) shows only
// whether a keepalive timer is armed; /proc/net/tcp shows the timer too,
// but no idle time.
type DeadPeer struct {
	// KeepaliveKnown: Keepalive (SO_KEEPALIVE) is known. Netlink knows it
	// from the timer of an ESTABLISHED or CLOSE_WAIT socket, unless a
	// retransmission or window-probe timer hides it.
	KeepaliveKnown bool
	Keepalive      bool
	// TimersKnown: Idle, Interval and Probes are known (ebpf only): the
	// socket's own values, or the sysctl defaults it falls back to; Own
	// says which (collector.KeepaliveOwn* bits).
	TimersKnown bool
	Own         uint8
	Idle        time.Duration // TCP_KEEPIDLE: quiet time before the first probe
	Interval    time.Duration // TCP_KEEPINTVL
	Probes      int           // TCP_KEEPCNT
	// UserTimeoutKnown: UserTimeout is known (ebpf only); 0 means unset.
	UserTimeoutKnown bool
	UserTimeout      time.Duration // TCP_USER_TIMEOUT
	// DetectKnown: Never and Detect are known. Never means a dead peer
	// keeps the connection open for good; otherwise Detect is how long
	// after the peer's last word the kernel gives up on it.
	DetectKnown bool
	Never       bool
	Detect      time.Duration
	// Unresponsive: retransmissions or keepalive probes go unanswered now
	// (ebpf, netlink); the socket's Idle says for how long the peer has
	// been silent.
	Unresponsive bool
}

// DeadPeerOf returns what s's source knows of its dead-peer detection.
func DeadPeerOf(s *Socket) DeadPeer {
	d := DeadPeer{Unresponsive: s.Unanswered > 0 && s.State != StateClose}
	if k := s.Keepalive; k != nil {
		d.KeepaliveKnown, d.Keepalive = true, k.Enabled
		d.TimersKnown = true
		d.Idle, d.Interval, d.Probes, d.Own = k.Idle, k.Interval, k.Probes, k.Own
		d.UserTimeoutKnown, d.UserTimeout = true, k.UserTimeout
	} else if s.State == StateEstablished || s.State == StateCloseWait {
		// In these states the socket's sk_timer is the keepalive timer,
		// armed whenever SO_KEEPALIVE is on; inet_diag reports a pending
		// retransmission or window probe in its place.
		switch s.Timer {
		case "keepalive":
			d.KeepaliveKnown, d.Keepalive = true, true
		case "":
			d.KeepaliveKnown = true
		}
	}
	switch {
	case d.KeepaliveKnown && !d.Keepalive:
		// A user timeout ends only connections with unacknowledged data:
		// an idle one whose peer is gone stays.
		d.DetectKnown, d.Never = true, true
	case d.TimersKnown:
		d.DetectKnown, d.Detect = true, detectTime(d.Idle, d.Interval, d.Probes, d.UserTimeout)
	}
	return d
}

// detectTime is how long after the peer's last segment keepalive gives up:
// the idle time, then probes at the interval. With TCP_USER_TIMEOUT set,
// the kernel ignores the probe count and gives up at the first probe timer
// past the user timeout, after at least one probe.
func detectTime(idle, interval time.Duration, probes int, user time.Duration) time.Duration {
	if user == 0 {
		return idle + interval*time.Duration(probes)
	}
	if interval <= 0 {
		return max(idle, user)
	}
	d := idle + interval
	for d < user {
		d += interval
	}
	return d
}

// KeepaliveFilter narrows closewait keepalive's listing beyond Filter.
type KeepaliveFilter struct {
	NoKeepalive bool          // only sockets known to have keepalive off
	DetectOver  time.Duration // only sockets that notice a dead peer later than this, or never
	IdleOver    time.Duration // only sockets idle longer than this
}

// Match reports whether a socket with dead-peer facts d passes f. Unknown
// values fail a test that needs them.
func (f KeepaliveFilter) Match(s *Socket, d *DeadPeer) bool {
	if f.NoKeepalive && (!d.KeepaliveKnown || d.Keepalive) {
		return false
	}
	if f.DetectOver > 0 && (!d.DetectKnown || !d.Never && d.Detect <= f.DetectOver) {
		return false
	}
	if f.IdleOver > 0 && (!s.IdleKnown || s.Idle <= f.IdleOver) {
		return false
	}
	return true
}

// KeepaliveSocket is one socket of a keepalive audit.
type KeepaliveSocket struct {
	*Socket
	DeadPeer
}

// KeepaliveAudit is the result of CollectKeepalive: the snapshot, its
// sockets that passed the filter with their dead-peer facts, and a
// summary per process.
type KeepaliveAudit struct {
	*Snapshot
	Audited   []KeepaliveSocket
	Processes []KeepaliveProcess
}

// KeepaliveProcess sums up one process's connections: how many have
// keepalive on, off or unknown, and the range of detection times.
type KeepaliveProcess struct {
	PID     int
	Comm    string
	Sockets int
	On      int // keepalive on
	Off     int // keepalive known off: dead peers are never noticed
	Closed  int // CLOSE: the kernel already dropped the connection
	// Unresponsive counts connections whose peer answers nothing now;
	// MaxSilent is the longest such peer's silence.
	Unresponsive int
	MaxSilent    time.Duration
	// MinIdle, MaxIdle and MinDetect, MaxDetect span the sockets with
	// keepalive on whose timers are known; TimersKnown counts them.
	TimersKnown int
	// Defaults counts those whose timers are all the sysctl defaults.
	Defaults             int
	MinIdle, MaxIdle     time.Duration
	MinDetect, MaxDetect time.Duration
}

// Unknown is the number of open connections whose keepalive state is
// unknown.
func (p *KeepaliveProcess) Unknown() int { return p.Sockets - p.On - p.Off - p.Closed }

// CollectKeepalive collects the sockets opts asks for (by default
// ESTABLISHED and CLOSE_WAIT) and the dead-peer facts of each, keeping
// those that pass f.
func CollectKeepalive(ctx context.Context, opts Options, f KeepaliveFilter) (*KeepaliveAudit, error) {
	if opts.States == 0 {
		opts.States = StatesKeepalive
	}
	opts.timers = true
	snap, err := Collect(ctx, opts)
	if err != nil {
		return nil, err
	}
	a := &KeepaliveAudit{Snapshot: snap, Audited: make([]KeepaliveSocket, 0, len(snap.Sockets))}
	prefault(a.Audited)
	unknown := 0
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		d := DeadPeerOf(s)
		if !f.Match(s, &d) {
			continue
		}
		if d.Unresponsive {
			s.Causes = append(s.Causes, CausePeerUnresponsive)
		}
		if !d.DetectKnown && s.State != StateClose {
			unknown++
		}
		a.Audited = append(a.Audited, KeepaliveSocket{Socket: s, DeadPeer: d})
	}
	a.Audited = sortedByDetect(a.Audited)
	if unknown > 0 {
		snap.Warnf("the %s source cannot read keepalive timers or user timeouts: they are null, and so is "+
			"the time to notice a dead peer of %d connections; the ebpf source (root, BPF) reads them", snap.Source, unknown)
	}
	a.Processes = SummarizeKeepalive(a.Audited)
	return a, nil
}

// SummarizeKeepalive groups sockets by process (a socket with several
// owners counts for each), most sockets without keepalive first. Sockets
// with no visible owner (hidden when not root) are under PID 0, comm "-".
func SummarizeKeepalive(socks []KeepaliveSocket) []KeepaliveProcess {
	byPID := map[int]*KeepaliveProcess{}
	for i := range socks {
		s := &socks[i]
		seen := 0
		holders := s.Holders()
		if len(holders) == 0 {
			holders = []Owner{{Comm: "-"}}
			seen = -1
		}
		for _, o := range holders {
			if o.PID == seen {
				continue
			}
			seen = o.PID
			p := byPID[o.PID]
			if p == nil {
				p = &KeepaliveProcess{PID: o.PID, Comm: o.Comm}
				byPID[o.PID] = p
			}
			p.add(s)
		}
	}
	out := make([]KeepaliveProcess, 0, len(byPID))
	for _, p := range byPID {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b KeepaliveProcess) int {
		return cmp.Or(cmp.Compare(b.Off, a.Off), cmp.Compare(b.Sockets, a.Sockets), cmp.Compare(a.PID, b.PID))
	})
	return out
}

func (p *KeepaliveProcess) add(s *KeepaliveSocket) {
	d := &s.DeadPeer
	p.Sockets++
	if d.Unresponsive {
		p.Unresponsive++
		p.MaxSilent = max(p.MaxSilent, s.Socket.Idle)
	}
	switch {
	case s.State == StateClose:
		p.Closed++
		return
	case !d.KeepaliveKnown:
		return
	case !d.Keepalive:
		p.Off++
		return
	}
	p.On++
	if !d.TimersKnown {
		return
	}
	if p.TimersKnown == 0 {
		p.MinIdle, p.MaxIdle, p.MinDetect, p.MaxDetect = d.Idle, d.Idle, d.Detect, d.Detect
	}
	p.TimersKnown++
	if d.Own == 0 {
		p.Defaults++
	}
	p.MinIdle, p.MaxIdle = min(p.MinIdle, d.Idle), max(p.MaxIdle, d.Idle)
	p.MinDetect, p.MaxDetect = min(p.MinDetect, d.Detect), max(p.MaxDetect, d.Detect)
}

// compareDetect orders sockets slowest to notice a dead peer first: never,
// then the longest detection time, then unknown; the longest idle first
// within each.
func compareDetect(a, b *KeepaliveSocket) int {
	rank := func(s *KeepaliveSocket) int {
		switch {
		case !s.DetectKnown:
			return 2
		case s.Never:
			return 0
		}
		return 1
	}
	return cmp.Or(cmp.Compare(rank(a), rank(b)), cmp.Compare(b.Detect, a.Detect),
		cmp.Compare(b.Socket.Idle, a.Socket.Idle))
}

// sortedByDetect returns socks ordered by compareDetect, ties in their
// order. It sorts a permutation and then moves each socket once: a stable
// sort of the sockets themselves (72 bytes each) moved them many times,
// a fifth of a keepalive audit's time at 85,000 sockets.
func sortedByDetect(socks []KeepaliveSocket) []KeepaliveSocket {
	order := make([]int32, len(socks))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(i, j int32) int {
		return cmp.Or(compareDetect(&socks[i], &socks[j]), cmp.Compare(i, j))
	})
	out := make([]KeepaliveSocket, len(socks))
	prefault(out)
	for k, i := range order {
		out[k] = socks[i]
	}
	return out
}
