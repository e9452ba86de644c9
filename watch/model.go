package watch

import (
	"cmp"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/closewait/closewait/collector"
)

// Model is the state of a watch, without any terminal: the sockets seen
// now, each process's count over time, and the rows to show. Polls and
// completed tracer events change the socket set (Update, Leave); Sample
// records a point of history. It is not safe for concurrent use.
type Model struct {
	highlight time.Duration
	started   bool
	start     time.Time
	base      int // the total at the first sample

	// The current sockets, densely, so a summary needs no copy. Each is
	// what the view needs of it, not a whole collector.Socket: at 45k
	// sockets that copy beside the poller's cache was a third of the heap.
	socks    []entry
	byCookie map[uint64]int // positions; a map keyed by an integer is fast
	byID     map[collector.SocketID]int
	gen      uint32
	epoch    time.Time      // moments count from it
	recent   []recentSocket // first seen within the highlight time

	procs   map[int]*proc
	total   series
	seriesN int

	summary    []collector.ProcessSummary
	summaryAt  time.Time
	dirty      bool
	host       string
	source     string
	warnings   []string
	lastSample time.Time
	closed     map[int]ClosedFDs // closed-socket fds by pid
}

// sockMeta is a socket's age bounds as moments, so they grow with the
// clock between updates: the socket entered its state at or before latest,
// and at or after earliest (zero: no such bound).
type sockMeta struct {
	latest, earliest time.Time
	known, exact     bool
}

// entry is one socket as the model keeps it: the fields the rows, the
// filter and the drill-down read, and its age bounds (see sockMeta).
type entry struct {
	local, remote        netip.AddrPort
	cookie, inode, netns uint64
	// holders are Socket.Holders: the owners, or for a socket in an
	// accept queue (queued), its listener's.
	holders          []collector.Owner
	causes           []collector.Cause
	latest, earliest moment
	first            moment // first seen by this watch; noMoment: there at the start
	recvQ            uint32
	gen              uint32
	family           collector.Family
	state            collector.State
	queued           bool
	known, exact     bool
}

// moment is a time as an offset from Model.epoch: a third of a time.Time.
type moment time.Duration

// noMoment stands for the zero time.Time.
const noMoment moment = math.MinInt64

type recentSocket struct {
	id    collector.SocketID
	first moment
}

// proc is one process's history.
type proc struct {
	comm     string
	base     int // count at the start of the watch; 0 for later processes
	hist     series
	lastSeen time.Time // last sample with sockets
	fds      collector.FDUsage
	fdsKnown bool
}

// rateWindow is the span rates are measured over: long enough to smooth a
// burst, short enough to show a leak speeding up.
const rateWindow = time.Minute

// sparkWidth is the number of samples a sparkline shows.
const sparkWidth = 24

// NewModel returns an empty model for samples taken every interval. New
// sockets count as new (highlighted) for highlight.
func NewModel(interval, highlight time.Duration) *Model {
	if interval <= 0 {
		interval = time.Second
	}
	// Enough samples for the rate window and the sparkline.
	n := max(int(rateWindow/interval)+2, sparkWidth)
	return &Model{
		highlight: highlight,
		byCookie:  map[uint64]int{},
		byID:      map[collector.SocketID]int{},
		procs:     map[int]*proc{},
		total:     newSeries(n),
		seriesN:   n,
	}
}

// Update applies what a poll (or the completion of tracer events) found.
// A full report replaces the socket set; sockets the model already knew
// keep when they were first seen and the tightest age bounds learned so
// far (an exact age from the tracer survives a poll that only has bounds).
func (m *Model) Update(ch *collector.Changes, now time.Time) {
	if ch.Host != "" {
		m.host = ch.Host
	}
	if ch.Source != "" {
		m.source = ch.Source
	}
	if len(ch.Warnings) > 0 {
		m.warnings = ch.Warnings
	}
	if !ch.Full {
		m.apply(ch.Sockets, ch.Gone, ch.Time, now)
		return
	}
	m.gen++
	m.socks = slices.Grow(m.socks, max(len(ch.Sockets)-len(m.socks), 0)) // no garbage of appends
	for i := range ch.Sockets {
		m.put(&ch.Sockets[i], ch.Time, now)
	}
	for i := 0; i < len(m.socks); {
		if m.socks[i].gen != m.gen {
			m.remove(i)
			continue
		}
		i++
	}
	m.dirty = true
}

