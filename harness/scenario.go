package harness

import (
	"fmt"
	"slices"
	"strings"
)

// Scenario names; they are stable, as CI configurations spell them.
const (
	IdleClose       = "idle-close"
	RequestClose    = "request-close"
	HalfClose       = "half-close"
	AbortMidRequest = "abort-mid-request"
	Reset           = "reset"
	Burst           = "burst"
	DeadPeer        = "dead-peer"
)

// Scenario describes one way a client leaves.
type Scenario struct {
	Name string
	// About is a one-line description for help texts.
	About string
	// Default is set for the scenarios that run when none are named.
	Default bool
}

var scenarios = []Scenario{
	{IdleClose, "connect, close without sending", true},
	{RequestClose, "send the payload, read the answer for a moment, close", true},
	{HalfClose, "send the payload, shutdown(SHUT_WR), read until the server closes", true},
	{AbortMidRequest, "send the first half of the payload, close", true},
	{Reset, "send the payload, close with SO_LINGER 0 (RST)", true},
	{Burst, "every connection sends the payload, then all close at once", true},
	{DeadPeer, "the client vanishes (nftables drops its packets); the server must drop it (root)", false},
}

// Scenarios lists every scenario in the order a run takes them.
func Scenarios() []Scenario { return slices.Clone(scenarios) }

// DefaultScenarios names the scenarios that run when none are named: all
// but dead-peer, which needs root and takes seconds.
func DefaultScenarios() []string {
	var names []string
	for _, s := range scenarios {
		if s.Default {
			names = append(names, s.Name)
		}
	}
	return names
}

// ParseScenarios reads a comma list of scenario names; "all" means every
// scenario, "default" the default set. The result is in run order,
// without duplicates.
func ParseScenarios(list string) ([]string, error) {
	want := map[string]bool{}
	for _, raw := range strings.Split(list, ",") {
		name := strings.ToLower(strings.TrimSpace(raw))
		switch {
		case name == "":
			return nil, fmt.Errorf("empty scenario name in %q", list)
		case name == "all":
			for _, s := range scenarios {
				want[s.Name] = true
			}
		case name == "default":
			for _, n := range DefaultScenarios() {
				want[n] = true
			}
		case slices.ContainsFunc(scenarios, func(s Scenario) bool { return s.Name == name }):
			want[name] = true
		default:
			return nil, fmt.Errorf("unknown scenario %q (want %s, all or default)", strings.TrimSpace(raw), strings.Join(names(), ", "))
		}
	}
	var out []string
	for _, s := range scenarios {
		if want[s.Name] {
			out = append(out, s.Name)
		}
	}
	return out, nil
}

func names() []string {
	out := make([]string, len(scenarios))
	for i, s := range scenarios {
		out[i] = s.Name
	}
	return out
}

func validScenario(name string) bool { return slices.Contains(names(), name) }
