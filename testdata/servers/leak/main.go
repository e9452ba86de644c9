// Command leak is the classic CLOSE_WAIT leak: it reads each connection
// until EOF and then forgets it without calling Close. Each departed
// client leaves one socket in CLOSE_WAIT and one fd open.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"time"
)

// held keeps every connection reachable: otherwise the garbage collector
// would close them and hide the bug.
var (
	mu   sync.Mutex
	held []net.Conn
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			// One failed accept is not fatal: under Wine a probe that
			// resets before AcceptEx completes fails it with WSAENOTCONN.
			log.Print(err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		mu.Lock()
		held = append(held, c)
		mu.Unlock()
		go func() {
			io.Copy(io.Discard, c) // reads until EOF...
			// ...and the bug: no c.Close().
		}()
	}
}
