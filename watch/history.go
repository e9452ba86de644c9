package watch

import "time"

// sample is a count at a moment.
type sample struct {
	t time.Time
	n int
}

// series keeps the latest samples of a count in a ring, enough for the
// rate window and the sparkline, so memory stays flat however long the
// watch runs.
type series struct {
	buf  []sample
	head int // next write position
	full bool
}

func newSeries(capacity int) series {
	return series{buf: make([]sample, capacity)}
}

func (s *series) add(t time.Time, n int) {
	s.buf[s.head] = sample{t, n}
	s.head++
	if s.head == len(s.buf) {
		s.head, s.full = 0, true
	}
}

func (s *series) len() int {
	if s.full {
		return len(s.buf)
	}
	return s.head
}

// at returns the i-th sample, oldest first.
func (s *series) at(i int) sample {
	if s.full {
		return s.buf[(s.head+i)%len(s.buf)]
	}
	return s.buf[i]
}

// rate is the change per minute over the last window, measured from the
// oldest sample inside it. It is unknown until the series spans the window
// (less a twentieth, for the timer's jitter): a burst in the first seconds
// is no rate.
func (s *series) rate(window time.Duration) (float64, bool) {
	n := s.len()
	if n < 2 {
		return 0, false
	}
	last := s.at(n - 1)
	if last.t.Sub(s.at(0).t) < window-window/20 {
		return 0, false
	}
	from := s.at(n - 2)
	for i := n - 2; i >= 0; i-- {
		if last.t.Sub(s.at(i).t) > window {
			break
		}
		from = s.at(i)
	}
	span := last.t.Sub(from.t)
	if span <= 0 {
		return 0, false
	}
	return float64(last.n-from.n) / span.Minutes(), true
}

// tail returns up to n of the latest counts, oldest first.
func (s *series) tail(n int) []int {
	l := s.len()
	n = min(n, l)
	out := make([]int, n)
	for i := range n {
		out[i] = s.at(l - n + i).n
	}
	return out
}

// sparkBlocks are the eight heights of a sparkline cell.
var sparkBlocks = []rune("▁▂▃▄▅▆▇█")

// Sparkline draws counts as block characters scaled between their minimum
// and maximum, so a slow leak on a big count still shows its slope. A flat
// series draws at the bottom.
func Sparkline(counts []int) string {
	if len(counts) == 0 {
		return ""
	}
	lo, hi := counts[0], counts[0]
	for _, c := range counts {
		lo, hi = min(lo, c), max(hi, c)
	}
	out := make([]rune, len(counts))
	for i, c := range counts {
		level := 0
		if hi > lo {
			level = (c - lo) * (len(sparkBlocks) - 1) / (hi - lo)
		}
		out[i] = sparkBlocks[level]
	}
	return string(out)
}
