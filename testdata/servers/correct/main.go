// Command correct is an echo server that does it right: a zero-byte read
// (EOF) or any error ends the connection with Close, and an idle timeout
// bounds how long a silent client is kept.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	idle := flag.Duration("idle", 5*time.Minute, "close connections idle this long")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				time.Sleep(10 * time.Millisecond) // out of fds for a moment
				continue
			}
			log.Fatal(err)
		}
		go serve(c, *idle)
	}
}

func serve(c net.Conn, idle time.Duration) {
	defer c.Close() // on EOF and on every error
	buf := make([]byte, 32<<10)
	for {
		c.SetReadDeadline(time.Now().Add(idle))
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF && !errors.Is(err, os.ErrDeadlineExceeded) {
				log.Printf("%s: %v", c.RemoteAddr(), err)
			}
			return
		}
	}
}
