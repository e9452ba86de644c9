package report

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/closewait/closewait/collector"
)

// SchemaKeepaliveV1 is the schema of closewait keepalive's JSON document.
const SchemaKeepaliveV1 = "closewait/keepalive/v1"

// KeepaliveDocument is the closewait/keepalive/v1 JSON document. Values
// the source cannot know are null, never 0.
type KeepaliveDocument struct {
	Schema    string                 `json:"schema"` // always SchemaKeepaliveV1
	Host      string                 `json:"host"`
	Time      time.Time              `json:"time"`
	Source    string                 `json:"source"` // ebpf, netlink or procfs
	Warnings  []string               `json:"warnings"`
	Sockets   []KeepaliveSocketJSON  `json:"sockets"`
	Processes []KeepaliveProcessJSON `json:"processes"`
}

// KeepaliveSocketJSON is one socket of a KeepaliveDocument.
type KeepaliveSocketJSON struct {
	State  string      `json:"state"`
	Local  string      `json:"local"`
	Remote string      `json:"remote"`
	Owners []OwnerJSON `json:"owners"`
	// Keepalive is SO_KEEPALIVE; null when the source cannot tell.
	Keepalive *bool `json:"keepalive"`
	// The timers are the socket's own or the sysctl defaults it falls
	// back to; null unless the source reads them (ebpf).
	KeepaliveIdleSeconds     *float64 `json:"keepalive_idle_seconds"`
	KeepaliveIntervalSeconds *float64 `json:"keepalive_interval_seconds"`
	KeepaliveProbes          *int     `json:"keepalive_probes"`
	// KeepaliveTimersFrom says where the three timers come from:
	// "socket" (all set on the socket), "sysctl" (all defaults), "mixed";
	// null when unknown.
	KeepaliveTimersFrom *string `json:"keepalive_timers_from"`
	// UserTimeoutSeconds is TCP_USER_TIMEOUT: null when unset or unknown.
	UserTimeoutSeconds *float64 `json:"user_timeout_seconds"`
	// IdleSeconds is the time since the peer last sent anything.
	IdleSeconds *float64 `json:"idle_seconds"`
	// DeadPeerDetectSeconds is how long after the peer's last segment
	// the kernel gives up on it: null when it never would or is unknown;
	// DetectsDeadPeer says which (false: never, null: unknown).
	DeadPeerDetectSeconds *float64 `json:"dead_peer_detect_seconds"`
	DetectsDeadPeer       *bool    `json:"detects_dead_peer"`
	// PeerUnresponsive: retransmissions or keepalive probes go
	// unanswered now; idle_seconds is how long the peer has been silent.
	// Also the cause "peer-unresponsive". False when the source cannot
	// tell (procfs).
	PeerUnresponsive bool `json:"peer_unresponsive"`
	// Causes, for a CLOSE socket, is ["closed-not-released"]; Error the
	// socket's pending error ("ECONNRESET"), null when none is known.
	Causes []collector.Cause `json:"causes"`
	Error  *string           `json:"error"`
}

// KeepaliveProcessJSON sums up one process's connections.
type KeepaliveProcessJSON struct {
	PID              int      `json:"pid"`
	Comm             string   `json:"comm"`
	Sockets          int      `json:"sockets"`
	KeepaliveOn      int      `json:"keepalive_on"`
	KeepaliveOff     int      `json:"keepalive_off"`
	KeepaliveUnknown int      `json:"keepalive_unknown"`
	Closed           int      `json:"closed"`                       // CLOSE: dropped by the kernel, fd kept
	MaxDetectSeconds *float64 `json:"max_dead_peer_detect_seconds"` // of those with keepalive on; null unknown
	Summary          string   `json:"summary"`                      // the table's summary line
}