// Leave removes sockets the tracer saw leave.
func (m *Model) Leave(ids []collector.SocketID, now time.Time) {
	m.apply(nil, ids, now, now)
}

// apply adds or updates sockets whose ages were measured at `at`, then
// removes those gone.
func (m *Model) apply(socks []collector.Socket, gone []collector.SocketID, at, now time.Time) {
	if len(socks) == 0 && len(gone) == 0 {
		return
	}
	m.gen++
	for i := range socks {
		m.put(&socks[i], at, now)
	}
	for _, id := range gone {
		if i, ok := m.find(id); ok {
			m.remove(i)
		}
	}
	m.dirty = true
}

// put adds or updates one socket whose ages were measured at `at`.
func (m *Model) put(s *collector.Socket, at, now time.Time) {
	id := s.ID()
	meta := ageMeta(s, at)
	if i, ok := m.find(id); ok {
		e := &m.socks[i]
		old := m.ages(e)
		mergeAges(&meta, &old)
		m.set(e, s, &meta)
		return
	}
	e := entry{first: noMoment}
	if m.started {
		e.first = m.moment(now)
		m.recent = append(m.recent, recentSocket{id, e.first})
	}
	m.set(&e, s, &meta)
	m.socks = append(m.socks, e)
	m.setIndex(id, len(m.socks)-1)
}

// set fills e from s and its merged age bounds, keeping e.first.
func (m *Model) set(e *entry, s *collector.Socket, meta *sockMeta) {
	queued := len(s.Owners) == 0 && len(s.Listener) > 0
	*e = entry{
		local: s.Local, remote: s.Remote,
		cookie: s.Cookie, inode: s.Inode, netns: s.NetNS,
		holders: s.Holders(), causes: s.Causes,
		latest: m.moment(meta.latest), earliest: m.moment(meta.earliest), first: e.first,
		recvQ: s.RecvQ, gen: m.gen,
		family: s.Family, state: s.State, queued: queued,
		known: meta.known, exact: meta.exact,
	}
}

// ages returns e's age bounds as times.
func (m *Model) ages(e *entry) sockMeta {
	return sockMeta{latest: m.time(e.latest), earliest: m.time(e.earliest), known: e.known, exact: e.exact}
}

func (m *Model) moment(t time.Time) moment {
	if t.IsZero() {
		return noMoment
	}
	if m.epoch.IsZero() {
		m.epoch = t
	}
	return moment(t.Sub(m.epoch))
}

func (m *Model) time(x moment) time.Time {
	if x == noMoment {
		return time.Time{}
	}
	return m.epoch.Add(time.Duration(x))
}

// id is the identity of e's socket, as Socket.ID.
func (e *entry) id() collector.SocketID {
	if e.cookie != 0 {
		return collector.SocketID{Cookie: e.cookie}
	}
	return collector.SocketID{Inode: e.inode, Local: e.local, Remote: e.remote, NetNS: e.netns}
}

// socket writes into s e's socket, with its ages as of now.
func (m *Model) socket(s *collector.Socket, e *entry, now time.Time) {
	*s = collector.Socket{
		Family: e.family, State: e.state, Local: e.local, Remote: e.remote,
		RecvQ: e.recvQ, Inode: e.inode, Cookie: e.cookie, NetNS: e.netns, Causes: e.causes,
	}
	if e.queued {
		s.Listener = e.holders
	} else {
		s.Owners = e.holders
	}
	if !e.known {
		return
	}
	since := now.Sub(m.epoch)
	s.Age, s.AgeKnown, s.AgeExact = since-time.Duration(e.latest), true, e.exact
	if e.earliest != noMoment {
		s.AgeMax = since - time.Duration(e.earliest)
	}
}

