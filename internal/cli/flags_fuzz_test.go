package cli

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/collector"
	"github.com/spf13/pflag"
)

// fuzzFlagValue sets a fresh value from s. A refusal must be one line; an
// accepted value printed back with String must set the same value again.
func fuzzFlagValue[T any](t *testing.T, s string, newValue func(*T) pflag.Value, same func(a, b T) bool) (T, bool) {
	t.Helper()
	var got T
	if err := newValue(&got).Set(s); err != nil {
		if strings.ContainsAny(err.Error(), "\n\r") {
			t.Fatalf("Set(%q): error of more than one line: %q", s, err)
		}
		return got, false
	}
	printed := newValue(&got).String()
	var again T
	if err := newValue(&again).Set(printed); err != nil || !same(got, again) {
		t.Fatalf("Set(%q) gave %q, which sets %v (%v)", s, printed, again, err)
	}
	return got, true
}

func FuzzPortsValue(f *testing.F) {
	for _, s := range []string{"80", "8080,8443", " 443 , 80", "0", "65535", "65536", "-1", "80,", "0x50", "1e3", "8000-8100", "10-1", "1-65535", "80,70-90"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ports, ok := fuzzFlagValue(t, s, func(p *[]uint16) pflag.Value { return portsValue{p} }, slices.Equal[[]uint16])
		if !ok {
			return
		}
		// Sorted, each once, no 0; each item's ports (both ends of a
		// range) in, and no more than the items name.
		most := 0
		for _, item := range strings.Split(s, ",") {
			lo, hi, isRange := strings.Cut(strings.TrimSpace(item), "-")
			if !isRange {
				hi = lo
			}
			a, _ := strconv.Atoi(lo)
			b, _ := strconv.Atoi(hi)
			if !slices.Contains(ports, uint16(a)) || !slices.Contains(ports, uint16(b)) {
				t.Fatalf("%q gave ports %v, without %q", s, ports, item)
			}
			most += b - a + 1
		}
		if len(ports) == 0 || len(ports) > most || ports[0] == 0 || !slices.IsSortedFunc(ports, func(a, b uint16) int { return int(a) - int(b) }) ||
			len(slices.Compact(slices.Clone(ports))) != len(ports) {
			t.Fatalf("%q gave ports %v", s, ports)
		}
	})
}

func FuzzPidsValue(f *testing.F) {
	for _, s := range []string{"1", "4242,1", " 7 ", "0", "-1", "4194304", "99999999999999999999", "1,,2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pids, ok := fuzzFlagValue(t, s, func(p *[]int) pflag.Value { return pidsValue{p} }, slices.Equal[[]int])
		if !ok {
			return
		}
		if len(pids) != strings.Count(s, ",")+1 || slices.ContainsFunc(pids, func(p int) bool { return p <= 0 }) {
			t.Fatalf("%q gave pids %v", s, pids)
		}
	})
}

func FuzzCommsValue(f *testing.F) {
	for _, s := range []string{"nginx", "java,python3", " kworker/0:1 ", "a,,b", "", "(sd-pam)", "tmux: server", "\x1b[31mred", "my-long-service-name", "kworker/u4:2-events_unbound"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		comms, ok := fuzzFlagValue(t, s, func(p *[]string) pflag.Value { return commsValue{p} }, slices.Equal[[]string])
		if !ok {
			return
		}
		for _, c := range comms {
			if c == "" || c != strings.TrimSpace(c) || strings.Contains(c, ",") {
				t.Fatalf("%q gave names %q", s, comms)
			}
		}
	})
}

func FuzzStatesValue(f *testing.F) {
	for _, s := range []string{"close-wait", "CLOSE_WAIT,last-ack", "all", "connected", "bucket", "big", "synchronized", "listen", "listening", "closed", "", "close-wait,", "bogus"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		set, ok := fuzzFlagValue(t, s, func(p *collector.StateSet) pflag.Value { return statesValue{p} },
			func(a, b collector.StateSet) bool { return a == b })
		if ok && (set == 0 || set&^collector.StatesAll != 0) {
			t.Fatalf("%q gave states %b", s, set)
		}
	})
}

