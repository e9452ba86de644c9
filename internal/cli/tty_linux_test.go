package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns a new pseudo-terminal's master and slave.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// TestNoTerminalQuery runs commands on a terminal that answers nothing:
// none may ask the terminal anything (a query waits up to 5 s for its
// answer, as bubbletea v1's init did in every command).
func TestNoTerminalQuery(t *testing.T) {
	bin := closewaitBinary(t)
	for _, args := range [][]string{{"--version"}, {"--port", "1"}, {"check", "--port", "1"}} {
		t.Run(args[0], func(t *testing.T) {
			master, slave := openPTY(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
			// Its own session with the terminal as its controlling one, in
			// the foreground: where a query would be sent.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			slave.Close()
			var out bytes.Buffer
			io.Copy(&out, master) // ends with EIO when the last slave fd closes
			cmd.Wait()
			if ctx.Err() != nil {
				t.Fatalf("closewait %v did not end: %q", args, out.String())
			}
			for _, q := range []string{"\x1b]11;?", "\x1b]10;?", "\x1b[6n", "\x1b[c"} {
				if bytes.Contains(out.Bytes(), []byte(q)) {
					t.Errorf("closewait %v asked the terminal %q: %q", args, q, out.String())
				}
			}
			if out.Len() == 0 {
				t.Errorf("closewait %v wrote nothing to the terminal", args)
			}
		})
	}
}