func ageMeta(s *collector.Socket, at time.Time) sockMeta {
	if !s.AgeKnown {
		return sockMeta{}
	}
	meta := sockMeta{known: true, exact: s.AgeExact, latest: at.Add(-s.Age)}
	switch {
	case s.AgeExact:
		meta.earliest = meta.latest
	case s.AgeMax > 0:
		meta.earliest = at.Add(-s.AgeMax)
	}
	return meta
}

// mergeAges keeps in meta the tightest bounds of meta and old.
func mergeAges(meta, old *sockMeta) {
	switch {
	case !old.known:
	case !meta.known || (old.exact && !meta.exact):
		meta.latest, meta.earliest, meta.known, meta.exact = old.latest, old.earliest, true, old.exact
	case !meta.exact:
		if old.latest.Before(meta.latest) {
			meta.latest = old.latest
		}
		if old.earliest.After(meta.earliest) {
			meta.earliest = old.earliest
		}
		meta.exact = !meta.earliest.IsZero() && !meta.earliest.Before(meta.latest)
		if meta.exact {
			meta.earliest = meta.latest
		}
	}
}

func (m *Model) find(id collector.SocketID) (int, bool) {
	if id.Cookie != 0 {
		i, ok := m.byCookie[id.Cookie]
		return i, ok
	}
	i, ok := m.byID[id]
	return i, ok
}

func (m *Model) setIndex(id collector.SocketID, i int) {
	if id.Cookie != 0 {
		m.byCookie[id.Cookie] = i
		return
	}
	m.byID[id] = i
}

// remove deletes the socket at i by moving the last one into its place.
func (m *Model) remove(i int) {
	id := m.socks[i].id()
	if id.Cookie != 0 {
		delete(m.byCookie, id.Cookie)
	} else {
		delete(m.byID, id)
	}
	last := len(m.socks) - 1
	if i != last {
		m.socks[i] = m.socks[last]
		m.setIndex(m.socks[i].id(), i)
	}
	m.socks[last] = entry{} // drop references for the GC
	m.socks = m.socks[:last]
}

// Sample records each process's count at now: the history behind rates,
// changes and sparklines. The first sample is the start of the watch.
func (m *Model) Sample(now time.Time) {
	if !m.started {
		m.started, m.start = true, now
		m.base = len(m.socks)
	}
	m.summarize(now)
	seen := map[int]bool{}
	for _, r := range m.summary {
		seen[r.PID] = true
		p := m.procs[r.PID]
		if p == nil {
			p = &proc{hist: newSeries(m.seriesN)}
			if now.Equal(m.start) {
				p.base = r.Sockets
			}
			m.procs[r.PID] = p
		}
		p.comm, p.lastSeen = r.Comm, now
		p.hist.add(now, r.Sockets)
	}
	for pid, p := range m.procs {
		if seen[pid] {
			continue
		}
		// A process whose sockets are gone stays a while, so a drop shows.
		if now.Sub(p.lastSeen) > rateWindow {
			delete(m.procs, pid)
			continue
		}
		p.hist.add(now, 0)
	}
	m.total.add(now, len(m.socks))
	m.lastSample = now
	cut := 0
	for cut < len(m.recent) && now.Sub(m.time(m.recent[cut].first)) > m.highlight {
		cut++
	}
	m.recent = slices.Delete(m.recent, 0, cut)
}

