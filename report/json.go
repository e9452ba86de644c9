package report

import (
	"encoding/json"
	"io"
	"math"
	"time"

	"github.com/closewait/closewait/collector"
)

// SchemaV1 is the value of Document.Schema. Adding keys keeps the version;
// renaming, removing or retyping one makes a new version.
const SchemaV1 = "closewait/v1"

// Document is the closewait/v1 JSON document: one object per run. Slices
// and maps always encode as [] and {}, never null, so consumers (jq) can
// iterate without checks; only ages are null, when unknown.
type Document struct {
	Schema   string        `json:"schema"`   // always SchemaV1
	Host     string        `json:"host"`     // hostname of the machine listed
	Time     time.Time     `json:"time"`     // when the snapshot was taken, RFC 3339
	Source   string        `json:"source"`   // ebpf, netlink or procfs
	Warnings []string      `json:"warnings"` // what the listing may miss, e.g. hidden owners
	Sockets  []SocketJSON  `json:"sockets"`  // in the collector's order: oldest first
	Summary  []SummaryJSON `json:"summary"`  // one entry per process, as Summarize
}

// SocketJSON is one socket in a Document.
type SocketJSON struct {
	State  string `json:"state"`  // e.g. "CLOSE_WAIT"
	Family string `json:"family"` // "ipv4" or "ipv6"
	Local  string `json:"local"`  // "127.0.0.1:8080", "[::1]:8080"
	Remote string `json:"remote"` // same form as Local; "*" for a listener
	RecvQ  uint32 `json:"recv_q"` // bytes; in CLOSE_WAIT the unread FIN counts as one
	SendQ  uint32 `json:"send_q"` // bytes
	Inode  uint64 `json:"inode"`  // 0 while the socket sits in an accept queue
	Cookie uint64 `json:"cookie"` // kernel socket cookie; 0 when the source cannot read it
	UID    uint32 `json:"uid"`
	// NetNS is the inode of the socket's network namespace, 0 when unknown.
	// Not in the key list: it says which container a socket lives
	// in once more than one namespace is listed.
	NetNS uint64 `json:"netns"`
	// AgeSeconds is the time in the current state, rounded to the
	// millisecond; a lower bound unless AgeExact. Null when unknown.
	AgeSeconds *float64 `json:"age_seconds"`
	AgeExact   bool     `json:"age_exact"`
	// AgeMaxSeconds is an upper bound on the age: equal to AgeSeconds when
	// exact, null when no bound is known.
	AgeMaxSeconds *float64          `json:"age_max_seconds"`
	Causes        []collector.Cause `json:"causes"` // most telling first; [] outside CLOSE_WAIT
	Owners        []OwnerJSON       `json:"owners"` // [] when not accepted or owners hidden
}

// OwnerJSON is one holder of a socket: a process and one of its fds. It is
// declared here, not taken from collector.Owner, so the schema cannot drift
// with the collector's types.
type OwnerJSON struct {
	PID  int    `json:"pid"`
	Comm string `json:"comm"`
	FD   int    `json:"fd"`
}

// SummaryJSON is one process's row of the summary: a ProcessSummary.
type SummaryJSON struct {
	PID     int    `json:"pid"`     // 0 for sockets with no visible owner
	Comm    string `json:"comm"`    // "-" when PID is 0
	Sockets int    `json:"sockets"` // sockets held, each once
	// OldestSeconds is the largest age among the sockets, rounded to the
	// millisecond; null when no age is known.
	OldestSeconds *float64 `json:"oldest_seconds"`
	// OldestExact is false when OldestSeconds is only a lower bound. Not in
	// the key list; it carries the table's ">=" mark.
	OldestExact bool                    `json:"oldest_exact"`
	Causes      map[collector.Cause]int `json:"causes"` // sockets per cause; {} when none
}

// NewDocument converts a snapshot into the closewait/v1 document.
func NewDocument(snap *collector.Snapshot) Document {
	doc := Document{
		Schema:   SchemaV1,
		Host:     snap.Host,
		Time:     snap.Time,
		Source:   snap.Source,
		Warnings: append([]string{}, snap.Warnings...),
		Sockets:  make([]SocketJSON, 0, len(snap.Sockets)),
		Summary:  []SummaryJSON{},
	}
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		sj := SocketJSON{
			State:  s.State.String(),
			Family: s.Family.String(),
			Local:  Addr(s.Local),
			Remote: Addr(s.Remote),
			RecvQ:  s.RecvQ,
			SendQ:  s.SendQ,
			Inode:  s.Inode,
			Cookie: s.Cookie,
			UID:    s.UID,
			NetNS:  s.NetNS,
			Causes: append([]collector.Cause{}, s.Causes...),
			Owners: make([]OwnerJSON, len(s.Owners)),
		}
		if s.AgeKnown {
			sj.AgeSeconds = seconds(s.Age)
			sj.AgeExact = s.AgeExact
			switch {
			case s.AgeExact:
				sj.AgeMaxSeconds = sj.AgeSeconds
			case s.AgeMax > 0:
				sj.AgeMaxSeconds = seconds(s.AgeMax)
			}
		}
		for j, o := range s.Owners {
			sj.Owners[j] = OwnerJSON{PID: o.PID, Comm: o.Comm, FD: o.FD}
		}
		doc.Sockets = append(doc.Sockets, sj)
	}
	for _, p := range Summarize(snap) {
		sj := SummaryJSON{
			PID:         p.PID,
			Comm:        p.Comm,
			Sockets:     p.Sockets,
			OldestExact: p.OldestKnown && p.OldestExact,
			Causes:      p.Causes,
		}
		if p.OldestKnown {
			sj.OldestSeconds = seconds(p.Oldest)
		}
		doc.Summary = append(doc.Summary, sj)
	}
	return doc
}

// JSON writes the snapshot as one closewait/v1 document, indented two
// spaces and ending in a newline.
func JSON(w io.Writer, snap *collector.Snapshot) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(NewDocument(snap))
}

// seconds converts d to seconds rounded to the millisecond: finer digits
// would claim a precision the kernel's jiffy-based ages do not have.
func seconds(d time.Duration) *float64 {
	v := math.Round(float64(d)/float64(time.Millisecond)) / 1000
	return &v
}
