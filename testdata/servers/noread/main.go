// Command noread accepts connections and never reads from them, like a
// server whose handler is blocked elsewhere. The peer's data and FIN stay
// unread; its sockets sit in CLOSE_WAIT with a non-empty receive queue.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
)

// held keeps every connection reachable, so the garbage collector never
// closes them.
var held []net.Conn

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
			log.Fatal(err)
		}
		held = append(held, c)
	}
}