// summarize brings the per-process summary up to now. Without changes to
// the set since the last one, only the ages move, and they move together.
func (m *Model) summarize(now time.Time) {
	if !m.dirty && m.summary != nil {
		d := now.Sub(m.summaryAt)
		for i := range m.summary {
			if m.summary[i].OldestKnown {
				m.summary[i].Oldest += d
			}
		}
		m.summaryAt = now
		return
	}
	var s collector.Socket // one copy, reused
	m.summary = collector.SummarizeEach(len(m.socks), func(i int) *collector.Socket {
		m.socket(&s, &m.socks[i], now)
		return &s
	})
	m.summaryAt, m.dirty = now, false
}

// SetClosed records, by pid, the fds holding sockets the kernel closed.
func (m *Model) SetClosed(n map[int]ClosedFDs) { m.closed = n }

// SetFDs records a process's fd usage, read by the caller for the rows it
// shows: reading it for every process each interval would cost too much.
func (m *Model) SetFDs(pid int, u collector.FDUsage, ok bool) {
	if p := m.procs[pid]; p != nil {
		p.fds, p.fdsKnown = u, ok
	}
}

// Row is one process as the table shows it.
type Row struct {
	PID  int // 0: sockets without a visible owner
	Comm string
	// Count is the process's sockets now, Change the difference from the
	// start of the watch (a process that came later started at 0).
	Count, Change int
	// Rate is the change per minute over the last minute.
	Rate      float64
	RateKnown bool

	Oldest      time.Duration
	OldestKnown bool
	OldestExact bool
	// Cause is the cause of most of the process's sockets.
	Cause collector.Cause

	// Closed is the fds holding sockets the kernel already closed: a leak
	// one step further (see list --state closed).
	Closed int

	FDs      collector.FDUsage
	FDsKnown bool
	// LimitIn is when the open fds reach the limit at Rate; known only
	// while the count grows (0: at the limit already).
	LimitIn      time.Duration
	LimitInKnown bool

	Trend []int // the latest counts, oldest first
	New   int   // sockets first seen within the highlight time
}

// SortKey orders the process rows.
type SortKey int

// Sort orders, in the order the s key cycles through them.
const (
	SortCount  SortKey = iota // most sockets first
	SortRate                  // fastest growing first
	SortOldest                // oldest socket first
	SortLimit                 // nearest fd limit first
	SortPID                   // by pid
	sortKeys
)

var sortNames = [...]string{"count", "rate", "oldest", "fd limit", "pid"}

// String names the sort for the header.
func (k SortKey) String() string { return sortNames[k] }

// Next returns the sort after k, wrapping around.
func (k SortKey) Next() SortKey { return (k + 1) % sortKeys }

// Header is the summary line of the view.
type Header struct {
	Host, Source string
	Time         time.Time
	Total        int
	Change       int // since the start
	Rate         float64
	RateKnown    bool
	Warnings     []string
	// Filtered: Total, Change and Rate are those of the rows a filter
	// shows, out of All sockets.
	Filtered bool
	All      int
	Filter   string // the filter's text, shown after the count
}

// Header returns the totals as of the last sample.
func (m *Model) Header() Header {
	h := Header{Host: m.host, Source: m.source, Time: m.lastSample, Total: len(m.socks), Warnings: m.warnings}
	if m.started {
		h.Change = len(m.socks) - m.base
	}
	h.Rate, h.RateKnown = m.total.rate(rateWindow)
	return h
}

// FilteredHeader is the header for the rows a filter shows: the sockets
// those processes hold (each once), the sum of their changes, and of their
// rates when every one is known, so that no row contradicts it.
func (m *Model) FilteredHeader(rows []Row) Header {
	h := m.Header()
	h.Filtered, h.All = true, h.Total
	pids := map[int]bool{}
	h.Change, h.Rate, h.RateKnown = 0, 0, true
	for i := range rows {
		pids[rows[i].PID] = true
		h.Change += rows[i].Change
		h.Rate += rows[i].Rate
		h.RateKnown = h.RateKnown && rows[i].RateKnown
	}
	if !h.RateKnown {
		h.Rate = 0
	}
	h.Total = 0
	for i := range m.socks {
		if slices.ContainsFunc(ownerPIDs(m.socks[i].holders), func(pid int) bool { return pids[pid] }) {
			h.Total++
		}
	}
	return h
}

