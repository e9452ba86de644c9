package report

import (
	"encoding/json"
	"io"
	"math"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/closewait/closewait/collector"
)

// SchemaV1 is the value of Document.Schema. Adding keys keeps the version;
// renaming, removing or retyping one makes a new version.
const SchemaV1 = "closewait/v1"

// Document is the closewait/v1 JSON document: one object per run. Slices
// and maps always encode as [] and {}, never null, so consumers (jq) can
// iterate without checks. Numbers the source cannot read are null, never
// a made-up 0: ages when unknown; on Windows recv_q, send_q, inode, uid and
// an owner's fd; on macOS recv_q, send_q and inode; recv_q and send_q of a
// CLOSE socket found through /proc (netlink and procfs sources).
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
	State  string  `json:"state"`  // e.g. "CLOSE_WAIT"
	Family string  `json:"family"` // "ipv4" or "ipv6"
	Local  string  `json:"local"`  // "127.0.0.1:8080", "[::1]:8080"
	Remote string  `json:"remote"` // same form as Local; "*" for a listener
	RecvQ  *uint32 `json:"recv_q"` // bytes; in CLOSE_WAIT the unread FIN counts as one
	SendQ  *uint32 `json:"send_q"` // bytes
	Inode  *uint64 `json:"inode"`  // 0 while the socket sits in an accept queue
	Cookie uint64  `json:"cookie"` // kernel socket cookie; 0 when the source cannot read it
	UID    *uint32 `json:"uid"`
	// NetNS is the inode of the socket's network namespace, 0 when unknown.
	// Not in the key list: it says which container a socket lives
	// in once more than one namespace is listed.
	NetNS uint64 `json:"netns"`
	// NetNSName is "host" for the initial namespace, the name under
	// /run/netns for one `ip netns` made, null otherwise.
	NetNSName *string `json:"netns_name"`
	// AgeSeconds is the time in the current state, rounded to the
	// millisecond; a lower bound unless AgeExact. Null when unknown.
	AgeSeconds *float64 `json:"age_seconds"`
	AgeExact   bool     `json:"age_exact"`
	// AgeMaxSeconds is an upper bound on the age: equal to AgeSeconds when
	// exact, null when no bound is known. It can be set while AgeSeconds is
	// null (Windows: the time since the connection was created).
	AgeMaxSeconds *float64          `json:"age_max_seconds"`
	Error         *string           `json:"error"`  // CLOSE: the error the kernel left ("ECONNRESET"); else, or unknown, null
	Causes        []collector.Cause `json:"causes"` // most telling first; [] outside CLOSE_WAIT
	Owners        []OwnerJSON       `json:"owners"` // [] when not accepted or owners hidden
	// Listener, for a socket still in an accept queue, holds the processes
	// holding the listening socket it waits on; [] otherwise.
	Listener []OwnerJSON `json:"listener"`
}

// OwnerJSON is one holder of a socket: a process and one of its fds. It is
// declared here, not taken from collector.Owner, so the schema cannot drift
// with the collector's types.
type OwnerJSON struct {
	PID  int    `json:"pid"`
	Comm string `json:"comm"`
	FD   int    `json:"fd"` // -1, encoded as null, when the OS does not say (Windows)
	// Process is null when not read (trace, Windows, macOS) or when the
	// process was gone by then.
	Process *ProcessJSON `json:"process"`
	// Container is null outside a container, and whenever Process is null.
	Container *ContainerJSON `json:"container"`
}

// ProcessJSON tells processes of one name apart.
type ProcessJSON struct {
	PPID    int     `json:"ppid"`
	UID     int     `json:"uid"`     // the effective uid
	Cmdline string  `json:"cmdline"` // arguments joined by spaces, at most 4096 bytes
	Unit    *string `json:"unit"`    // systemd unit or scope; null outside one
}

// ContainerJSON is the container an owner runs in, from its cgroup path.
// Pod, namespace and name need the CRI API, not queried yet: always null.
type ContainerJSON struct {
	// Runtime is containerd, cri-o, docker or podman; null when the path
	// does not say (kubelet's cgroupfs driver).
	Runtime   *string `json:"runtime"`
	ID        string  `json:"id"`        // the full 64-hex id
	PodUID    *string `json:"pod_uid"`   // null outside Kubernetes
	Pod       *string `json:"pod"`       // pod name
	Namespace *string `json:"namespace"` // Kubernetes namespace
	Name      *string `json:"name"`      // container name
}

// ownerJSON is OwnerJSON as encoded: fd null when unknown.
type ownerJSON struct {
	PID       int            `json:"pid"`
	Comm      string         `json:"comm"`
	FD        *int           `json:"fd"`
	Process   *ProcessJSON   `json:"process"`
	Container *ContainerJSON `json:"container"`
}

