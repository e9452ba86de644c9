package harness

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// How long a client listens for the server's answer before it leaves: up
// to answerWait for the first byte (abortWait after a partial request,
// which a server need not answer), then until quietGap passes without
// data, never longer than readCap.
const (
	answerWait = 500 * time.Millisecond
	abortWait  = 100 * time.Millisecond
	quietGap   = 20 * time.Millisecond
	readCap    = 2 * time.Second
	writeWait  = 2 * time.Second
)

// play runs the clients of one scenario until each has left. Clients of
// burst and dead-peer leave together once all are ready; the others
// leave as soon as their own exchange is done. Clients that keep reading
// after they left (half-close) do so under bg.
func (r *runner) play(ctx context.Context, name string, tr *tracker, bg *sync.WaitGroup, res *ScenarioResult) error {
	together := name == Burst || name == DeadPeer
	var done, ready sync.WaitGroup
	start := make(chan struct{})
	var active []*tracked
	for _, c := range tr.conns {
		if c.done { // connect failed or never established: nothing to leave
			continue
		}
		active = append(active, c)
		if together {
			ready.Add(1)
		}
		done.Go(func() {
			if r.exchange(name, c.conn) {
				tr.serverClosed(c)
			}
			if together {
				ready.Done()
				<-start
			}
			r.leave(name, c, tr, bg)
		})
	}
	var err error
	if together {
		ready.Wait()
		if name == DeadPeer {
			err = r.vanish(ctx, active, res)
		}
		close(start)
	}
	done.Wait()
	return err
}

// vanish records the server sockets' keepalive settings while they are
// idle and accepted, then drops the clients' packets both ways.
func (r *runner) vanish(ctx context.Context, conns []*tracked, res *ScenarioResult) error {
	snap, err := r.details(ctx, false) // settings only: no owner scan
	if err != nil {
		return err
	}
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		if len(conns) > 0 && tupleOf(s) == conns[0].key {
			res.Keepalive, res.KeepaliveTimer = s.Keepalive, s.Timer
			break
		}
	}
	if r.dropper == nil {
		return errors.New("no packet dropper")
	}
	flows := make([]flow, len(conns))
	for i, c := range conns {
		flows[i] = flow{client: c.key.remote.Port(), server: c.key.local.Port()}
	}
	return r.dropper.drop(flows)
}

// exchange is what a client does before it leaves. It reports whether
// the server closed the connection first (the client read EOF).
func (r *runner) exchange(name string, c *net.TCPConn) (eof bool) {
	p := r.opts.Payload
	switch name {
	case IdleClose, HalfClose:
		// idle-close sends nothing; half-close sends as it leaves.
	case AbortMidRequest:
		send(c, p[:(len(p)+1)/2])
		return readAWhile(c, abortWait)
	default: // request-close, reset, burst, dead-peer
		send(c, p)
		return readAWhile(c, answerWait)
	}
	return false
}

// leave is the moment the client goes: FIN, RST or, for dead-peer, a
// FIN that the drop rule swallows. The tracker's clock starts just before.
func (r *runner) leave(name string, c *tracked, tr *tracker, bg *sync.WaitGroup) {
	switch name {
	case Reset:
		tr.fin(c, time.Now())
		abort(c.conn)
	case HalfClose:
		send(c.conn, r.opts.Payload)
		tr.fin(c, time.Now())
		c.conn.CloseWrite()
		// The server may still answer; read until it closes (or the
		// scenario ends and closes us).
		bg.Go(func() { io.Copy(io.Discard, c.conn) })
	default:
		// Unread data would turn the close into an RST, which makes the
		// kernel drop the server socket and hides a leak.
		drain(c.conn)
		tr.fin(c, time.Now())
		c.conn.Close()
	}
}

// send writes p; errors are left to the measurement: a server that
// refuses data has dropped or reset the connection, which shows there.
func send(c *net.TCPConn, p []byte) {
	c.SetWriteDeadline(time.Now().Add(writeWait))
	c.Write(p)
	c.SetWriteDeadline(time.Time{})
}

// readAWhile reads what the server answers: up to first for the first
// byte, then until quietGap passes without data. It reports whether the
// server closed the connection (EOF).
func readAWhile(c *net.TCPConn, first time.Duration) (eof bool) {
	buf := make([]byte, 32<<10)
	end := time.Now().Add(readCap)
	c.SetReadDeadline(time.Now().Add(first))
	defer c.SetReadDeadline(time.Time{})
	for time.Now().Before(end) {
		if _, err := c.Read(buf); err != nil {
			return errors.Is(err, io.EOF)
		}
		c.SetReadDeadline(time.Now().Add(quietGap))
	}
	return false
}

// drain reads what is already queued. A past deadline would fail before
// reading, hence the short one.
func drain(c *net.TCPConn) {
	buf := make([]byte, 32<<10)
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	c.SetReadDeadline(time.Time{})
}

// abort closes with SO_LINGER 0: the kernel sends an RST and drops the
// socket at once.
func abort(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}
