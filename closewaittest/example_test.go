//go:build linux

package closewaittest_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"

	"github.com/closewait/closewait/closewaittest"
)

// A correct echo server, in the test's own process: it closes each
// connection once the client has gone, so every scenario passes.
func Example() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close() // the fix: close on EOF and on error
				io.Copy(c, c)
			}()
		}
	}()

	err = closewaittest.Check(context.Background(), ln.Addr().String(), closewaittest.Conns(5))
	fmt.Println("leaks found:", err)
	// Output: leaks found: <nil>
}
