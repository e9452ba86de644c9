package harness

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/report"
)

// detailLines bounds the failed connections listed per scenario in the
// table; JSON and JUnit list them all.
const detailLines = 10

// WriteTable prints one line per scenario, then what failed and why.
func WriteTable(w io.Writer, rep *Outcome) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tCONNS\tPASSED\tP50\tP99\tMAX\tRESULT")
	for i := range rep.Scenarios {
		s := &rep.Scenarios[i]
		p50, p99, mx := "-", "-", "-"
		if s.OK > 0 {
			p50, p99, mx = fmtDuration(s.P50), fmtDuration(s.P99), fmtDuration(s.Max)
		}
		result := "ok"
		if !s.Passed() {
			result = "FAIL"
			if len(s.Failures) > 0 {
				result += " " + s.causeCounts()
			} else if s.Err != "" {
				result += " " + s.Err
			}
		}
		if s.ServerClosedFirst > 0 {
			result += fmt.Sprintf(" (server closed %d first)", s.ServerClosedFirst)
		}
		if s.Name == DeadPeer {
			result += "  keepalive: " + KeepaliveString(s.Keepalive, s.KeepaliveTimer)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n", s.Name, s.Conns, s.OK, p50, p99, mx, result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for i := range rep.Scenarios {
		s := &rep.Scenarios[i]
		if s.Passed() {
			continue
		}
		fmt.Fprintf(w, "\n%s: %s\n", s.Name, s.Summary())
		for _, l := range s.Details(detailLines) {
			fmt.Fprintln(w, l)
		}
	}
	verdict := "all passed"
	if n := rep.Failed(); n > 0 {
		verdict = fmt.Sprintf("%d failed", n)
	}
	noun := "scenarios"
	if len(rep.Scenarios) == 1 {
		noun = "scenario"
	}
	_, err := fmt.Fprintf(w, "\n%d %s against %s: %s in %s\n", len(rep.Scenarios), noun, rep.Target, verdict, fmtDuration(rep.Duration.Round(time.Millisecond)))
	return err
}

// JSON schema of WriteJSON, versioned like the listing's.
const jsonSchema = "closewait/test/v1"

type jsonReport struct {
	Schema    string         `json:"schema"`
	Target    string         `json:"target"`
	Host      string         `json:"host"`
	Time      string         `json:"time"`
	Duration  float64        `json:"duration_seconds"`
	Source    string         `json:"source"`
	Passed    bool           `json:"passed"`
	Warnings  []string       `json:"warnings"`
	Scenarios []jsonScenario `json:"scenarios"`
}

type jsonScenario struct {
	Name              string         `json:"name"`
	Passed            bool           `json:"passed"`
	Connections       int            `json:"connections"`
	OK                int            `json:"connections_passed"`
	Deadline          float64        `json:"deadline_seconds"`
	P50               *float64       `json:"p50_seconds"`
	P99               *float64       `json:"p99_seconds"`
	Max               *float64       `json:"max_seconds"`
	Duration          float64        `json:"duration_seconds"`
	ServerClosedFirst int            `json:"server_closed_first"`
	Summary           string         `json:"summary"`
	Error             string         `json:"error,omitempty"`
	Note              string         `json:"note,omitempty"`
	Keepalive         *jsonKeepalive `json:"keepalive,omitempty"`
	KeepaliveTimer    *string        `json:"keepalive_timer,omitempty"`
	Failures          []jsonFailure  `json:"failures"`
}

type jsonKeepalive struct {
	Enabled     bool    `json:"enabled"`
	Idle        float64 `json:"idle_seconds"`
	Interval    float64 `json:"interval_seconds"`
	Probes      int     `json:"probes"`
	UserTimeout float64 `json:"user_timeout_seconds"`
}

type jsonFailure struct {
	Local     string             `json:"local,omitempty"`
	Remote    string             `json:"remote,omitempty"`
	State     string             `json:"state,omitempty"`
	RecvQ     *uint32            `json:"recv_q"` // null when the OS gives none
	Causes    []string           `json:"causes"`
	Owners    []report.OwnerJSON `json:"owners"` // fd null when the OS gives none
	Waited    float64            `json:"waited_seconds"`
	Keepalive *jsonKeepalive     `json:"keepalive,omitempty"`
	Timer     string             `json:"timer,omitempty"`
	Error     string             `json:"error,omitempty"`
}

// WriteJSON prints the report as one JSON document (schema
// closewait/test/v1); keys are snake_case with units.
func WriteJSON(w io.Writer, rep *Outcome) error {
	out := jsonReport{
		Schema: jsonSchema, Target: rep.Target, Host: rep.Host,
		Time: rep.Started.UTC().Format(time.RFC3339), Duration: secs(rep.Duration),
		Source: rep.Source, Passed: rep.Passed(), Warnings: nonNil(rep.Warnings),
		Scenarios: []jsonScenario{},
	}
	for i := range rep.Scenarios {
		s := &rep.Scenarios[i]
		js := jsonScenario{
			Name: s.Name, Passed: s.Passed(), Connections: s.Conns, OK: s.OK,
			Deadline: secs(s.Deadline), Duration: secs(s.Duration),
			ServerClosedFirst: s.ServerClosedFirst, Summary: s.Summary(),
			Error: s.Err, Note: s.Note, Failures: []jsonFailure{},
		}
		if s.OK > 0 {
			js.P50, js.P99, js.Max = seconds(s.P50), seconds(s.P99), seconds(s.Max)
		}
		if s.Name == DeadPeer {
			js.Keepalive = keepaliveJSON(s.Keepalive)
			js.KeepaliveTimer = &s.KeepaliveTimer
		}
		for _, f := range s.Failures {
			jf := jsonFailure{
				Causes: nonNil(f.Causes), Owners: []report.OwnerJSON{}, Waited: secs(f.Waited),
				Keepalive: keepaliveJSON(f.Keepalive), Timer: f.Timer, Error: f.Err,
			}
			if !f.QueuesUnknown {
				jf.RecvQ = &f.RecvQ
			}
			for _, o := range f.Owners {
				jf.Owners = append(jf.Owners, report.OwnerJSON{PID: o.PID, Comm: o.Comm, FD: o.FD})
			}
			if f.Client.IsValid() {
				jf.Local, jf.Remote = unmap(f.Server).String(), unmap(f.Client).String()
			}
			if f.State != 0 {
				jf.State = f.State.String()
			}
			js.Failures = append(js.Failures, jf)
		}
		out.Scenarios = append(out.Scenarios, js)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func keepaliveJSON(ka *collector.Keepalive) *jsonKeepalive {
	if ka == nil {
		return nil
	}
	return &jsonKeepalive{
		Enabled: ka.Enabled, Idle: secs(ka.Idle), Interval: secs(ka.Interval),
		Probes: ka.Probes, UserTimeout: secs(ka.UserTimeout),
	}
}

func seconds(d time.Duration) *float64 {
	s := secs(d)
	return &s
}

// secs is d in seconds, rounded to the microsecond: finer digits are noise.
func secs(d time.Duration) float64 { return math.Round(d.Seconds()*1e6) / 1e6 }

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
