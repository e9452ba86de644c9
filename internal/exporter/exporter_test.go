package exporter_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/internal/exporter"
	"github.com/closewait/closewait/report"
)

var checkTime = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)

// metricsSnapshot is one CLOSE_WAIT socket of nginx.
func metricsSnapshot() (*collector.Snapshot, collector.StateCounts) {
	s := collector.Socket{State: collector.StateCloseWait, Inode: 1, Owners: []collector.Owner{{PID: 812, Comm: "nginx", FD: 3}}}
	return &collector.Snapshot{Host: "web-1", Time: checkTime, Sockets: []collector.Socket{s}},
		collector.StateCounts{collector.StateCloseWait: 1}
}

func TestExporterTransitions(t *testing.T) {
	var tally exporter.TransitionTally
	tally.Add(collector.StateEstablished, collector.StateCloseWait)
	tally.Add(collector.StateEstablished, collector.StateCloseWait)
	tally.Add(collector.StateCloseWait, collector.StateLastAck)
	snap, counts := metricsSnapshot()
	exp := exporter.New(func(context.Context) (*collector.Snapshot, collector.StateCounts, error) { return snap, counts, nil },
		exporter.Options{Transitions: &tally})
	want := `# HELP closewait_state_transitions_total TCP state transitions seen by the eBPF tracer since serve started it (--transitions); absent without it.
# TYPE closewait_state_transitions_total counter
closewait_state_transitions_total{from="close_wait",to="last_ack"} 1
closewait_state_transitions_total{from="established",to="close_wait"} 2
`
	if err := testutil.CollectAndCompare(exp, strings.NewReader(want), "closewait_state_transitions_total"); err != nil {
		t.Error(err)
	}
}

// fakeClock is a clock the test steps by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestExporterSharesCollections(t *testing.T) {
	snap, counts := metricsSnapshot()
	var calls atomic.Int32
	release := make(chan struct{})
	var fail atomic.Bool
	gather := func(ctx context.Context) (*collector.Snapshot, collector.StateCounts, error) {
		calls.Add(1)
		<-release
		if fail.Load() {
			return nil, nil, errors.New("boom")
		}
		return snap, counts, nil
	}
	clock := &fakeClock{now: checkTime}
	exp := exporter.New(gather, exporter.Options{TTL: 5 * time.Second, Now: clock.Now})

	// Concurrent scrapes while the collection blocks: all share it.
	const scrapers = 8
	var started, done sync.WaitGroup
	results := make([]*report.Scrape, scrapers)
	for i := range scrapers {
		started.Add(1)
		done.Go(func() {
			started.Done()
			results[i], _ = exp.Scrape()
		})
	}
	started.Wait()
	close(release) // from now on gather returns at once
	done.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("%d collections for %d concurrent scrapes, want 1", n, scrapers)
	}
	for i, r := range results {
		if r != results[0] {
			t.Errorf("scrape %d got another result", i)
		}
	}

	// Within the TTL: the cached result. After it: a new collection.
	clock.step(4 * time.Second)
	exp.Scrape()
	if n := calls.Load(); n != 1 {
		t.Errorf("%d collections within the TTL, want 1", n)
	}
	clock.step(2 * time.Second)
	exp.Scrape()
	if n := calls.Load(); n != 2 {
		t.Errorf("%d collections after the TTL, want 2", n)
	}

	// A failure counts once, however many scrapes the cache answers.
	fail.Store(true)
	clock.step(10 * time.Second)
	for range 3 {
		if s, failures := exp.Scrape(); s.Err == nil || failures != 1 {
			t.Errorf("failed scrape: err %v, failures %d; want an error and 1", s.Err, failures)
		}
	}
	clock.step(10 * time.Second)
	if _, failures := exp.Scrape(); failures != 2 {
		t.Errorf("failures %d after a second failed collection, want 2", failures)
	}
}
