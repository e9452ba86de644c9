package testserver

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
)

// FreeAddr returns HOST:PORT for a server that must be told where to
// listen. The host is a random address in 127.0.0.0/8, so a client that
// takes the port as its ephemeral port towards 127.0.0.1 in the meantime
// does not collide; the port was free on it a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	host := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(254), 1+rand.IntN(254), 1+rand.IntN(254))
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Serve runs handle, each in its own goroutine, for every connection to a
// fresh listener on 127.0.0.1 that closes when the test ends, and returns
// its address: an in-process server for tests that need a given behaviour.
func Serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln.Addr().String()
}
