package report_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/report"
)

// exposition renders collectors in the Prometheus text format and returns
// its sample lines (no HELP or TYPE), sorted as the registry sorts them,
// without empty labels: Prometheus stores `x=""` as no label x.
func exposition(t *testing.T, cs ...prometheus.Collector) []string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(cs...)
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.PanicOnError}).
		ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
	var lines []string
	for l := range strings.SplitSeq(rec.Body.String(), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			l = emptyLabel.ReplaceAllString(l, "")
			l = strings.Replace(strings.Replace(l, "{,", "{", 1), "{}", "", 1)
			lines = append(lines, l)
		}
	}
	return lines
}

// emptyLabel matches a label with an empty value in an exposition line.
var emptyLabel = regexp.MustCompile(`,?\b[a-z_]+=""`)

func scrapeCollector(s *report.Scrape, failures uint64, opts report.MetricsOptions) prometheus.Collector {
	return prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
		for _, m := range report.ScrapeMetrics(s, failures, opts) {
			ch <- m
		}
	})
}

// metricsSnapshot has five commands, one socket without owner and one
// process calling itself "other", to exercise the top N.
func metricsSnapshot() (*collector.Snapshot, collector.StateCounts) {
	var socks []collector.Socket
	socks = append(socks, many(3, 0, 812, "nginx", 100*time.Second)...)  // 100s, 99s, 98s
	socks = append(socks, many(2, 10, 900, "java", 4000*time.Second)...) // 4000s, 3999s
	socks = append(socks, sock(20, 1200, "python3", -1, false))          // unknown age
	socks = append(socks, sock(21, 0, "", -1, false, collector.CauseNotAccepted))
	socks = append(socks, sock(22, 1300, "other", 10*time.Second, true))
	socks = append(socks, sock(23, 813, "nginx", 500*time.Millisecond, true)) // a second nginx process
	snap := snapshot(socks)
	counts := collector.StateCounts{}
	for _, st := range collector.AllStates {
		counts[st] = 0
	}
	counts[collector.StateCloseWait] = len(socks)
	counts[collector.StateEstablished] = 42
	counts[collector.StateListen] = 3
	return snap, counts
}

