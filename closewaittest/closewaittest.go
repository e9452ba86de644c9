package closewaittest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/harness"
)

// Option adjusts a check.
type Option func(*config)

type config struct {
	opts harness.Options
	http bool
}

// Scenarios picks the scenarios by name (see harness.Scenarios); the
// default is every scenario but dead-peer.
func Scenarios(names ...string) Option {
	return func(c *config) { c.opts.Scenarios = names }
}

// Conns sets the number of connections per scenario (default 10).
func Conns(n int) Option { return func(c *config) { c.opts.Conns = n } }

// Deadline sets how long after the client's FIN a server socket may stay
// in CLOSE_WAIT (default 2s).
func Deadline(d time.Duration) Option { return func(c *config) { c.opts.Deadline = d } }

// DeadPeerDeadline sets how long the server may keep a connection whose
// client vanished, in the dead-peer scenario (default 10s).
func DeadPeerDeadline(d time.Duration) Option {
	return func(c *config) { c.opts.DeadPeerDeadline = d }
}

// Payload sets what the clients send (default "closewait test\n").
func Payload(p []byte) Option { return func(c *config) { c.opts.Payload = p } }

// HTTP makes the clients send a minimal HTTP/1.1 request.
func HTTP() Option { return func(c *config) { c.http = true } }

// Error is what Check returns when a scenario failed. Its message names
// every failed scenario, the stuck connections and their causes.
type Error struct {
	Report *harness.Outcome
}

// shownPerScenario bounds the connections an Error message lists per
// scenario; the Report has them all.
const shownPerScenario = 3

// Error lists each failed scenario with its summary, up to three stuck
// connections and what each cause means.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "server %s failed %d of %d scenarios:", e.Report.Target, e.Report.Failed(), len(e.Report.Scenarios))
	for i := range e.Report.Scenarios {
		s := &e.Report.Scenarios[i]
		if s.Passed() {
			continue
		}
		fmt.Fprintf(&b, "\n%s: %s", s.Name, s.Summary())
		for _, l := range s.Details(shownPerScenario) {
			fmt.Fprintf(&b, "\n%s", l)
		}
	}
	return b.String()
}

// Check runs the scenarios against the server at addr (HOST:PORT, on
// this host). It returns nil when every scenario passed, an *Error when
// one failed, and another error when it could not measure (server not
// reachable, not Linux, dead-peer without root).
func Check(ctx context.Context, addr string, opts ...Option) error {
	c := config{opts: harness.Options{Target: addr}}
	for _, o := range opts {
		o(&c)
	}
	if c.http {
		c.opts.Payload = harness.HTTPRequest(addr)
	}
	rep, err := harness.Run(ctx, c.opts)
	if err != nil {
		return err
	}
	if !rep.Passed() {
		return &Error{Report: rep}
	}
	return nil
}

// AssertClosesAfterFIN fails t when the server at addr keeps a socket in
// CLOSE_WAIT past the deadline in any scenario, with a message naming the
// stuck connections and the cause. It stops t when it cannot measure, and
// skips t where socket tables cannot be read (not Linux), except under
// CI=true, where a check that cannot run fails rather than pass unseen.
func AssertClosesAfterFIN(t testing.TB, addr string, opts ...Option) {
	t.Helper()
	if runtime.GOOS != "linux" {
		const why = "closewaittest: reading the server's sockets needs Linux"
		if os.Getenv("CI") == "true" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	err := Check(t.Context(), addr, opts...)
	var fe *Error
	switch {
	case errors.As(err, &fe):
		t.Error("closewaittest: " + fe.Error())
	case err != nil:
		t.Fatalf("closewaittest: %v", err)
	}
}