// MarshalJSON encodes an FD below 0 as null.
func (o OwnerJSON) MarshalJSON() ([]byte, error) {
	j := ownerJSON{PID: o.PID, Comm: o.Comm, Process: o.Process, Container: o.Container}
	if o.FD >= 0 {
		j.FD = &o.FD
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes a null fd as -1.
func (o *OwnerJSON) UnmarshalJSON(b []byte) error {
	var j ownerJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*o = OwnerJSON{PID: j.PID, Comm: j.Comm, FD: -1, Process: j.Process, Container: j.Container}
	if j.FD != nil {
		o.FD = *j.FD
	}
	return nil
}

// processJSON converts p; nil stays nil.
func processJSON(p *collector.Process) *ProcessJSON {
	if p == nil {
		return nil
	}
	j := &ProcessJSON{PPID: p.PPID, UID: p.UID, Cmdline: p.Cmdline}
	if p.Unit != "" {
		j.Unit = &p.Unit
	}
	return j
}

// containerJSON converts the container of p; nil when p is nil or in none.
func containerJSON(p *collector.Process) *ContainerJSON {
	if p == nil || p.Container == nil {
		return nil
	}
	c := p.Container
	return &ContainerJSON{
		Runtime:   optString(c.Runtime),
		ID:        c.ID,
		PodUID:    optString(c.PodUID),
		Pod:       optString(c.Pod),
		Namespace: optString(c.Namespace),
		Name:      optString(c.Name),
	}
}

// optString is s, or nil for "".
func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// SummaryJSON is one process's row of the summary: a collector.ProcessSummary.
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

// NewDocument converts a snapshot into the closewait/v1 document. JSON
// does not build it: it streams the same bytes (see JSON).
func NewDocument(snap *collector.Snapshot) Document {
	doc := Document{
		Schema:   SchemaV1,
		Host:     snap.Host,
		Time:     snap.Time,
		Source:   snap.Source,
		Warnings: append([]string{}, snap.Notes()...),
		Sockets:  make([]SocketJSON, 0, len(snap.Sockets)),
		Summary:  summaryJSON(snap),
	}
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		sj := SocketJSON{
			State:    s.State.String(),
			Family:   s.Family.String(),
			Local:    Addr(s.Local),
			Remote:   Addr(s.Remote),
			Cookie:   s.Cookie,
			NetNS:    s.NetNS,
			Causes:   append([]collector.Cause{}, s.Causes...),
			Owners:   ownersJSON(s.Owners),
			Listener: ownersJSON(s.Listener),
		}
		if n, ok := snap.NetNSNames[s.NetNS]; ok {
			sj.NetNSName = &n
		}
		if !s.QueuesUnknown {
			sj.RecvQ, sj.SendQ = &s.RecvQ, &s.SendQ
		}
		if !s.InodeUnknown {
			sj.Inode = &s.Inode
		}
		if !s.UIDUnknown {
			sj.UID = &s.UID
		}
		a := socketAges(s)
		sj.AgeExact = a.exact
		if a.known {
			sj.AgeSeconds = &a.age
		}
		if a.maxKnown {
			sj.AgeMaxSeconds = &a.max
		}
		sj.Error = closedError(s)
		doc.Sockets = append(doc.Sockets, sj)
	}
	return doc
}

func ownersJSON(owners []collector.Owner) []OwnerJSON {
	out := make([]OwnerJSON, len(owners))
	for i, o := range owners {
		out[i] = OwnerJSON{PID: o.PID, Comm: o.Comm, FD: o.FD, Process: processJSON(o.Proc), Container: containerJSON(o.Proc)}
	}
	return out
}

// jsonAges is a socket's age keys: age_seconds (null unless known),
// age_exact, age_max_seconds (null unless maxKnown, which needs no age).
type jsonAges struct {
	age, max        float64
	known, maxKnown bool
	exact           bool
}

func socketAges(s *collector.Socket) jsonAges {
	var a jsonAges
	if !s.AgeKnown {
		if s.AgeMax > 0 {
			a.max, a.maxKnown = roundSeconds(s.AgeMax), true
		}
		return a
	}
	a.age, a.known, a.exact = roundSeconds(s.Age), true, s.AgeExact
	switch {
	case s.AgeExact:
		a.max, a.maxKnown = a.age, true
	case s.AgeMax > 0:
		a.max, a.maxKnown = roundSeconds(s.AgeMax), true
	}
	return a
}

// summaryJSON is the document's summary: one entry per process, as
// Summarize orders them.
func summaryJSON(snap *collector.Snapshot) []SummaryJSON {
	out := []SummaryJSON{}
	for _, p := range collector.Summarize(snap) {
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
		out = append(out, sj)
	}
	return out
}

// JSON writes the snapshot as one closewait/v1 document, indented two
// spaces and ending in a newline: the bytes json.Encoder with
// SetIndent("", "  ") makes of NewDocument(snap).
//
// It streams them instead of encoding a Document: with 45,000 sockets the
// whole document in memory costs 150 MB of allocation and reflection 2 µs
// a socket. The head and the summary (a row per process) go through
// encoding/json; each socket is appended by hand into one reused buffer,
// written out every 32 KiB. TestJSONMatchesEncoder holds the two to the
// same bytes, so a key added to SocketJSON must be added here too.
func JSON(w io.Writer, snap *collector.Snapshot) error {
	return writeJSON(w, snap, snap.Sockets)
}

// JSONSome writes the Document with the summary of every socket but only
// socks in "sockets": none for list --summary, the first N for --top.
func JSONSome(w io.Writer, snap *collector.Snapshot, socks []collector.Socket) error {
	return writeJSON(w, snap, socks)
}

// writeJSON writes the Document of snap with only socks in "sockets".
func writeJSON(w io.Writer, snap *collector.Snapshot, socks []collector.Socket) error {
	const flushAt = 32 << 10
	b := make([]byte, 0, flushAt+4<<10)
	b = append(b, "{\n  \"schema\": "...)
	b = appendJSONString(b, SchemaV1)
	b = append(b, ",\n  \"host\": "...)
	b = appendJSONString(b, snap.Host)
	b = append(b, ",\n  \"time\": "...)
	b, err := appendIndented(b, snap.Time)
	if err != nil {
		return err
	}
	b = append(b, ",\n  \"source\": "...)
	b = appendJSONString(b, snap.Source)
	b = append(b, ",\n  \"warnings\": "...)
	if b, err = appendIndented(b, append([]string{}, snap.Notes()...)); err != nil {
		return err
	}
	b = append(b, ",\n  \"sockets\": ["...)
	for i := range socks {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendSocketJSON(append(b, '\n'), &socks[i], snap.NetNSNames)
		if len(b) >= flushAt {
			if _, err := w.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	if len(socks) > 0 {
		b = append(b, "\n  "...)
	}
	b = append(b, "],\n  \"summary\": "...)
	if b, err = appendIndented(b, summaryJSON(snap)); err != nil {
		return err
	}
	b = append(b, "\n}\n"...)
	_, err = w.Write(b)
	return err
}

// appendIndented appends v encoded as a value of the document's top-level
// object, indented as json.Encoder indents it there.
func appendIndented(b []byte, v any) ([]byte, error) {
	j, err := json.MarshalIndent(v, "  ", "  ")
	return append(b, j...), err
}

// appendSocketJSON appends s as an element of the document's "sockets"
// array: the keys and indentation encoding/json gives a SocketJSON there.
func appendSocketJSON(b []byte, s *collector.Socket, netnsNames map[uint64]string) []byte {
	b = append(b, "    {\n      \"state\": "...)
	b = appendJSONString(b, s.State.String())
	b = append(b, ",\n      \"family\": "...)
	b = appendJSONString(b, s.Family.String())
	b = append(b, ",\n      \"local\": "...)
	b = appendJSONAddr(b, s.Local)
	b = append(b, ",\n      \"remote\": "...)
	b = appendJSONAddr(b, s.Remote)
	b = append(b, ",\n      \"recv_q\": "...)
	b = appendJSONUint(b, uint64(s.RecvQ), !s.QueuesUnknown)
	b = append(b, ",\n      \"send_q\": "...)
	b = appendJSONUint(b, uint64(s.SendQ), !s.QueuesUnknown)
	b = append(b, ",\n      \"inode\": "...)
	b = appendJSONUint(b, s.Inode, !s.InodeUnknown)
	b = append(b, ",\n      \"cookie\": "...)
	b = strconv.AppendUint(b, s.Cookie, 10)
	b = append(b, ",\n      \"uid\": "...)
	b = appendJSONUint(b, uint64(s.UID), !s.UIDUnknown)
	b = append(b, ",\n      \"netns\": "...)
	b = strconv.AppendUint(b, s.NetNS, 10)
	b = append(b, ",\n      \"netns_name\": "...)
	if n, ok := netnsNames[s.NetNS]; ok {
		b = appendJSONString(b, n)
	} else {
		b = append(b, "null"...)
	}
	a := socketAges(s)
	b = append(b, ",\n      \"age_seconds\": "...)
	b = appendJSONSeconds(b, a.age, a.known)
	b = append(b, ",\n      \"age_exact\": "...)
	b = strconv.AppendBool(b, a.exact)
	b = append(b, ",\n      \"age_max_seconds\": "...)
	b = appendJSONSeconds(b, a.max, a.maxKnown)
	b = append(b, ",\n      \"error\": "...)
	if e := closedError(s); e != nil {
		b = appendJSONString(b, *e)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, ",\n      \"causes\": ["...)
	for i, c := range s.Causes {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n        "...)
		b = appendJSONString(b, string(c))
	}
	if len(s.Causes) > 0 {
		b = append(b, "\n      "...)
	}
	b = append(b, "],\n      \"owners\": "...)
	b = appendJSONOwners(b, s.Owners)
	b = append(b, ",\n      \"listener\": "...)
	b = appendJSONOwners(b, s.Listener)
	return append(b, "\n    }"...)
}

// appendJSONOwners appends owners as an array of OwnerJSON objects.
func appendJSONOwners(b []byte, owners []collector.Owner) []byte {
	b = append(b, '[')
	for i, o := range owners {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n        {\n          \"pid\": "...)
		b = strconv.AppendInt(b, int64(o.PID), 10)
		b = append(b, ",\n          \"comm\": "...)
		b = appendJSONString(b, o.Comm)
		b = append(b, ",\n          \"fd\": "...)
		if o.FD < 0 {
			b = append(b, "null"...)
		} else {
			b = strconv.AppendInt(b, int64(o.FD), 10)
		}
		b = append(b, ",\n          \"process\": "...)
		if p := o.Proc; p == nil {
			b = append(b, "null"...)
		} else {
			b = append(b, "{\n            \"ppid\": "...)
			b = strconv.AppendInt(b, int64(p.PPID), 10)
			b = append(b, ",\n            \"uid\": "...)
			b = strconv.AppendInt(b, int64(p.UID), 10)
			b = append(b, ",\n            \"cmdline\": "...)
			b = appendJSONString(b, p.Cmdline)
			b = append(b, ",\n            \"unit\": "...)
			b = appendJSONOptString(b, p.Unit)
			b = append(b, "\n          }"...)
		}
		b = append(b, ",\n          \"container\": "...)
		if o.Proc == nil || o.Proc.Container == nil {
			b = append(b, "null"...)
		} else {
			c := o.Proc.Container
			b = append(b, "{\n            \"runtime\": "...)
			b = appendJSONOptString(b, c.Runtime)
			b = append(b, ",\n            \"id\": "...)
			b = appendJSONString(b, c.ID)
			b = append(b, ",\n            \"pod_uid\": "...)
			b = appendJSONOptString(b, c.PodUID)
			b = append(b, ",\n            \"pod\": "...)
			b = appendJSONOptString(b, c.Pod)
			b = append(b, ",\n            \"namespace\": "...)
			b = appendJSONOptString(b, c.Namespace)
			b = append(b, ",\n            \"name\": "...)
			b = appendJSONOptString(b, c.Name)
			b = append(b, "\n          }"...)
		}
		b = append(b, "\n        }"...)
	}
	if len(owners) > 0 {
		b = append(b, "\n      "...)
	}
	return append(b, ']')
}

// appendJSONOptString appends s as a JSON string, or null for "".
func appendJSONOptString(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return appendJSONString(b, s)
}

// appendJSONUint appends v, or null when not known.
func appendJSONUint(b []byte, v uint64, known bool) []byte {
	if !known {
		return append(b, "null"...)
	}
	return strconv.AppendUint(b, v, 10)
}

// appendJSONSeconds appends v as encoding/json encodes a float64 ("12.3",
// "1e-7"), or null when not known.
func appendJSONSeconds(b []byte, v float64, known bool) []byte {
	if !known {
		return append(b, "null"...)
	}
	format := byte('f')
	if abs := math.Abs(v); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, v, format, -1, 64)
	if n := len(b); format == 'e' && n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
		b[n-2] = b[n-1] // e-07 -> e-7
		b = b[:n-1]
	}
	return b
}

// appendJSONAddr appends Addr(a) as a JSON string.
func appendJSONAddr(b []byte, a netip.AddrPort) []byte {
	var buf [64]byte // "[ffff:...:ffff%zone]:65535"; longer zones spill to the heap
	return appendJSONString(b, appendAddr(buf[:0], a))
}

// appendJSONString appends s as a JSON string. Plain ASCII, nearly every
// string here, is copied; anything encoding/json would escape or replace
// (quotes, control characters, HTML's <>&, non-ASCII) goes through
// json.Marshal so the bytes stay encoding/json's.
func appendJSONString[S string | []byte](b []byte, s S) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			j, _ := json.Marshal(string(s)) // a string always encodes
			return append(b, j...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// roundSeconds converts d to seconds rounded to the millisecond: finer
// digits would claim a precision the kernel's jiffy-based ages do not have.
func roundSeconds(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Millisecond)) / 1000
}

// seconds is roundSeconds for an optional JSON number.
func seconds(d time.Duration) *float64 {
	v := roundSeconds(d)
	return &v
}