// Rows returns the process rows as of the last sample, those matching
// filter (see Filter), in the order of key.
func (m *Model) Rows(key SortKey, filter string) []Row {
	newBy := m.newByPID()
	var ports map[int]bool
	f := parseFilter(filter)
	if f.port != 0 {
		ports = m.pidsWithPort(f.port)
	}
	var rows []Row
	seen := map[int]bool{}
	for _, s := range m.summary {
		seen[s.PID] = true
		r := Row{
			PID: s.PID, Comm: s.Comm, Count: s.Sockets,
			Oldest: s.Oldest, OldestKnown: s.OldestKnown, OldestExact: s.OldestExact,
			Cause: mainCause(s.Causes), New: newBy[s.PID],
		}
		m.fill(&r)
		if f.match(&r, ports) {
			rows = append(rows, r)
		}
	}
	for pid, p := range m.procs {
		if seen[pid] {
			continue
		}
		seen[pid] = true
		r := Row{PID: pid, Comm: p.comm}
		m.fill(&r)
		if f.match(&r, ports) {
			rows = append(rows, r)
		}
	}
	// A process that holds only closed sockets leaks too.
	for pid, c := range m.closed {
		if seen[pid] || c.N == 0 {
			continue
		}
		r := Row{PID: pid, Comm: c.Comm}
		m.fill(&r)
		if f.match(&r, ports) {
			rows = append(rows, r)
		}
	}
	for i := range rows {
		rows[i].Closed = m.closed[rows[i].PID].N
	}
	sortRows(rows, key)
	return rows
}

// fill adds what the history knows to a row.
func (m *Model) fill(r *Row) {
	p := m.procs[r.PID]
	if p == nil {
		r.Change = r.Count
		return
	}
	r.Change = r.Count - p.base
	r.Rate, r.RateKnown = p.hist.rate(rateWindow)
	r.Trend = p.hist.tail(sparkWidth)
	r.FDs, r.FDsKnown = p.fds, p.fdsKnown
	r.LimitIn, r.LimitInKnown = forecast(p.fds, p.fdsKnown, r.Rate, r.RateKnown)
}

// forecast says when the open fds reach the limit if the count keeps
// growing at rate per minute: each CLOSE_WAIT socket leaks one fd.
func forecast(u collector.FDUsage, known bool, rate float64, rateKnown bool) (time.Duration, bool) {
	if !known || u.Limit <= 0 {
		return 0, false
	}
	left := u.Limit - u.Open
	if left <= 0 {
		return 0, true
	}
	if !rateKnown || rate <= 0 {
		return 0, false
	}
	minutes := float64(left) / rate
	if minutes > float64(math.MaxInt64)/float64(time.Minute) {
		return 0, false
	}
	return time.Duration(minutes * float64(time.Minute)), true
}

// mainCause picks the cause most sockets share; ties go to the more
// telling cause, in collector.AllCauses order.
func mainCause(counts map[collector.Cause]int) collector.Cause {
	var best collector.Cause
	n := 0
	for _, c := range collector.AllCauses {
		if counts[c] > n {
			best, n = c, counts[c]
		}
	}
	return best
}

func (m *Model) newByPID() map[int]int {
	out := map[int]int{}
	for _, r := range m.recent {
		i, ok := m.find(r.id)
		if !ok || m.socks[i].first != r.first {
			continue
		}
		for _, pid := range ownerPIDs(m.socks[i].holders) {
			out[pid]++
		}
	}
	return out
}

// ownerPIDs lists the distinct pids of a socket's holders (see
// Socket.Holders: for a socket in an accept queue, its listener's), or 0
// for none.
func ownerPIDs(holders []collector.Owner) []int {
	if len(holders) == 0 {
		return []int{0}
	}
	var pids []int
	for _, o := range holders {
		if !slices.Contains(pids, o.PID) {
			pids = append(pids, o.PID)
		}
	}
	return pids
}

