package leaktest

import (
	"bufio"
	"bytes"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"
)

// Queued is a connection to a listener that no one accepted: the client
// closed it, so the server side waits in the accept queue in CLOSE_WAIT,
// with no fd.
type Queued struct {
	Remote netip.AddrPort // the client's address
}

// Queue leaves n connections in ln's accept queue in CLOSE_WAIT: each
// client connects and closes. It waits until the kernel shows them so.
func Queue(t testing.TB, ln *net.TCPListener, n int) []Queued {
	t.Helper()
	var out []Queued
	for range n {
		c, err := noKeepalive.Dial(ln.Addr().Network(), ln.Addr().String())
		if err != nil {
			t.Fatalf("dial %v: %v", ln.Addr(), err)
		}
		out = append(out, Queued{Remote: addrPort(c.LocalAddr())})
		c.Close()
	}
	local := addrPort(ln.Addr())
	for _, q := range out {
		deadline := time.Now().Add(5 * time.Second)
		for !inCloseWait(local.Port(), q.Remote.Port()) {
			if time.Now().After(deadline) {
				t.Fatalf("queued connection from %v: no CLOSE_WAIT after 5s", q.Remote)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return out
}

// inCloseWait reports whether this thread's /proc/net/tcp or tcp6 lists a
// CLOSE_WAIT socket from local port lport to remote port rport.
func inCloseWait(lport, rport uint16) bool {
	for _, name := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := bytes.Fields(sc.Bytes())
			if len(fields) < 4 || string(fields[3]) != "08" {
				continue
			}
			if port(fields[1]) == lport && port(fields[2]) == rport {
				f.Close()
				return true
			}
		}
		f.Close()
	}
	return false
}

// port takes the hex port after the colon of an address in /proc/net/tcp.
func port(addr []byte) uint16 {
	i := bytes.LastIndexByte(addr, ':')
	if i < 0 {
		return 0
	}
	p, _ := strconv.ParseUint(string(addr[i+1:]), 16, 16)
	return uint16(p)
}