// NewKeepaliveDocument builds the JSON document of a keepalive audit.
func NewKeepaliveDocument(a *collector.KeepaliveAudit) KeepaliveDocument {
	doc := KeepaliveDocument{
		Schema:    SchemaKeepaliveV1,
		Host:      a.Host,
		Time:      a.Time,
		Source:    a.Source,
		Warnings:  append([]string{}, a.Warnings...),
		Sockets:   make([]KeepaliveSocketJSON, 0, len(a.Audited)),
		Processes: make([]KeepaliveProcessJSON, 0, len(a.Processes)),
	}
	for i := range a.Audited {
		s := &a.Audited[i]
		j := KeepaliveSocketJSON{
			State:  s.State.String(),
			Local:  Addr(s.Local),
			Remote: Addr(s.Remote),
			Owners: ownersJSON(s.Holders()),
			Causes: append([]collector.Cause{}, s.Causes...),
			Error:  errnoName(s.SockErr),

			PeerUnresponsive: s.Unresponsive,
		}
		if s.KeepaliveKnown {
			j.Keepalive = &s.DeadPeer.Keepalive
		}
		if s.TimersKnown {
			j.KeepaliveIdleSeconds = seconds(s.DeadPeer.Idle)
			j.KeepaliveIntervalSeconds = seconds(s.Interval)
			j.KeepaliveProbes = &s.Probes
			from := "mixed"
			switch s.Own {
			case 0:
				from = "sysctl"
			case collector.KeepaliveOwnAll:
				from = "socket"
			}
			j.KeepaliveTimersFrom = &from
		}
		if s.UserTimeoutKnown && s.UserTimeout > 0 {
			j.UserTimeoutSeconds = seconds(s.UserTimeout)
		}
		if s.IdleKnown {
			j.IdleSeconds = seconds(s.Socket.Idle)
		}
		if s.DetectKnown {
			detects := !s.Never
			j.DetectsDeadPeer = &detects
			if detects {
				j.DeadPeerDetectSeconds = seconds(s.Detect)
			}
		}
		doc.Sockets = append(doc.Sockets, j)
	}
	for i := range a.Processes {
		p := &a.Processes[i]
		j := KeepaliveProcessJSON{
			PID: p.PID, Comm: p.Comm, Sockets: p.Sockets,
			KeepaliveOn: p.On, KeepaliveOff: p.Off, KeepaliveUnknown: p.Unknown(),
			Closed:  p.Closed,
			Summary: keepaliveLine(p, a.Source),
		}
		if p.On > 0 && p.TimersKnown == p.On {
			j.MaxDetectSeconds = seconds(p.MaxDetect)
		}
		doc.Processes = append(doc.Processes, j)
	}
	return doc
}

// KeepaliveJSON writes the audit as one closewait/keepalive/v1 document.
func KeepaliveJSON(w io.Writer, a *collector.KeepaliveAudit) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(NewKeepaliveDocument(a))
}

