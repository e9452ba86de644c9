// Command closewait finds TCP sockets stuck in CLOSE_WAIT, says which
// process and fd hold them, how long they have been stuck and why.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/closewait/closewait/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, version)
	stop()
	os.Exit(code)
}
