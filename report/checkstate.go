package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/closewait/closewait/collector"
)

// CheckStateSchema is the value of CheckState.Schema. A file with any other
// value is not one of ours, or is from a version this one cannot read.
const CheckStateSchema = "closewait/check-state/v1"

// maxCheckState bounds how much of a state file is read: 45k sockets take
// about 6 MiB, and a path pointing at something huge must not exhaust memory.
const maxCheckState = 64 << 20

// CheckState is what `closewait check --state-file` remembers between
// runs: when each socket was first seen, and the counts growth is measured
// from.
type CheckState struct {
	Schema string    `json:"schema"` // always CheckStateSchema
	Host   string    `json:"host"`   // the machine it describes
	Scope  string    `json:"scope"`  // the states and filters counted; see SameScope
	Time   time.Time `json:"time"`   // when the run that wrote it collected
	Count  int       `json:"count"`  // sockets counted
	// Processes holds each process's count, for per-process growth.
	Processes []CheckStateProcess `json:"processes"`
	// Sockets holds the sockets counted, with the time each was first seen.
	Sockets []CheckStateSocket `json:"sockets"`
}

// CheckStateProcess is one process's count in a CheckState.
type CheckStateProcess struct {
	PID     int    `json:"pid"`
	Comm    string `json:"comm"`
	Sockets int    `json:"sockets"`
}

// CheckStateSocket is one socket in a CheckState, with the time a run first
// saw it in State. Sockets are matched by state and cookie when both runs
// know the cookie; the procfs source has none, so then by state, local and
// remote address and inode, which no two live sockets share. A socket that
// changed state is new to its new state. Entries without a state (files of
// earlier versions) match nothing.
type CheckStateSocket struct {
	Cookie    uint64    `json:"cookie,omitempty"`
	State     string    `json:"state,omitempty"`
	Local     string    `json:"local"`
	Remote    string    `json:"remote"`
	Inode     uint64    `json:"inode"`
	FirstSeen time.Time `json:"first_seen"`
}

func newStateSocket(s *collector.Socket, first time.Time) CheckStateSocket {
	return CheckStateSocket{
		Cookie:    s.Cookie,
		State:     s.State.String(),
		Local:     Addr(s.Local),
		Remote:    Addr(s.Remote),
		Inode:     s.Inode,
		FirstSeen: first.UTC(),
	}
}

// ErrForeignState is wrapped by ReadCheckState and SameScope when a file is
// readable but not a state this run can use: another program's file, a
// newer schema, another host or another set of filters.
var ErrForeignState = errors.New("not a state file of this check")

// ErrCorruptState is wrapped by ReadCheckState when a file does not decode
// as a state: truncated, edited, or not JSON at all.
var ErrCorruptState = errors.New("corrupt state file")

// ReadCheckState decodes a state file. An error wrapping ErrCorruptState or
// ErrForeignState means the caller should warn and start afresh; any other
// is a failure to read.
func ReadCheckState(r io.Reader) (*CheckState, error) {
	// Read first, then decode: a read error is a failure to read, any
	// decoding error a corrupt file.
	b, err := io.ReadAll(io.LimitReader(r, maxCheckState+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCheckState {
		return nil, fmt.Errorf("%w: larger than %d MiB", ErrCorruptState, maxCheckState>>20)
	}
	var st CheckState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorruptState, err)
	}
	if st.Schema != CheckStateSchema {
		return nil, fmt.Errorf("schema %q, want %q: %w", st.Schema, CheckStateSchema, ErrForeignState)
	}
	if st.Time.IsZero() || st.Count < 0 {
		return nil, fmt.Errorf("%w: no time or a negative count", ErrCorruptState)
	}
	for _, s := range st.Sockets {
		// An address that does not parse would never match a socket again:
		// the file was edited or damaged.
		if _, err := netip.ParseAddrPort(s.Local); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrCorruptState, err)
		}
		if s.FirstSeen.IsZero() {
			return nil, fmt.Errorf("%w: a socket without first_seen", ErrCorruptState)
		}
	}
	return &st, nil
}

// Write encodes the state as one JSON document.
func (s *CheckState) Write(w io.Writer) error {
	return json.NewEncoder(w).Encode(s)
}

// SameScope returns an ErrForeignState error when the state was written on
// another host or for other states and filters: first-seen times would
// still hold, but growth would compare different things.
func (s *CheckState) SameScope(host, scope string) error {
	switch {
	case s.Host != host:
		return fmt.Errorf("written on host %q, this is %q: %w", s.Host, host, ErrForeignState)
	case s.Scope != scope:
		return fmt.Errorf("written for %q, this run counts %q: %w", s.Scope, scope, ErrForeignState)
	}
	return nil
}

type cookieKey struct {
	state  string
	cookie uint64
}

type tupleKey struct {
	state, local, remote string
	inode                uint64
}

// seenIndex finds a socket's first-seen time in a previous state.
type seenIndex struct {
	byCookie map[cookieKey]time.Time
	byTuple  map[tupleKey]time.Time
}

func (s *CheckState) index() seenIndex {
	var ix seenIndex
	if s == nil {
		return ix
	}
	ix.byCookie = make(map[cookieKey]time.Time, len(s.Sockets))
	ix.byTuple = make(map[tupleKey]time.Time, len(s.Sockets))
	for _, ss := range s.Sockets {
		if ss.State == "" {
			continue
		}
		if ss.Cookie != 0 {
			ix.byCookie[cookieKey{ss.State, ss.Cookie}] = ss.FirstSeen
		}
		ix.byTuple[tupleKey{ss.State, ss.Local, ss.Remote, ss.Inode}] = ss.FirstSeen
	}
	return ix
}

// firstSeen matches by state and cookie when the socket has a cookie and
// the file knows it; otherwise (procfs, or a file a procfs run wrote) by
// state, 4-tuple and inode.
func (ix seenIndex) firstSeen(s *collector.Socket) (time.Time, bool) {
	state := s.State.String()
	if s.Cookie != 0 {
		if t, ok := ix.byCookie[cookieKey{state, s.Cookie}]; ok {
			return t, true
		}
	}
	t, ok := ix.byTuple[tupleKey{state, Addr(s.Local), Addr(s.Remote), s.Inode}]
	return t, ok
}

type procKey struct {
	pid  int
	comm string
}

// processCounts keys counts by pid and command name, so a reused pid does
// not inherit another program's count.
func (s *CheckState) processCounts() map[procKey]int {
	m := map[procKey]int{}
	if s == nil {
		return m
	}
	for _, p := range s.Processes {
		m[procKey{p.PID, p.Comm}] += p.Sockets
	}
	return m
}
