package check

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/closewait/closewait/collector"
)

// StateSchema is the value of State.Schema. A file with any other
// value is not one of ours, or is from a version this one cannot read.
const StateSchema = "closewait/check-state/v1"

// maxState bounds how much of a state file is read: 45k sockets take
// about 6 MiB, and a path pointing at something huge must not exhaust memory.
const maxState = 64 << 20

// State is what `closewait check --state-file` remembers between
// runs: when each socket was first seen, and the counts growth is measured
// from.
type State struct {
	Schema string    `json:"schema"` // always StateSchema
	Host   string    `json:"host"`   // the machine it describes
	Scope  string    `json:"scope"`  // the states and filters counted; see SameScope
	Time   time.Time `json:"time"`   // when the run that wrote it collected
	Count  int       `json:"count"`  // sockets counted
	// Processes holds each process's count, for per-process growth.
	Processes []StateProcess `json:"processes"`
	// Sockets holds the sockets counted, with the time each was first seen.
	Sockets []StateSocket `json:"sockets"`
}

// StateProcess is one process's count in a State.
type StateProcess struct {
	PID     int    `json:"pid"`
	Comm    string `json:"comm"`
	Sockets int    `json:"sockets"`
}

// StateSocket is one socket in a State, with the time a run first
// saw it in State. Sockets are matched by state and cookie when both runs
// know the cookie; the procfs source has none, so then by state, local and
// remote address and inode, which no two live sockets share. A socket that
// changed state is new to its new state. Entries without a state (files of
// earlier versions) match nothing.
type StateSocket struct {
	Cookie    uint64    `json:"cookie,omitempty"`
	State     string    `json:"state,omitempty"`
	Local     string    `json:"local"`
	Remote    string    `json:"remote"`
	Inode     uint64    `json:"inode"`
	FirstSeen time.Time `json:"first_seen"`
}

func newStateSocket(s *collector.Socket, first time.Time) StateSocket {
	return StateSocket{
		Cookie:    s.Cookie,
		State:     s.State.String(),
		Local:     addr(s.Local),
		Remote:    addr(s.Remote),
		Inode:     s.Inode,
		FirstSeen: first.UTC(),
	}
}

// ErrForeignState is wrapped by ReadState and SameScope when a file is
// readable but not a state this run can use: another program's file, a
// newer schema, another host or another set of filters.
var ErrForeignState = errors.New("not a state file of this check")

// ErrCorruptState is wrapped by ReadState when a file does not decode
// as a state: truncated, edited, or not JSON at all.
var ErrCorruptState = errors.New("corrupt state file")

// ReadState decodes a state file. An error wrapping ErrCorruptState or
// ErrForeignState means the caller should warn and start afresh; any other
// is a failure to read.
func ReadState(r io.Reader) (*State, error) {
	// Read first, then decode: a read error is a failure to read, any
	// decoding error a corrupt file.
	b, err := io.ReadAll(io.LimitReader(r, maxState+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxState {
		return nil, fmt.Errorf("%w: larger than %d MiB", ErrCorruptState, maxState>>20)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorruptState, err)
	}
	if st.Schema != StateSchema {
		return nil, fmt.Errorf("schema %q, want %q: %w", st.Schema, StateSchema, ErrForeignState)
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
func (s *State) Write(w io.Writer) error {
	return json.NewEncoder(w).Encode(s)
}

// SameScope returns an ErrForeignState error when the state was written on
// another host or for other states and filters: first-seen times would
// still hold, but growth would compare different things.
func (s *State) SameScope(host, scope string) error {
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

func (s *State) index() seenIndex {
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
	t, ok := ix.byTuple[tupleKey{state, addr(s.Local), addr(s.Remote), s.Inode}]
	return t, ok
}

type procKey struct {
	pid  int
	comm string
}

// processCounts keys counts by pid and command name, so a reused pid does
// not inherit another program's count.
func (s *State) processCounts() map[procKey]int {
	m := map[procKey]int{}
	if s == nil {
		return m
	}
	for _, p := range s.Processes {
		m[procKey{p.PID, p.Comm}] += p.Sockets
	}
	return m
}

// addr is the address as the file keeps it: "*" for a listener's remote.
func addr(a netip.AddrPort) string {
	if !a.IsValid() {
		return "*"
	}
	return a.String()
}

// LoadFile reads the previous run's state. A missing file is a first
// run; a corrupt or foreign one gives a warning and a fresh start (nil
// state). Only a file that cannot be read at all is an error.
func LoadFile(path, host, scope string) (st *State, warning string, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	st, err = ReadState(f)
	if err == nil {
		err = st.SameScope(host, scope)
	}
	switch {
	case err == nil:
		return st, "", nil
	case errors.Is(err, ErrCorruptState) || errors.Is(err, ErrForeignState):
		return nil, fmt.Sprintf("state file %s: %v; starting afresh", path, err), nil
	}
	return nil, "", err
}

// writeFileAtomic writes a file through a temporary file in the same
// directory and a rename, so a reader (or the next run after a crash)
// sees the old contents or the new, never half of either.
func writeFileAtomic(path string, mode os.FileMode, write func(io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 64<<10)
	if err = write(bw); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return err
	}
	if err = tmp.Chmod(mode); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil { // the rename must not land before the data
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil { // best effort: persist the rename
		d.Sync()
		d.Close()
	}
	return nil
}

// WriteFile replaces the file at path with the state, atomically.
func (s *State) WriteFile(path string) error {
	return writeFileAtomic(path, 0o644, s.Write)
}
