package report

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/closewait/closewait/collector"
)

// TraceJSON is one line of "closewait trace -o jsonl".
type TraceJSON struct {
	Time     time.Time   `json:"time"`
	Event    string      `json:"event"` // enter, leave, transition
	OldState string      `json:"old_state"`
	NewState string      `json:"new_state"`
	Family   string      `json:"family"`
	Local    string      `json:"local"`
	Remote   string      `json:"remote"`
	Cookie   uint64      `json:"cookie"` // 0 with the classic tracepoint
	Inode    uint64      `json:"inode"`  // 0 when no fd was ever attached
	Owners   []OwnerJSON `json:"owners"`
	// OwnersUnknown: see collector.Event.
	OwnersUnknown bool `json:"owners_unknown,omitempty"`
	// CloseWaitSeconds is the time spent in CLOSE_WAIT, on leaving it,
	// when the entry was seen; absent otherwise.
	CloseWaitSeconds *float64 `json:"close_wait_seconds,omitempty"`
}

// TraceWriter prints events as table lines or JSON lines.
type TraceWriter struct {
	w      io.Writer
	enc    *json.Encoder // JSON lines; nil for the table
	header bool
}

// NewTraceWriter writes a table to w, or with jsonl one JSON object per
// line.
func NewTraceWriter(w io.Writer, jsonl bool) *TraceWriter {
	tw := &TraceWriter{w: w}
	if jsonl {
		tw.enc = json.NewEncoder(w)
	}
	return tw
}

const traceTableFormat = "%-12s %7s %-15s %4s %-22s %-22s %-26s %s\n"

// Write prints one event.
func (tw *TraceWriter) Write(e *collector.Event) error {
	s := &e.Socket
	if tw.enc != nil {
		doc := TraceJSON{
			Time:          e.Time,
			Event:         e.Kind(),
			OldState:      e.From.String(),
			NewState:      s.State.String(),
			Family:        s.Family.String(),
			Local:         Addr(s.Local),
			Remote:        Addr(s.Remote),
			Cookie:        s.Cookie,
			Inode:         s.Inode,
			Owners:        []OwnerJSON{},
			OwnersUnknown: e.OwnersUnknown,
		}
		for _, o := range s.Owners {
			doc.Owners = append(doc.Owners, OwnerJSON{PID: o.PID, Comm: o.Comm, FD: o.FD})
		}
		if e.InCloseWaitKnown {
			s := e.InCloseWait.Round(time.Millisecond).Seconds()
			doc.CloseWaitSeconds = &s
		}
		return tw.enc.Encode(doc)
	}
	if !tw.header {
		tw.header = true
		if _, err := fmt.Fprintf(tw.w, traceTableFormat, "TIME", "PID", "COMMAND", "FD", "LOCAL", "REMOTE", "TRANSITION", "IN CLOSE_WAIT"); err != nil {
			return err
		}
	}
	pid, comm, fd := "-", "-", "-"
	if e.OwnersUnknown {
		pid, comm, fd = "?", "?", "?"
	}
	if len(s.Owners) > 0 {
		o := s.Owners[0]
		pid, comm, fd = fmt.Sprint(o.PID), strings.ReplaceAll(Printable(o.Comm), " ", "?"), fmt.Sprint(o.FD)
		if len(s.Owners) > 1 {
			pid += fmt.Sprintf("+%d", len(s.Owners)-1)
		}
	}
	dur := ""
	if e.InCloseWaitKnown {
		dur = e.InCloseWait.Round(time.Millisecond).String()
	} else if e.Kind() == "leave" {
		dur = "?" // entered before the trace, no tracer installed
	}
	transition := e.From.String() + " -> " + s.State.String()
	_, err := fmt.Fprintf(tw.w, traceTableFormat, e.Time.Format("15:04:05.000"), pid, comm, fd,
		Addr(unmapped(s.Local)), Addr(unmapped(s.Remote)), transition, dur)
	return err
}