// KeepaliveTable writes a row per socket (a continuation row per extra
// owner), a blank line and a summary line per process; with summaryOnly
// just the lines. KEEPALIVE is "off", "on" (timers unknown), or idle +
// interval x probes ("5s+5sx3"); UTO appears when a socket has a user
// timeout; IDLE ends in "!" when the peer answers nothing now
// (peer-unresponsive); DETECT is the time to notice a dead peer, "never",
// or "-".
func KeepaliveTable(w io.Writer, a *collector.KeepaliveAudit, summaryOnly bool) error {
	if len(a.Audited) == 0 {
		_, err := fmt.Fprintln(w, "no connections")
		return err
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	if !summaryOnly {
		if err := keepaliveRows(bw, a.Audited); err != nil {
			return err
		}
		bw.WriteByte('\n')
	}
	for i := range a.Processes {
		writeKeepaliveLines(bw, &a.Processes[i], a.Source)
	}
	if err := ClosedNote(bw, a.Snapshot.Sockets); err != nil {
		return err
	}
	return bw.Flush()
}

// keepaliveRows writes the socket rows with a columnWriter, as the list's
// socket table does: each row is formatted twice (measured, then written)
// rather than kept, so 85,000 rows cost no per-row allocation.
func keepaliveRows(w *bufio.Writer, socks []collector.KeepaliveSocket) error {
	withState, withUTO := false, false
	for i := range socks {
		withState = withState || socks[i].State != socks[0].State
		withUTO = withUTO || socks[i].UserTimeout > 0
	}
	header := []string{"PID", "COMMAND"}
	right := []bool{true, false}
	if withState {
		header, right = append(header, "STATE"), append(right, false)
	}
	header = append(header, "LOCAL", "REMOTE", "KEEPALIVE")
	right = append(right, false, false, false)
	if withUTO {
		header, right = append(header, "UTO"), append(right, false)
	}
	header = append(header, "IDLE", "DETECT")
	right = append(right, true, true)

	cw := newColumnWriter(right)
	var r cells
	ownerCells := func(o collector.Owner) {
		r.buf = strconv.AppendInt(r.buf, int64(o.PID), 10)
		r.endASCII()
		r.add(Printable(o.Comm))
	}
	// each calls fn with the cells of every row, an extra row for each
	// further process holding the socket.
	each := func(fn func(*cells) error) error {
		for i := range socks {
			s := &socks[i]
			r.reset()
			holders := s.Holders()
			if len(holders) > 0 {
				ownerCells(holders[0])
			} else {
				r.add("-")
				r.add("-")
			}
			if withState {
				r.add(s.State.String())
			}
			addrCell(&r, s.Local)
			addrCell(&r, s.Remote)
			r.buf = appendKeepaliveCell(r.buf, s)
			r.endASCII()
			if withUTO {
				if s.UserTimeout > 0 {
					r.buf = appendCompactDuration(r.buf, s.UserTimeout)
				} else {
					r.buf = append(r.buf, '-')
				}
				r.endASCII()
			}
			if s.IdleKnown {
				r.buf = appendCompactDuration(r.buf, s.Socket.Idle)
			} else {
				r.buf = append(r.buf, '-')
			}
			if s.Unresponsive {
				r.buf = append(r.buf, '!') // peer-unresponsive
			}
			r.endASCII()
			if s.State == collector.StateClose {
				r.buf = append(r.buf, "closed"...)
			} else {
				r.buf = appendDetectCell(r.buf, &s.DeadPeer)
			}
			r.endASCII()
			if err := fn(&r); err != nil {
				return err
			}
			for j := 1; j < len(holders); j++ {
				if holders[j].PID != holders[j-1].PID {
					r.reset()
					ownerCells(holders[j])
					if err := fn(&r); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	return cw.writeTable(w, header, each)
}

// appendKeepaliveCell appends "off", "on" (timers unknown), "?" (unknown),
// "-" (closed) or idle+interval x probes: "5s+5sx3".
func appendKeepaliveCell(b []byte, s *collector.KeepaliveSocket) []byte {
	d := &s.DeadPeer
	switch {
	case s.State == collector.StateClose:
		return append(b, '-')
	case !d.KeepaliveKnown:
		return append(b, '?')
	case !d.Keepalive:
		return append(b, "off"...)
	case !d.TimersKnown:
		return append(b, "on"...)
	}
	b = append(appendCompactDuration(b, d.Idle), '+')
	b = append(appendCompactDuration(b, d.Interval), 'x')
	return strconv.AppendInt(b, int64(d.Probes), 10)
}

func appendDetectCell(b []byte, d *collector.DeadPeer) []byte {
	switch {
	case !d.DetectKnown:
		return append(b, '-')
	case d.Never:
		return append(b, "never"...)
	}
	return appendCompactDuration(b, d.Detect)
}

// keepaliveLines are a process's summary: a head, "nginx (pid 12): 1200
// connections", and what holds for them, e.g. "none with keepalive: a dead
// peer keeps a connection forever".
func keepaliveLines(p *collector.KeepaliveProcess, source string) (head string, parts []string) {
	head = fmt.Sprintf("%s (pid %d): %d %s", p.Comm, p.PID, p.Sockets, plural(p.Sockets, "connection", "connections"))
	if p.PID == 0 {
		head = fmt.Sprintf("no visible owner: %d %s", p.Sockets, plural(p.Sockets, "connection", "connections"))
	}
	switch {
	case p.Off == p.Sockets:
		return head, []string{"none with keepalive: a dead peer keeps a connection forever"}
	case p.Closed == p.Sockets:
		return head, []string{"all closed by the kernel, the fds still open"}
	case p.Off > 0:
		parts = append(parts, fmt.Sprintf("%d without keepalive: a dead peer keeps them forever", p.Off))
	}
	if p.On > 0 {
		s := fmt.Sprintf("%d with keepalive", p.On)
		if p.On == p.Sockets {
			s = "keepalive"
		}
		if p.TimersKnown > 0 {
			s += fmt.Sprintf(" after %s, dead peers noticed after ~%s",
				durationRange(p.MinIdle, p.MaxIdle), durationRange(p.MinDetect, p.MaxDetect))
			if p.Defaults == p.TimersKnown {
				s += " (sysctl defaults)"
			}
		}
		if n := p.On - p.TimersKnown; n > 0 {
			s += fmt.Sprintf(", timers unknown to the %s source", source)
			if n < p.On {
				s += fmt.Sprintf(" for %d", n)
			}
		}
		parts = append(parts, s)
	}
	if p.Closed > 0 {
		parts = append(parts, fmt.Sprintf("%d closed by the kernel, the fds still open", p.Closed))
	}
	if p.Unresponsive > 0 {
		parts = append(parts, fmt.Sprintf("%d with a peer not answering now (silent up to %s): peer-unresponsive",
			p.Unresponsive, compactDuration(p.MaxSilent)))
	}
	if n := p.Unknown(); n > 0 {
		parts = append(parts, fmt.Sprintf("%d whose keepalive the %s source cannot tell", n, source))
	}
	return head, parts
}

// keepaliveLine is keepaliveLines in one line, as JSON gives it.
func keepaliveLine(p *collector.KeepaliveProcess, source string) string {
	head, parts := keepaliveLines(p, source)
	return head + ": " + strings.Join(parts, "; ")
}

// writeKeepaliveLines writes a process's summary in one line when it
// fits 80 columns, else the head and one indented line per part.
func writeKeepaliveLines(w *bufio.Writer, p *collector.KeepaliveProcess, source string) {
	head, parts := keepaliveLines(p, source)
	head = Printable(head)
	if len(parts) == 1 && len(head)+2+len(parts[0]) <= 80 {
		w.WriteString(head + ", " + parts[0] + "\n")
		return
	}
	w.WriteString(head + ":\n")
	for _, part := range parts {
		w.WriteString("  " + part + "\n")
	}
}

func durationRange(lo, hi time.Duration) string {
	if lo == hi {
		return compactDuration(lo)
	}
	return compactDuration(lo) + "-" + compactDuration(hi)
}
