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
