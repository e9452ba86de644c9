package harness

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/collector"
)

// sampleReport has a pass, a failure with causes and owners, a dead-peer
// failure with keepalive settings and a scenario that could not run.
func sampleReport() *Outcome {
	srv := netip.MustParseAddrPort("127.0.0.1:8080")
	return &Outcome{
		Target: "127.0.0.1:8080", Host: "ci", Source: "netlink",
		Started:  time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Duration: 2340 * time.Millisecond,
		Scenarios: []ScenarioResult{
			{Name: IdleClose, Conns: 2, OK: 2, Deadline: 2 * time.Second, P50: time.Millisecond, P99: 2 * time.Millisecond, Max: 2 * time.Millisecond, Duration: 30 * time.Millisecond},
			{Name: RequestClose, Conns: 2, OK: 1, Deadline: 2 * time.Second, P50: time.Millisecond, P99: time.Millisecond, Max: time.Millisecond, Duration: 2100 * time.Millisecond,
				Failures: []ConnFailure{{
					Server: srv, Client: netip.MustParseAddrPort("127.0.0.1:51552"),
					State: collector.StateCloseWait, Causes: []string{"eof-not-closed"},
					Owners: []collector.Owner{{PID: 812, Comm: "leak", FD: 7}}, Waited: 2010 * time.Millisecond,
				}}},
			{Name: DeadPeer, Conns: 1, Deadline: 10 * time.Second, Duration: 10 * time.Second,
				Keepalive: &collector.Keepalive{Enabled: true, Idle: 2 * time.Hour, Interval: 75 * time.Second, Probes: 9},
				Failures: []ConnFailure{{
					Server: srv, Client: netip.MustParseAddrPort("[::ffff:127.0.0.1]:40000"),
					State: collector.StateEstablished, Causes: []string{CauseKeepaliveTooSlow}, Waited: 10 * time.Second,
				}}},
			{Name: Burst, Conns: 2, Deadline: 2 * time.Second, Err: "not run: server exited: exit status 2"},
		},
	}
}

// The JUnit elements and attributes common readers (Jenkins, GitLab,
// GitHub test reporters) rely on, declared independently of junit.go.
type schemaSuites struct {
	XMLName  xml.Name      `xml:"testsuites"`
	Tests    string        `xml:"tests,attr"`
	Failures string        `xml:"failures,attr"`
	Time     string        `xml:"time,attr"`
	Suites   []schemaSuite `xml:"testsuite"`
}

type schemaSuite struct {
	Name      string       `xml:"name,attr"`
	Tests     string       `xml:"tests,attr"`
	Failures  string       `xml:"failures,attr"`
	Errors    string       `xml:"errors,attr"`
	Time      string       `xml:"time,attr"`
	Timestamp string       `xml:"timestamp,attr"`
	Cases     []schemaCase `xml:"testcase"`
	SystemOut string       `xml:"system-out"`
}

type schemaCase struct {
	Name      string `xml:"name,attr"`
	Classname string `xml:"classname,attr"`
	Time      string `xml:"time,attr"`
	Failure   *struct {
		Message string `xml:"message,attr"`
		Type    string `xml:"type,attr"`
		Text    string `xml:",chardata"`
	} `xml:"failure"`
}

func TestJUnitParses(t *testing.T) {
	rep := sampleReport()
	serverOut := "listening on 127.0.0.1:8080\n<b>&odd</b> ]]> bytes \x00\x1b[0m \xff\n"
	var buf bytes.Buffer
	if err := WriteJUnit(&buf, rep, serverOut); err != nil {
		t.Fatal(err)
	}
	// A strict decoder rejects ill-formed XML, including the control
	// characters XML 1.0 forbids.
	dec := xml.NewDecoder(bytes.NewReader(buf.Bytes()))
	dec.Strict = true
	var doc schemaSuites
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("JUnit XML does not parse: %v\n%s", err, buf.String())
	}
	if doc.Tests != "4" || doc.Failures != "3" || len(doc.Suites) != 1 {
		t.Fatalf("testsuites tests=%s failures=%s suites=%d, want 4, 3, 1", doc.Tests, doc.Failures, len(doc.Suites))
	}
	s := doc.Suites[0]
	if s.Tests != "4" || s.Failures != "3" || s.Errors != "0" || len(s.Cases) != 4 {
		t.Errorf("testsuite tests=%s failures=%s errors=%s cases=%d", s.Tests, s.Failures, s.Errors, len(s.Cases))
	}
	if _, err := time.Parse("2006-01-02T15:04:05", s.Timestamp); err != nil {
		t.Errorf("timestamp %q: %v", s.Timestamp, err)
	}
	for _, tm := range []string{doc.Time, s.Time} {
		if f, err := strconv.ParseFloat(tm, 64); err != nil || f != 2.34 {
			t.Errorf("time %q, want 2.340 seconds", tm)
		}
	}
	failures := map[string]string{}
	for _, c := range s.Cases {
		if c.Classname == "" {
			t.Errorf("testcase %s has no classname", c.Name)
		}
		if _, err := strconv.ParseFloat(c.Time, 64); err != nil {
			t.Errorf("testcase %s time %q: %v", c.Name, c.Time, err)
		}
		if c.Failure != nil {
			failures[c.Name] = c.Failure.Message + "\n" + c.Failure.Type + "\n" + c.Failure.Text
		}
	}
	if len(failures) != 3 {
		t.Errorf("%d testcases with a failure, want 3 (request-close, dead-peer, burst)", len(failures))
	}
	for name, want := range map[string][]string{
		RequestClose: {"1 of 2 connections still in CLOSE_WAIT 2s after the client's FIN: eof-not-closed", "127.0.0.1:8080 <- 127.0.0.1:51552", "leak[812] fd 7", "never called close()"},
		DeadPeer:     {"keepalive-too-slow", "127.0.0.1:40000", "after the client vanished", "keepalive: unknown"},
		Burst:        {"server exited"},
	} {
		for _, w := range want {
			if !strings.Contains(failures[name], w) {
				t.Errorf("%s failure does not mention %q:\n%s", name, w, failures[name])
			}
		}
	}
	if !strings.Contains(s.SystemOut, "listening on 127.0.0.1:8080") || !strings.Contains(s.SystemOut, "<b>&odd</b> ]]>") {
		t.Errorf("system-out lost the server output: %q", s.SystemOut)
	}
}

func TestJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, sampleReport()); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Schema    string
		Passed    bool
		Scenarios []struct {
			Name      string
			Passed    bool
			P50       *float64 `json:"p50_seconds"`
			Keepalive *struct {
				Enabled bool
				Idle    float64 `json:"idle_seconds"`
			}
			Failures []struct {
				Local, Remote, State string
				Causes               []string
				Owners               []collector.Owner
			}
		}
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if doc.Schema != "closewait/test/v1" || doc.Passed || len(doc.Scenarios) != 4 {
		t.Fatalf("schema %q passed %v scenarios %d", doc.Schema, doc.Passed, len(doc.Scenarios))
	}
	if s := doc.Scenarios[0]; !s.Passed || s.P50 == nil || *s.P50 != 0.001 {
		t.Errorf("idle-close: %+v", s)
	}
	rc := doc.Scenarios[1]
	if len(rc.Failures) != 1 || rc.Failures[0].Remote != "127.0.0.1:51552" || rc.Failures[0].Causes[0] != "eof-not-closed" || rc.Failures[0].Owners[0].Comm != "leak" {
		t.Errorf("request-close failures: %+v", rc.Failures)
	}
	dp := doc.Scenarios[2]
	if dp.Keepalive == nil || dp.Keepalive.Idle != 7200 || dp.P50 != nil {
		t.Errorf("dead-peer: %+v", dp)
	}
	// IPv4-mapped addresses print as IPv4, like the listing does.
	if got := dp.Failures[0].Remote; got != "127.0.0.1:40000" {
		t.Errorf("dead-peer remote %q", got)
	}
}

func TestTable(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTable(&buf, sampleReport()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"SCENARIO", "idle-close", "request-close", "FAIL eof-not-closed",
		"keepalive: idle 2h0m0s, interval 1m15s, 9 probes",
		"eof-not-closed: the server read EOF",
		"4 scenarios against 127.0.0.1:8080: 3 failed in 2.34s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestKeepaliveString(t *testing.T) {
	for _, tt := range []struct {
		ka    *collector.Keepalive
		timer string
		want  string
	}{
		{nil, "", "unknown (no keepalive timer)"},
		{nil, "keepalive", "unknown (keepalive timer running)"},
		{nil, "on", "unknown"},
		{&collector.Keepalive{}, "", "off"},
		{&collector.Keepalive{Enabled: true, Idle: time.Second, Interval: time.Second, Probes: 3, UserTimeout: 5 * time.Second}, "", "idle 1s, interval 1s, 3 probes, user timeout 5s"},
	} {
		if got := KeepaliveString(tt.ka, tt.timer); got != tt.want {
			t.Errorf("KeepaliveString(%+v, %q) = %q, want %q", tt.ka, tt.timer, got, tt.want)
		}
	}
}

func TestDeadPeerCause(t *testing.T) {
	const deadline = 10 * time.Second
	for _, tt := range []struct {
		s    collector.Socket
		want string
	}{
		{collector.Socket{Timer: ""}, CauseKeepaliveOff},
		{collector.Socket{Timer: "keepalive"}, CauseKeepaliveTooSlow},
		{collector.Socket{Timer: "on"}, CauseNotDropped},
		{collector.Socket{Keepalive: &collector.Keepalive{}}, CauseKeepaliveOff},
		{collector.Socket{Keepalive: &collector.Keepalive{Enabled: true, Idle: 15 * time.Second, Interval: 15 * time.Second, Probes: 9}}, CauseKeepaliveTooSlow},
		{collector.Socket{Keepalive: &collector.Keepalive{Enabled: true, Idle: time.Second, Interval: time.Second, Probes: 3}}, CauseNotDropped},
		{collector.Socket{Keepalive: &collector.Keepalive{UserTimeout: time.Second}}, CauseNotDropped},
	} {
		if got := deadPeerCause(&tt.s, deadline); got != tt.want {
			t.Errorf("deadPeerCause(timer %q, %+v) = %s, want %s", tt.s.Timer, tt.s.Keepalive, got, tt.want)
		}
	}
}