func TestScrapeMetrics(t *testing.T) {
	snap, counts := metricsSnapshot()
	// fds of the top 2 holders: java has no limit; 1200 is third.
	fds := map[int]collector.FDUsage{812: {Open: 120, Limit: 1024}, 900: {Open: 3000}, 1200: {Open: 9, Limit: 9}}
	s := &report.Scrape{Snapshot: snap, Counts: counts, Duration: 250 * time.Millisecond, FDs: fds}
	got := exposition(t, scrapeCollector(s, 2, report.MetricsOptions{Top: 2, PerPID: true}))
	want := []string{
		// The histogram: 7 sockets of known age (python3 and the ownerless one have none).
		`closewait_close_wait_age_seconds_bucket{le="1"} 1`,
		`closewait_close_wait_age_seconds_bucket{le="5"} 1`,
		`closewait_close_wait_age_seconds_bucket{le="15"} 2`,
		`closewait_close_wait_age_seconds_bucket{le="60"} 2`,
		`closewait_close_wait_age_seconds_bucket{le="300"} 5`,
		`closewait_close_wait_age_seconds_bucket{le="900"} 5`,
		`closewait_close_wait_age_seconds_bucket{le="3600"} 5`,
		`closewait_close_wait_age_seconds_bucket{le="14400"} 7`,
		`closewait_close_wait_age_seconds_bucket{le="86400"} 7`,
		`closewait_close_wait_age_seconds_bucket{le="604800"} 7`,
		`closewait_close_wait_age_seconds_bucket{le="+Inf"} 7`,
		`closewait_close_wait_age_seconds_sum 8306.5`,
		`closewait_close_wait_age_seconds_count 7`,
		// nginx (two processes, 4 sockets) and java are the top 2; the rest,
		// including the process named "other", add up in comm="other",
		// except the socket of no process, which keeps comm="-".
		`closewait_close_wait_oldest_age_seconds{comm="java"} 4000`,
		`closewait_close_wait_oldest_age_seconds{comm="nginx"} 100`,
		`closewait_close_wait_oldest_age_seconds{comm="other"} 10`,
		// Every socket here was accepted on port 8080.
		`closewait_close_wait_port_sockets{port="8080"} 9`,
		`closewait_close_wait_process_oldest_age_seconds{comm="java",pid="900"} 4000`,
		`closewait_close_wait_process_oldest_age_seconds{comm="nginx",pid="812"} 100`,
		`closewait_close_wait_process_sockets{comm="java",pid="900"} 2`,
		`closewait_close_wait_process_sockets{comm="nginx",pid="812"} 3`,
		// Split by main cause.
		`closewait_close_wait_sockets{cause="eof-not-closed",comm="java"} 2`,
		`closewait_close_wait_sockets{cause="eof-not-closed",comm="nginx"} 4`,
		`closewait_close_wait_sockets{cause="eof-not-closed",comm="other"} 2`,
		`closewait_close_wait_sockets{cause="not-accepted",comm="-"} 1`,
		// The netlink source sees closed sockets: none here is a true 0.
		`closewait_closed_socket_fds{comm="other"} 0`,
		`closewait_process_max_fds{comm="nginx",pid="812"} 1024`,
		`closewait_process_open_fds{comm="java",pid="900"} 3000`,
		`closewait_process_open_fds{comm="nginx",pid="812"} 120`,
		`closewait_scrape_duration_seconds 0.25`,
		`closewait_scrape_errors_total 2`,
		`closewait_sockets{state="close"} 0`,
		`closewait_sockets{state="close_wait"} 9`,
		`closewait_sockets{state="closing"} 0`,
		`closewait_sockets{state="established"} 42`,
		`closewait_sockets{state="fin_wait1"} 0`,
		`closewait_sockets{state="fin_wait2"} 0`,
		`closewait_sockets{state="last_ack"} 0`,
		`closewait_sockets{state="listen"} 3`,
		`closewait_sockets{state="syn_recv"} 0`,
		`closewait_sockets{state="syn_sent"} 0`,
		`closewait_sockets{state="time_wait"} 0`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestScrapeMetricsSumsToTotal(t *testing.T) {
	snap, counts := metricsSnapshot()
	for top := 1; top <= 6; top++ {
		var sum float64
		for _, m := range report.ScrapeMetrics(&report.Scrape{Snapshot: snap, Counts: counts}, 0, report.MetricsOptions{Top: top}) {
			if strings.Contains(m.Desc().String(), `"closewait_close_wait_sockets"`) {
				var pb dto.Metric
				if err := m.Write(&pb); err != nil {
					t.Fatal(err)
				}
				sum += pb.GetGauge().GetValue()
			}
		}
		if sum != float64(counts[collector.StateCloseWait]) {
			t.Errorf("top %d: per-command sum %v, want %d", top, sum, counts[collector.StateCloseWait])
		}
	}
}

func TestScrapeMetricsFailed(t *testing.T) {
	s := &report.Scrape{Err: errors.New("sock_diag: permission denied"), Duration: time.Second}
	got := exposition(t, scrapeCollector(s, 1, report.MetricsOptions{}))
	want := []string{"closewait_scrape_duration_seconds 1", "closewait_scrape_errors_total 1"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q: a failed collection shows no socket metrics", got, want)
	}
}

func TestScrapeMetricsOddCommands(t *testing.T) {
	// Processes named like the reserved values keep series of their own.
	snap := snapshot([]collector.Socket{
		sock(1, 5, "bad\xffutf8", 1, true), sock(2, 6, "", 1, true),
		sock(3, 7, "-", 1, true), sock(4, 8, "other", 1, true), sock(5, 0, "", -1, false, collector.CauseNotAccepted),
	})
	s := &report.Scrape{Snapshot: snap, Counts: collector.StateCounts{collector.StateCloseWait: 5}}
	got := strings.Join(exposition(t, scrapeCollector(s, 0, report.MetricsOptions{})), "\n")
	for _, want := range []string{
		`closewait_close_wait_sockets{cause="eof-not-closed",comm="bad\\xffutf8"} 1`, `closewait_close_wait_sockets{cause="eof-not-closed",comm="''"} 1`,
		`closewait_close_wait_sockets{cause="eof-not-closed",comm="'-'"} 1`, `closewait_close_wait_sockets{cause="eof-not-closed",comm="'other'"} 1`,
		`closewait_close_wait_sockets{cause="not-accepted",comm="-"} 1`, `closewait_close_wait_sockets{cause="none",comm="other"} 0`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}

// TestScrapeMetricsContainers checks the namespace, pod and container
// labels: the container's name, else its short id, empty outside one; and
// that each command and container counts against --top as one group.
func TestScrapeMetricsContainers(t *testing.T) {
	const id = "3f1c2a7d9b8e4f60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718"
	inContainer := func(s collector.Socket, c *collector.Container) collector.Socket {
		s.Owners[0].Proc = &collector.Process{Container: c}
		return s
	}
	bare := &collector.Container{Runtime: "containerd", ID: id, PodUID: "8d1e3b6a-2f4c-4b1e-9a7d-5c6b7a8f9e0d"}
	named := &collector.Container{ID: strings.Repeat("a", 64), Pod: "web-7d9f8c6b5-x2x4k", Namespace: "shop", Name: "web"}
	snap := snapshot([]collector.Socket{
		inContainer(sock(1, 10, "server", 30*time.Second, true), bare),
		inContainer(sock(2, 10, "server", 20*time.Second, true), bare),
		inContainer(sock(3, 11, "server", 10*time.Second, true), named),
		sock(4, 12, "server", 5*time.Second, true),
	})
	s := &report.Scrape{Snapshot: snap, Counts: collector.StateCounts{collector.StateCloseWait: 4},
		FDs: map[int]collector.FDUsage{10: {Open: 50}}}
	got := strings.Join(exposition(t, scrapeCollector(s, 0, report.MetricsOptions{Top: 2, PerPID: true})), "\n")
	for _, want := range []string{
		`closewait_close_wait_sockets{cause="eof-not-closed",comm="server",container="3f1c2a7d9b8e"} 2`,
		`closewait_close_wait_sockets{cause="eof-not-closed",comm="server",container="web",namespace="shop",pod="web-7d9f8c6b5-x2x4k"} 1`,
		// The third group, the host's server, is past --top 2.
		`closewait_close_wait_sockets{cause="eof-not-closed",comm="other"} 1`,
		`closewait_close_wait_oldest_age_seconds{comm="server",container="3f1c2a7d9b8e"} 30`,
		`closewait_close_wait_process_sockets{comm="server",container="3f1c2a7d9b8e",pid="10"} 2`,
		`closewait_close_wait_process_sockets{comm="server",container="web",namespace="shop",pid="11",pod="web-7d9f8c6b5-x2x4k"} 1`,
		`closewait_process_open_fds{comm="server",container="3f1c2a7d9b8e",pid="10"} 50`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}
