// Command crileak is the program of the test's container image (built
// static by TestCRIContainerd): "crileak leak PORT N" listens on
// 127.0.0.1:PORT, leaves N connections to itself in CLOSE_WAIT, and
// sleeps; with no arguments it only sleeps (the pod's sandbox).
package main

import (
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	var held []net.Conn
	if len(os.Args) == 4 && os.Args[1] == "leak" {
		n, err := strconv.Atoi(os.Args[3])
		if err != nil {
			panic(err)
		}
		ln, err := net.Listen("tcp4", "127.0.0.1:"+os.Args[2])
		if err != nil {
			panic(err)
		}
		for range n {
			c, err := net.Dial("tcp4", ln.Addr().String())
			if err != nil {
				panic(err)
			}
			s, err := ln.Accept()
			if err != nil {
				panic(err)
			}
			held = append(held, s)
			c.Close() // the FIN: s is left in CLOSE_WAIT
		}
	}
	for {
		time.Sleep(time.Hour)
	}
}
