// Command nokeepalive is an echo server that closes on EOF but has TCP
// keepalive disabled and no timeouts: when a peer vanishes without FIN or
// RST (power cut, cable pulled) it keeps the connection forever.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	flag.Parse()
	// Go turns keepalive on for accepted connections by default; a
	// negative period turns it off.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			io.Copy(c, c) // echo until EOF or error
		}()
	}
}
