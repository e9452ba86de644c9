package harness

import (
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"time"
)

// JUnit XML as Jenkins, GitLab and GitHub's test reporters read it: a
// testsuites root with one testsuite, one testcase per scenario, a
// failure element with message and type for each failed one.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string          `xml:"name,attr"`
	Tests      int             `xml:"tests,attr"`
	Failures   int             `xml:"failures,attr"`
	Errors     int             `xml:"errors,attr"`
	Skipped    int             `xml:"skipped,attr"`
	Time       string          `xml:"time,attr"`
	Timestamp  string          `xml:"timestamp,attr"`
	Hostname   string          `xml:"hostname,attr,omitempty"`
	Properties []junitProperty `xml:"properties>property"`
	Cases      []junitCase     `xml:"testcase"`
	SystemOut  *junitText      `xml:"system-out,omitempty"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",cdata"`
}

// junitText is element text as CDATA: multi-line output stays readable in
// the file instead of turning into &#xA; escapes.
type junitText struct {
	Text string `xml:",cdata"`
}

// WriteJUnit writes the report as JUnit XML: one testsuite, one testcase
// per scenario. serverOutput, when not empty, goes to the suite's
// system-out, where CI shows it next to the failures.
func WriteJUnit(w io.Writer, rep *Outcome, serverOutput string) error {
	suite := junitSuite{
		Name:      "closewait test " + rep.Target,
		Tests:     len(rep.Scenarios),
		Failures:  rep.Failed(),
		Time:      junitTime(rep.Duration),
		Timestamp: rep.Started.UTC().Format("2006-01-02T15:04:05"),
		Hostname:  rep.Host,
		Properties: []junitProperty{
			{"target", rep.Target},
			{"source", rep.Source},
		},
	}
	if serverOutput != "" {
		suite.SystemOut = &junitText{xmlText(serverOutput)}
	}
	for i := range rep.Scenarios {
		s := &rep.Scenarios[i]
		tc := junitCase{Name: s.Name, Classname: "closewait.test", Time: junitTime(s.Duration)}
		if !s.Passed() {
			typ := "closewait"
			if len(s.Failures) > 0 && s.Failures[0].Cause() != "" {
				typ = s.Failures[0].Cause()
			}
			text := strings.Join(s.Details(0), "\n")
			if s.OK > 0 {
				text += fmt.Sprintf("\n  passed: %d, close latency p50 %s, p99 %s, max %s", s.OK, fmtDuration(s.P50), fmtDuration(s.P99), fmtDuration(s.Max))
			}
			tc.Failure = &junitFailure{Message: s.Summary(), Type: typ, Text: xmlText(text)}
		}
		suite.Cases = append(suite.Cases, tc)
	}
	doc := junitSuites{
		Name: "closewait test", Tests: suite.Tests, Failures: suite.Failures,
		Time: suite.Time, Suites: []junitSuite{suite},
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// xmlText makes arbitrary output safe inside XML: valid UTF-8, and no
// control characters XML 1.0 forbids (CDATA does not escape them).
func xmlText(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0xFFFE || r == 0xFFFF {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

// junitTime is seconds with millisecond precision, as JUnit readers parse it.
func junitTime(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }
