// Package closewaittest proves from a Go test that a server closes its
// side of each connection soon after the client leaves, instead of
// leaking sockets in CLOSE_WAIT. It runs the scenarios of "closewait
// test" (idle-close, request-close, half-close, abort-mid-request, reset,
// burst, and with root dead-peer) against a server listening on this
// host, and reads the server's own sockets from the kernel.
//
// In a test:
//
//	func TestServerClosesAfterFIN(t *testing.T) {
//		addr := startServer(t) // e.g. "127.0.0.1:41234"
//		closewaittest.AssertClosesAfterFIN(t, addr,
//			closewaittest.Conns(20),
//			closewaittest.Deadline(time.Second))
//	}
//
// A failure names each stuck connection and why it is stuck, e.g.
// "eof-not-closed: the server read EOF (a zero-byte read) and never
// called close()". The server may run in the test process itself.
//
// Reading sockets needs Linux: on other systems AssertClosesAfterFIN
// skips the test (fails it when CI=true). The dead-peer scenario also
// needs root (it adds an nftables rule); the others do not.
package closewaittest
