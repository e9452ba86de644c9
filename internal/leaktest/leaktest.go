// Package leaktest builds real leaked-socket situations on loopback for
// tests: server sockets whose peer sent FIN (CLOSE_WAIT), held by this
// process or by child processes that inherit the fds.
package leaktest

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// Conn is the server side of one loopback connection.
type Conn struct {
	Local  netip.AddrPort // the listener's address
	Remote netip.AddrPort // the client's address
	File   *os.File       // the accepted socket; nil once handed off and closed
	client net.Conn
}

// Listen opens a listener on an ephemeral loopback port; network is "tcp4"
// (127.0.0.1) or "tcp6" (::1). It is closed when the test ends.
func Listen(t testing.TB, network string) *net.TCPListener {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "tcp6" {
		addr = "[::1]:0"
	}
	return ListenOn(t, network, addr)
}

// ListenOn is Listen on addr, e.g. "127.0.0.2:0".
func ListenOn(t testing.TB, network, addr string) *net.TCPListener {
	t.Helper()
	// No keepalive: Go enables it by default, and once the client's orphaned
	// FIN_WAIT2 expires a probe would draw an RST and end the CLOSE_WAIT.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// Accepted opens n connections to ln and accepts them. The client ends stay
// open; call CloseClients to send their FINs.
func Accepted(t testing.TB, ln *net.TCPListener, n int) []*Conn {
	t.Helper()
	return AcceptedFrom(t, ln, ln.Addr().Network(), ln.Addr().String(), n)
}

// AcceptedFrom is Accepted with the clients dialing network and addr, e.g.
// "tcp4" and "127.0.0.1:port" to a dual-stack listener on [::]:port, whose
// accepted sockets then have ::ffff:127.0.0.1 addresses.
func AcceptedFrom(t testing.TB, ln *net.TCPListener, network, addr string, n int) []*Conn {
	t.Helper()
	conns := make([]*Conn, 0, n)
	for range n {
		c, err := noKeepalive.Dial(network, addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		s, err := ln.AcceptTCP()
		if err != nil {
			c.Close()
			t.Fatalf("accept: %v", err)
		}
		f, err := s.File() // a dup; the net.Conn is not needed any more
		s.Close()
		if err != nil {
			c.Close()
			t.Fatalf("socket file: %v", err)
		}
		conns = append(conns, &Conn{
			Local:  addrPort(s.LocalAddr()),
			Remote: addrPort(s.RemoteAddr()),
			File:   f,
			client: c,
		})
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.client.Close()
			if c.File != nil {
				c.File.Close()
			}
		}
	})
	return conns
}

// Client returns the client end of the connection, e.g. to send data
// before CloseClients.
func (c *Conn) Client() net.Conn { return c.client }

// CloseWait returns n server sockets in CLOSE_WAIT on ln: each client is
// closed (FIN sent) and the server side is left open.
func CloseWait(t testing.TB, ln *net.TCPListener, n int) []*Conn {
	t.Helper()
	conns := Accepted(t, ln, n)
	CloseClients(t, conns)
	return conns
}

// CloseClients closes the client ends and waits until every server end has
// received the FIN (reads as readable with the FIN queued).
func CloseClients(t testing.TB, conns []*Conn) {
	t.Helper()
	for _, c := range conns {
		c.client.Close()
	}
	for _, c := range conns {
		if err := waitFIN(c.File); err != nil {
			t.Fatalf("waiting for FIN on %v: %v", c.Local, err)
		}
	}
}

// waitFIN polls the socket until the peer's FIN has arrived (TCP_INFO
// state is CLOSE_WAIT).
func waitFIN(f *os.File) error {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st, err := tcpState(f)
		if err != nil {
			return err
		}
		if st == closeWait {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return errors.New("no FIN after 5s")
}

// Files returns the sockets' files, for Hold.
func Files(conns []*Conn) []*os.File {
	fs := make([]*os.File, len(conns))
	for i, c := range conns {
		fs[i] = c.File
	}
	return fs
}

// Release closes this process's copies of the sockets, so only children
// that inherited them still hold them.
func Release(conns []*Conn) {
	for _, c := range conns {
		if c.File != nil {
			c.File.Close()
			c.File = nil
		}
	}
}

// noKeepalive dials without TCP keepalive, which Go turns on by default.
var noKeepalive = net.Dialer{KeepAlive: -1}

func addrPort(a net.Addr) netip.AddrPort {
	return a.(*net.TCPAddr).AddrPort()
}

// RequireRoot skips the test when not root, or fails it in CI (CI=true),
// where a missing prerequisite must not pass silently.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root")
	}
}

// Missing skips the test with the reason, or fails it when CI=true.
func Missing(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing in CI: %s", reason)
	}
	t.Skip(reason)
}
