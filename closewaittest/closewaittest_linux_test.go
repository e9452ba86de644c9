package closewaittest_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/closewait/closewait/closewaittest"
	"github.com/closewait/closewait/internal/testserver"
)

func TestAssertPassesCorrectServer(t *testing.T) {
	t.Parallel()
	addr := testserver.Serve(t, func(c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
	})
	closewaittest.AssertClosesAfterFIN(t, addr, closewaittest.Conns(5), closewaittest.HTTP())
}

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
	fatal  bool
}

func (r *recorder) Helper() {}
func (r *recorder) Error(args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprint(args...))
}
func (r *recorder) Errorf(format string, args ...any) { r.Error(fmt.Sprintf(format, args...)) }
func (r *recorder) Fatalf(format string, args ...any) {
	r.Error(fmt.Sprintf(format, args...))
	r.fatal = true
}

func TestAssertNamesTheCause(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	addr := testserver.Serve(t, func(c net.Conn) {
		mu.Lock()
		held = append(held, c) // the bug: read to EOF, never close
		mu.Unlock()
		io.Copy(io.Discard, c)
	})
	r := &recorder{TB: t}
	closewaittest.AssertClosesAfterFIN(r, addr,
		closewaittest.Scenarios("idle-close", "reset"), closewaittest.Conns(2),
		closewaittest.Deadline(300*time.Millisecond), closewaittest.Payload([]byte("hi\n")))
	if len(r.errors) != 1 || r.fatal {
		t.Fatalf("recorded %d errors (fatal %v), want one non-fatal: %q", len(r.errors), r.fatal, r.errors)
	}
	msg := r.errors[0]
	for _, want := range []string{
		"server " + addr + " failed 1 of 2 scenarios",
		"idle-close: 2 of 2 connections still in CLOSE_WAIT 300ms after the client's FIN: eof-not-closed x2",
		"eof-not-closed: the server read EOF (a zero-byte read) and never called close()",
		"held by closewaittest.t", // this test process holds the sockets
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "reset:") {
		t.Errorf("message mentions the passing reset scenario:\n%s", msg)
	}
}

func TestCheckSetupError(t *testing.T) {
	t.Parallel()
	err := closewaittest.Check(t.Context(), testserver.ClosedAddr(t))
	var fe *closewaittest.Error
	if err == nil || errors.As(err, &fe) || !strings.Contains(err.Error(), "not reachable") {
		t.Fatalf("error %v, want a setup error: not reachable", err)
	}
}
