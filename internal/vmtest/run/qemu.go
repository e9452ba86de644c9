package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"strings"

	"github.com/closewait/closewait/internal/vmtest"
)

// machine is how qemu emulates one architecture.
type machine struct {
	qemu    string   // the qemu-system binary
	args    []string // machine and CPU
	console string   // the serial console's name in the guest
}

var machines = map[string]machine{
	// qboot (in qemu-system-data) loads the kernel without SeaBIOS's
	// banner and screen-clearing escapes on the console.
	"amd64": {"qemu-system-x86_64", []string{"-cpu", "max", "-bios", "qboot.rom"}, "ttyS0"},
	"arm64": {"qemu-system-aarch64", []string{"-M", "virt", "-cpu", "cortex-a57"}, "ttyAMA0"},
}

// hostDebArch is the host's architecture in Debian's words, which for the
// architectures vmtest knows are Go's.
func hostDebArch() string { return runtime.GOARCH }

// boot runs the guest until it powers off or ctx ends, copying its console
// to out and reading the kernel and result lines from it.
func boot(ctx context.Context, o *options, k *kernel, initrd string, out io.Writer) (vmtest.Status, error) {
	m := machines[o.Arch]
	args := append([]string{
		"-accel", "tcg",
		"-m", o.Mem,
		"-smp", fmt.Sprint(o.SMP),
		// No default devices: no NIC (whose boot ROM SeaBIOS would probe)
		// and no VGA; the one serial port is the console.
		"-nodefaults", "-nographic", "-serial", "stdio", "-no-reboot",
		"-kernel", k.Image,
		"-initrd", initrd,
		"-append", "console=" + m.console + " panic=-1 loglevel=4",
	}, m.args...)
	cmd := exec.CommandContext(ctx, m.qemu, args...)
	o.log("%s %s", m.qemu, strings.Join(args, " "))
	cmd.Stderr = out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return vmtest.Status{}, err
	}
	if err := cmd.Start(); err != nil {
		return vmtest.Status{}, err
	}
	var st vmtest.Status
	r := bufio.NewReader(stdout)
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			st.Scan(line)
			io.WriteString(out, strings.TrimRight(line, "\r\n")+"\n")
		}
		if err != nil {
			break
		}
	}
	err = cmd.Wait()
	if ctxErr := ctx.Err(); ctxErr != nil {
		return st, fmt.Errorf("qemu stopped: %w", ctxErr)
	}
	if err != nil {
		return st, fmt.Errorf("qemu: %w", err)
	}
	return st, nil
}
