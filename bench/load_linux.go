package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// holdSockets is the body of a holder process: it opens cw connections to
// its own listeners and closes the client ends (leaving cw server sockets in
// CLOSE_WAIT) and est connections kept open at both ends, prints "ready",
// and holds everything until stdin closes.
func holdSockets(ip string, cw, est int) error {
	p := &pairer{ip: ip}
	defer p.close()
	var keep []net.Conn
	for range cw {
		c, s, err := p.pair()
		if err != nil {
			return fmt.Errorf("close-wait connection: %w", err)
		}
		p.hangUp(c)
		keep = append(keep, s)
	}
	p.flush()
	for range est {
		c, s, err := p.pair()
		if err != nil {
			return fmt.Errorf("established connection: %w", err)
		}
		keep = append(keep, c, s)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range keep {
		abort(c)
	}
	return nil
}

// pairer makes loopback connections on ip, keepalive off at both ends, to
// listeners of its own: a new one every connsPerListener connections,
// whose clients bind ports from firstClientPort on, each once. When the
// time-wait table is full, a closed client's port comes free at once, and
// the kernel's own choice of port sometimes took it again for the same
// listener while that listener's socket of its last use was still held:
// the SYN drew a challenge ACK, the client reset it, and a CLOSE_WAIT
// socket was lost (TCPSYNChallenge; RELIABILITY.md, "The missing 3,000").
type pairer struct {
	ip      string
	lns     []net.Listener
	made    int
	port    int
	closing []net.Conn // clients half-closed by hangUp, not yet closed
}

// pair returns the client and the accepted server end of a new connection.
func (p *pairer) pair() (client, server net.Conn, err error) {
	network := "tcp4"
	if strings.Contains(p.ip, ":") {
		network = "tcp6"
	}
	if p.made%connsPerListener == 0 {
		ln, err := noKeepalive.Listen(context.Background(), network, net.JoinHostPort(p.ip, "0"))
		if err != nil {
			return nil, nil, err
		}
		p.lns, p.port = append(p.lns, ln), firstClientPort
	}
	p.made++
	ln := p.lns[len(p.lns)-1]
	for ; p.port <= 65535; p.port++ { // a port in use (a listener's): the next
		d := net.Dialer{KeepAlive: -1, LocalAddr: &net.TCPAddr{IP: net.ParseIP(p.ip), Port: p.port}, Control: reuseAddr}
		if client, err = d.Dial(network, ln.Addr().String()); !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	p.port++
	if err != nil {
		return nil, nil, err
	}
	if server, err = ln.Accept(); err != nil {
		client.Close()
		return nil, nil, err
	}
	return client, server, nil
}

// hangUp closes a client end, leaving its server end in CLOSE_WAIT, so
// that no reset can follow: the FIN goes first (shutdown), and the fd is
// closed once the FIN is acknowledged (FIN_WAIT2), while later clients are
// made. A client closed at once is an orphan in FIN_WAIT1; when the ACK of
// its FIN (delayed 2-8 ms here) reaches it while close() still holds it,
// the kernel keeps it on a timer rather than hand it to a time-wait
// socket, and at tcp_fin_timeout (60 s) the timer resets the connection:
// its CLOSE_WAIT end is gone (5 of 45,000 in one load; RELIABILITY.md,
// "Sockets lost a minute after the load").
func (p *pairer) hangUp(c net.Conn) {
	c.(*net.TCPConn).CloseWrite()
	p.closing = append(p.closing, c)
	for len(p.closing) > hangUpLag && finAcked(p.closing[0]) {
		p.closing[0].Close()
		p.closing = p.closing[1:]
	}
}

// hangUpLag is how many half-closed clients hangUp keeps before it looks
// for acknowledged ones to close.
const hangUpLag = 64

// flush closes the clients hangUp has not, each once its FIN is
// acknowledged or a second has passed.
func (p *pairer) flush() {
	deadline := time.Now().Add(time.Second)
	for _, c := range p.closing {
		for !finAcked(c) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		c.Close()
	}
	p.closing = nil
}

// finAcked reports whether c, half-closed, is in FIN_WAIT2: its FIN is
// acknowledged.
func finAcked(c net.Conn) bool {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return true
	}
	state := uint8(0)
	rc.Control(func(fd uintptr) {
		if ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			state = ti.State
		}
	})
	return state == tcpFinWait2
}