func (m *Model) pidsWithPort(port uint16) map[int]bool {
	out := map[int]bool{}
	for i := range m.socks {
		e := &m.socks[i]
		if e.local.Port() == port || e.remote.Port() == port {
			for _, pid := range ownerPIDs(e.holders) {
				out[pid] = true
			}
		}
	}
	return out
}

// rowFilter is the parsed / filter: a number matches a port or a pid,
// anything else part of the command name, ignoring case.
type rowFilter struct {
	text string
	num  int
	port uint16
}

func parseFilter(s string) rowFilter {
	s = strings.TrimSpace(s)
	f := rowFilter{text: strings.ToLower(s)}
	if n, err := strconv.Atoi(s); err == nil && n > 0 {
		f.num = n
		if n <= math.MaxUint16 {
			f.port = uint16(n)
		}
	}
	return f
}

func (f rowFilter) match(r *Row, ports map[int]bool) bool {
	switch {
	case f.text == "":
		return true
	case f.num != 0:
		return r.PID == f.num || ports[r.PID]
	}
	return strings.Contains(strings.ToLower(r.Comm), f.text)
}

func sortRows(rows []Row, key SortKey) {
	slices.SortStableFunc(rows, func(a, b Row) int {
		var c int
		switch key {
		case SortRate:
			c = cmp.Or(cmpKnown(a.RateKnown, b.RateKnown), cmp.Compare(b.Rate, a.Rate))
		case SortOldest:
			c = cmp.Or(cmpKnown(a.OldestKnown, b.OldestKnown), cmp.Compare(b.Oldest, a.Oldest))
		case SortLimit:
			c = cmp.Or(cmpKnown(a.LimitInKnown, b.LimitInKnown), cmp.Compare(a.LimitIn, b.LimitIn))
		case SortPID:
			return cmp.Compare(a.PID, b.PID)
		}
		return cmp.Or(c, cmp.Compare(b.Count, a.Count), cmp.Compare(a.PID, b.PID))
	})
}

// cmpKnown puts known values before unknown ones.
func cmpKnown(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	}
	return 1
}

// SocketRow is one socket of a process, for the drill-down view.
type SocketRow struct {
	FDs    []int // the process's fds for the socket
	Socket collector.Socket
	New    bool
}

// Sockets returns the sockets pid holds, or waits to accept (no fds yet;
// pid 0: those without a visible owner), oldest first, or newest first with newest set. A numeric filter
// keeps the sockets on that port.
func (m *Model) Sockets(pid int, filter string, newest bool) []SocketRow {
	f := parseFilter(filter)
	now := m.lastSample
	var out []SocketRow
	for i := range m.socks {
		e := &m.socks[i]
		if !slices.Contains(ownerPIDs(e.holders), pid) {
			continue
		}
		if f.port != 0 && f.num != pid && e.local.Port() != f.port && e.remote.Port() != f.port {
			continue
		}
		r := SocketRow{New: e.first != noMoment && now.Sub(m.time(e.first)) <= m.highlight}
		m.socket(&r.Socket, e, now)
		for _, o := range r.Socket.Owners {
			if o.PID == pid {
				r.FDs = append(r.FDs, o.FD)
			}
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b SocketRow) int {
		x, y := &a.Socket, &b.Socket
		c := cmp.Or(cmpKnown(x.AgeKnown, y.AgeKnown), cmp.Compare(y.Age, x.Age))
		if newest {
			c = cmp.Or(cmpKnown(x.AgeKnown, y.AgeKnown), cmp.Compare(x.Age, y.Age))
		}
		return cmp.Or(c, x.Local.Compare(y.Local), x.Remote.Compare(y.Remote))
	})
	return out
}

// Started reports whether a sample has been taken.
func (m *Model) Started() bool { return m.started }
