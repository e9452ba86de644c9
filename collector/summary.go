package collector

import (
	"cmp"
	"slices"
	"time"
)

// ProcessSummary is one process's share of a snapshot: how many of the
// sockets it holds, the oldest of them, and why they are stuck.
type ProcessSummary struct {
	// PID is the owning process (for sockets in an accept queue, the
	// listener's); 0 for the row that gathers sockets with no visible owner
	// (a listener no process holds, a kernel socket, or another user's
	// process while not root).
	PID int
	// Comm is the command name; "-" in the PID 0 row.
	Comm string
	// Sockets counts the sockets the process holds, each once however many
	// fds of the process point at it.
	Sockets int
	// Oldest is the largest age among the process's sockets, meaningful
	// only when OldestKnown. OldestExact is false when Oldest is only a
	// lower bound: one of the sockets has an inexact or unknown age that
	// could make it older than Oldest.
	Oldest      time.Duration
	OldestKnown bool
	OldestExact bool
	// Causes counts the process's sockets by cause; a socket with several
	// causes counts once under each.
	Causes map[Cause]int
}

// Summarize groups the snapshot's sockets by owning process. A socket held
// by several processes (an fd inherited across fork) counts once for each
// of them, since each must close it before the connection closes. Rows come
// most sockets first, then oldest first, then by pid.
func Summarize(snap *Snapshot) []ProcessSummary {
	return SummarizeEach(len(snap.Sockets), func(i int) *Socket { return &snap.Sockets[i] })
}

// SummarizeEach is Summarize over n sockets that at returns by index, for
// a caller that keeps its sockets in another form (watch): the socket at
// returns is read only until the next call, so it may be one reused copy.
func SummarizeEach(n int, at func(i int) *Socket) []ProcessSummary {
	var rows []ProcessSummary
	var causes [][]causeCount // causes[i]: rows[i]'s counts, until the end
	index := map[int]int{}    // pid -> position in rows
	last := -1                // rows[last] had the previous owner: sockets come in runs
	row := func(pid int, comm string) int {
		if last >= 0 && rows[last].PID == pid {
			return last
		}
		i, ok := index[pid]
		if !ok {
			i = len(rows)
			index[pid] = i
			rows = append(rows, ProcessSummary{PID: pid, Comm: comm})
			causes = append(causes, nil)
		}
		last = i
		return i
	}
	// The first pass counts and finds each row's oldest age; the second
	// decides exactness, which depends on the final oldest age: a
	// lower-bound socket keeps Oldest exact only when its upper bound
	// cannot pass Oldest. Two passes over the sockets hold no per-row
	// socket lists.
	for i := range n {
		s := at(i)
		holders := s.Holders() // a socket in an accept queue: its listener's
		for j, o := range holders {
			if slices.ContainsFunc(holders[:j], func(p Owner) bool { return p.PID == o.PID }) {
				continue // one process, two fds: the socket counts once
			}
			k := row(o.PID, o.Comm)
			rows[k].add(s)
			causes[k] = countCauses(causes[k], s.Causes)
		}
		if len(holders) == 0 {
			k := row(0, "-")
			rows[k].add(s)
			causes[k] = countCauses(causes[k], s.Causes)
		}
	}
	for i := range rows {
		rows[i].OldestExact = rows[i].OldestKnown
	}
	for i := range n {
		s := at(i)
		holders := s.Holders()
		for _, o := range holders {
			rows[row(o.PID, "")].checkExact(s)
		}
		if len(holders) == 0 {
			rows[row(0, "")].checkExact(s)
		}
	}
	for i := range rows {
		rows[i].Causes = make(map[Cause]int, len(causes[i]))
		for _, c := range causes[i] {
			rows[i].Causes[c.cause] = c.n
		}
	}
	slices.SortFunc(rows, func(a, b ProcessSummary) int {
		if c := cmp.Compare(b.Sockets, a.Sockets); c != 0 {
			return c
		}
		if c := CompareAge(b.Oldest, b.OldestKnown, a.Oldest, a.OldestKnown); c != 0 {
			return c
		}
		return cmp.Compare(a.PID, b.PID)
	})
	return rows
}

// add counts s and keeps the oldest age.
func (p *ProcessSummary) add(s *Socket) {
	p.Sockets++
	if s.AgeKnown && (!p.OldestKnown || s.Age > p.Oldest) {
		p.Oldest, p.OldestKnown = s.Age, true
	}
}

// checkExact clears OldestExact when s could be older than Oldest.
func (p *ProcessSummary) checkExact(s *Socket) {
	if p.OldestExact && (!s.AgeKnown || (!s.AgeExact && (s.AgeMax == 0 || s.AgeMax > p.Oldest))) {
		p.OldestExact = false
	}
}

// causeCount is one cause's count. A process has a handful of causes, so a
// slice scanned linearly counts faster than a map hashing each name.
type causeCount struct {
	cause Cause
	n     int
}

func countCauses(counts []causeCount, causes []Cause) []causeCount {
next:
	for _, c := range causes {
		for i := range counts {
			if counts[i].cause == c {
				counts[i].n++
				continue next
			}
		}
		counts = append(counts, causeCount{c, 1})
	}
	return counts
}

// CompareAge orders ages with unknown ones below every known one.
func CompareAge(a time.Duration, aKnown bool, b time.Duration, bKnown bool) int {
	if aKnown != bKnown {
		if aKnown {
			return 1
		}
		return -1
	}
	return cmp.Compare(a, b)
}

// OrderedCauses lists the causes present in counts in AllCauses
// order (most telling first), then any cause this package does not know,
// by name, so a newer collector's cause is never dropped.
func OrderedCauses(counts map[Cause]int) []Cause {
	var out []Cause
	for _, c := range AllCauses {
		if counts[c] > 0 {
			out = append(out, c)
		}
	}
	var extra []Cause
	for c, n := range counts {
		if n > 0 && !slices.Contains(AllCauses, c) {
			extra = append(extra, c)
		}
	}
	slices.Sort(extra)
	return append(out, extra...)
}