const tcpFinWait2 = 5 // include/net/tcp_states.h

// close closes the listeners and any client still half-closed.
func (p *pairer) close() {
	for _, c := range p.closing {
		c.Close()
	}
	for _, ln := range p.lns {
		ln.Close()
	}
}

// connsPerListener is the connections a holder makes to one listener,
// from client ports firstClientPort on.
const (
	connsPerListener = 1000
	firstClientPort  = 20000
)

// reuseAddr sets SO_REUSEADDR, so that a client port bound for one
// listener can be bound again for the next.
func reuseAddr(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	}); err != nil {
		return err
	}
	return serr
}

// abort closes c with an RST. A plain close of a held CLOSE_WAIT socket,
// whose peer is long gone, leaves an orphan in LAST_ACK resending its FIN
// for minutes; a few suites' worth pass tcp_max_orphans, and the kernel
// then resets live connections, the next suite's load among them.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// Go turns TCP keepalive on by default; once an orphaned client's FIN_WAIT2
// expires, a probe from the held end would draw an RST and end its CLOSE_WAIT.
var (
	noKeepalive     = net.ListenConfig{KeepAlive: -1}
	noKeepaliveDial = net.Dialer{KeepAlive: -1}
)

// load is a running socket load: holder processes that exit when the load
// is stopped.
type load struct {
	procs []*exec.Cmd
	pipes []io.Closer
	after []func() // once the holders are gone
}

// startHolders starts n holder processes (this binary, "hold" mode), each
// with its share of the sockets, and waits until all are ready.
func startHolders(n, cw, est int) (*load, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	l := &load{}
	for i := range n {
		ip := fmt.Sprintf("127.0.%d.1", 10+i)
		if i == n-1 && n > 1 {
			ip = "::1" // one holder on IPv6
		}
		cmd := exec.Command(self, "hold", ip, fmt.Sprint(cw/n), fmt.Sprint(est/n/2))
		if err := l.start(cmd); err != nil {
			l.stop()
			return nil, err
		}
	}
	return l, nil
}

// startSmall starts procs tiny processes (sleep) each holding per CLOSE_WAIT
// sockets, all made by one helper process that then closes its copies.
func startSmall(procs, per int) (*load, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	l := &load{}
	if err := l.start(exec.Command(self, "small", fmt.Sprint(procs), fmt.Sprint(per))); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *load) start(cmd *exec.Cmd) error {
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	l.procs = append(l.procs, cmd)
	l.pipes = append(l.pipes, in)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		return fmt.Errorf("holder %v did not get ready: %q %v", cmd.Args, line, err)
	}
	return nil
}

// stop ends the holders and their children (the whole process group).
func (l *load) stop() {
	for _, p := range l.pipes {
		p.Close()
	}
	for _, cmd := range l.procs {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}
	for _, f := range l.after {
		f()
	}
	// Let the kernel finish tearing the sockets down before the next load.
	time.Sleep(2 * time.Second)
}

// holdSmall is the body of the "small" helper: procs sleep(1) children, each
// inheriting per CLOSE_WAIT sockets.
func holdSmall(procs, per int) error {
	p := &pairer{ip: "127.0.1.1"}
	defer p.close()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return err
	}
	var children []*exec.Cmd
	for range procs {
		files := make([]*os.File, 0, per)
		for range per {
			c, s, err := p.pair()
			if err != nil {
				return err
			}
			p.hangUp(c)
			f, err := s.(*net.TCPConn).File()
			s.Close()
			if err != nil {
				return err
			}
			files = append(files, f)
		}
		cmd := exec.Command(sleep, "infinity")
		cmd.ExtraFiles = files
		if err := cmd.Start(); err != nil {
			return err
		}
		for _, f := range files {
			f.Close()
		}
		children = append(children, cmd)
	}
	p.flush()
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range children {
		c.Process.Kill()
		c.Wait()
	}
	return nil
}

// closedByPeer connects to ln, accepts, and closes the client end: the
// accepted end, returned, is in CLOSE_WAIT. The client is closed at once,
// not through pairer.hangUp: its only caller, soakProc, holds the socket
// for seconds, well before the reset hangUp avoids could come (60 s).
func closedByPeer(ln net.Listener) (net.Conn, error) {
	c, err := noKeepaliveDial.Dial(ln.Addr().Network(), ln.Addr().String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return ln.Accept()
}
