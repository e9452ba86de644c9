// Command keepalive is an echo server that notices vanished peers: TCP
// keepalive probes after 1 s idle, every 1 s, and gives up after 3
// unanswered probes; the failed read then closes the connection.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	flag.Parse()
	lc := net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{
		Enable:   true,
		Idle:     time.Second,
		Interval: time.Second,
		Count:    3,
	}}
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
			if _, err := io.Copy(c, c); err != nil {
				log.Printf("%s: %v", c.RemoteAddr(), err) // e.g. connection timed out
			}
		}()
	}
}
