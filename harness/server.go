package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Server is a server process the harness started, with its output kept
// for when a scenario fails.
type Server struct {
	cmd  *exec.Cmd
	out  *tail
	done chan struct{} // closed when the process has exited
	err  error         // the exit, once done is closed
	stop sync.Once
}

// StartServer runs argv (no shell) and waits until target accepts TCP
// connections, the process exits, or timeout passes. The process gets its
// own process group, so Stop reaches what a wrapper script started.
func StartServer(ctx context.Context, argv []string, target string, timeout time.Duration) (*Server, error) {
	if len(argv) == 0 {
		return nil, errors.New("empty command")
	}
	s := &Server{out: newTail(64 << 10), done: make(chan struct{})}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	setProcessGroup(s.cmd)
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	end := time.Now().Add(timeout)
	for {
		d := net.Dialer{Timeout: 200 * time.Millisecond}
		c, err := d.DialContext(ctx, "tcp", target)
		if err == nil {
			abort(c.(*net.TCPConn)) // RST: the probe leaves nothing on the server
			return s, nil
		}
		select {
		case <-s.done:
			return s, fmt.Errorf("%s exited before accepting connections on %s: %v", argv[0], target, s.err)
		case <-ctx.Done():
			s.Stop(time.Second)
			return s, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(end) {
			s.Stop(time.Second)
			return s, fmt.Errorf("%s did not accept connections on %s within %s: %w", argv[0], target, timeout, err)
		}
	}
}

// PID returns the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Exited returns nil while the server runs, and says how it ended once
// it has exited; it suits Options.ServerAlive.
func (s *Server) Exited() error {
	select {
	case <-s.done:
		if s.err == nil {
			return errors.New("server exited (status 0)")
		}
		return fmt.Errorf("server exited: %v", s.err)
	default:
		return nil
	}
}

// Stop sends SIGTERM to the server's process group and SIGKILL after
// grace if it is still running. It returns once the process has exited.
func (s *Server) Stop(grace time.Duration) {
	s.stop.Do(func() {
		select {
		case <-s.done:
			return
		default:
		}
		terminate(s.cmd)
		select {
		case <-s.done:
		case <-time.After(grace):
			kill(s.cmd)
			<-s.done
		}
	})
}

// Output returns what the server wrote to stdout and stderr, the last
// 64 KiB of it.
func (s *Server) Output() string { return s.out.String() }

// tail keeps the last max bytes written to it.
type tail struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped bool
}

func newTail(max int) *tail { return &tail{max: max} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.dropped = true
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(t.buf)
	if t.dropped {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:] // start at a whole line
		}
	}
	return s
}

// SplitCommand splits a command line into words the way a shell would for
// simple cases: blanks separate words, single quotes keep text as it is,
// double quotes and backslashes escape. There is no expansion; run
// "sh -c '...'" for that.
func SplitCommand(line string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	escaped := false
	for _, r := range line {
		switch {
		case escaped:
			w.WriteRune(r)
			escaped = false
		case quote == '\'':
			if r == '\'' {
				quote = 0
			} else {
				w.WriteRune(r)
			}
		case r == '\\':
			escaped, inWord = true, true
		case quote == '"':
			if r == '"' {
				quote = 0
			} else {
				w.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	switch {
	case escaped:
		return nil, errors.New("command ends with a backslash")
	case quote != 0:
		return nil, fmt.Errorf("unclosed %c quote in command", quote)
	}
	if inWord {
		words = append(words, w.String())
	}
	if len(words) == 0 {
		return nil, errors.New("empty command")
	}
	return words, nil
}