// FuzzParseDuration checks that an accepted duration is in [0, 36500d],
// that Go durations within it mean what time.ParseDuration says, and that
// N days are N*24h.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"90s", "5m", "1h30m", "2d", "1d12h", "0d", "0", "0s", "36500d", "36501d", "36500d1ns", "-1s", "1d-1h", "d", "1.5d", "99999999999999999999d", "+5m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDuration(s)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("parseDuration(%q): error of more than one line: %q", s, err)
			}
		} else if d < 0 || d > maxDuration {
			t.Fatalf("parseDuration(%q) = %v, outside [0, 36500d]", s, d)
		}
		if gd, gerr := time.ParseDuration(s); gerr == nil && gd >= 0 && (err != nil || d != gd) {
			t.Fatalf("parseDuration(%q) = %v, %v; time.ParseDuration says %v", s, d, err, gd)
		}
		if n, nerr := strconv.ParseUint(strings.TrimSuffix(s, "d"), 10, 32); nerr == nil && strings.HasSuffix(s, "d") && n <= 36500 {
			if want := time.Duration(n) * 24 * time.Hour; err != nil || d != want {
				t.Fatalf("parseDuration(%q) = %v, %v; want %v", s, d, err, want)
			}
		}
		if _, ok := fuzzFlagValue(t, s, func(p *time.Duration) pflag.Value { return durationValue{p} },
			func(a, b time.Duration) bool { return a == b }); ok != (err == nil) {
			t.Fatalf("durationValue and parseDuration disagree on %q", s)
		}
	})
}

func FuzzCountLimit(f *testing.F) {
	for _, s := range []string{"0", "10", "off", "OFF", "-1", "1e3", "9223372036854775808", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if s == "off" {
			return // unset, and shown as nothing in help
		}
		n, ok := fuzzFlagValue(t, s, func(p **int) pflag.Value { return &countLimit{p} },
			func(a, b *int) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) })
		if ok && (n == nil || *n < 0) {
			t.Fatalf("%q gave %v", s, fmtLimit(n))
		}
	})
}

func FuzzAgeLimit(f *testing.F) {
	for _, s := range []string{"1m", "5m", "1d", "off", "0s", "-1s", "36501d", "1h1s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var d *time.Duration
		err := (&ageLimit{&d}).Set(s)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("Set(%q): error of more than one line: %q", s, err)
			}
			return
		}
		if (d == nil) != (s == "off") || d != nil && (*d < 0 || *d > maxDuration) {
			t.Fatalf("%q gave %v", s, fmtLimit(d))
		}
		if d != nil && (&ageLimit{&d}).String() == "off" {
			t.Fatalf("%q shows as off", s)
		}
	})
}

func fmtLimit[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

// FuzzCheckHostPort feeds --listen and --target values. Every IP:PORT is
// accepted; what is accepted has a port in range and, if its host is
// written as an address, a valid IP, so no lookup is tried for it.
func FuzzCheckHostPort(f *testing.F) {
	for _, s := range []string{"127.0.0.1:10087", ":10087", "[::1]:0", "[fe80::1%eth0]:80", "localhost:80", "999.1.1.1:80",
		"127.0.0.1:99999", "127.0.0.1:http", "::1:80", "nocolon", "1.2.3:80", "[::ffff:1.2.3.4]:1"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, needPort bool) {
		minPort := uint64(0)
		if needPort {
			minPort = 1
		}
		err := checkHostPort(s, minPort)
		if err != nil && strings.ContainsAny(err.Error(), "\n\r") {
			t.Fatalf("checkHostPort(%q): error of more than one line: %q", s, err)
		}
		_, _, serr := net.SplitHostPort(s) // netip takes zones with "]" in them, net does not
		if ap, perr := netip.ParseAddrPort(s); perr == nil && serr == nil && uint64(ap.Port()) >= minPort && err != nil {
			t.Fatalf("checkHostPort(%q) refused an address: %v", s, err)
		}
		if err != nil {
			return
		}
		host, port, _ := net.SplitHostPort(s)
		if n, perr := strconv.ParseUint(port, 10, 16); perr != nil || n < minPort {
			t.Fatalf("checkHostPort(%q) accepted port %q", s, port)
		}
		if _, aerr := netip.ParseAddr(host); aerr != nil && host != "" && strings.Trim(host, "0123456789.:") == "" {
			t.Fatalf("checkHostPort(%q) accepted host %q", s, host)
		}
	})
}
