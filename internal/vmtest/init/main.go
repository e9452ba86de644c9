//go:build linux

// Command init is PID 1 of a vmtest guest (see package vmtest): it prepares
// the kernel file systems, loopback and modules, runs the test binaries that
// /vmtest/config.json lists, prints "VMTEST-RESULT pass" or "fail", and
// powers the machine off whatever happens. Called as sleep, it sleeps.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/closewait/closewait/internal/vmtest"
	"golang.org/x/sys/unix"
)

func main() {
	if filepath.Base(os.Args[0]) == "sleep" {
		os.Exit(sleep(os.Args[1:]))
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "init: not PID 1; this program runs only inside a vmtest guest")
		os.Exit(2)
	}
	result := vmtest.Fail
	defer func() {
		if r := recover(); r != nil {
			fmt.Printf("init: panic: %v\n%s", r, debug.Stack())
			result = vmtest.Fail
		}
		fmt.Println(vmtest.ResultPrefix + result)
		powerOff()
	}()
	if err := run(); err != nil {
		fmt.Println("init:", err)
		return
	}
	result = vmtest.Pass
}

// run returns an error when the guest could not be set up or a test failed.
func run() error {
	if err := mountAll(); err != nil {
		return err
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("uname: %w", err)
	}
	// A new line first: the boot loader may have left one unfinished.
	fmt.Println("\n" + vmtest.KernelLine(unix.ByteSliceToString(uts.Release[:]),
		unix.ByteSliceToString(uts.Version[:]), unix.ByteSliceToString(uts.Machine[:])))

	cfg, err := readConfig()
	if err != nil {
		return err
	}
	if err := loopbackUp(); err != nil {
		return err
	}
	for _, m := range cfg.Modules {
		if err := loadModule(m); err != nil {
			return err
		}
	}
	for _, r := range []struct {
		res int
		max uint64
	}{{unix.RLIMIT_NOFILE, 1 << 20}, {unix.RLIMIT_MEMLOCK, unix.RLIM_INFINITY}} {
		if err := unix.Setrlimit(r.res, &unix.Rlimit{Cur: r.max, Max: r.max}); err != nil {
			return fmt.Errorf("setrlimit %d: %w", r.res, err)
		}
	}

	var failed []string
	for _, t := range cfg.Tests {
		fmt.Printf("VMTEST-RUN %s\n", t.Name)
		cmd := exec.Command(t.Path, t.Args...)
		cmd.Dir = t.Dir
		cmd.Env = cfg.Env
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
		err := cmd.Run()
		status := "ok"
		if err != nil {
			status = err.Error()
			failed = append(failed, t.Name)
		}
		fmt.Printf("VMTEST-DONE %s: %s\n", t.Name, status)
	}
	if len(failed) > 0 {
		return fmt.Errorf("failed: %q", failed)
	}
	return nil
}

// mountAll mounts what the tests and cilium/ebpf expect, then takes
// /dev/console as stdin, stdout and stderr: the initramfs has no device
// nodes, so the kernel could not open a console for init.
func mountAll() error {
	for _, m := range []struct{ src, dir, fstype string }{
		{"devtmpfs", "/dev", "devtmpfs"},
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"tmpfs", "/tmp", "tmpfs"},
		{"tmpfs", "/run", "tmpfs"},
		{"bpffs", "/sys/fs/bpf", "bpf"},
		{"tracefs", "/sys/kernel/tracing", "tracefs"},
		{"debugfs", "/sys/kernel/debug", "debugfs"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2"},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dir, m.fstype, 0, ""); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.dir, err)
		}
		if m.dir == "/dev" {
			if err := takeConsole(); err != nil {
				return err
			}
		}
	}
	return os.Chmod("/tmp", 0o1777)
}

func takeConsole() error {
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("open /dev/console: %w", err)
	}
	for i := range 3 {
		if err := unix.Dup3(fd, i, 0); err != nil {
			return fmt.Errorf("dup console: %w", err)
		}
	}
	return unix.Close(fd)
}

func readConfig() (*vmtest.Config, error) {
	b, err := os.ReadFile(vmtest.ConfigPath)
	if err != nil {
		return nil, err
	}
	var cfg vmtest.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", vmtest.ConfigPath, err)
	}
	return &cfg, nil
}

// loopbackUp sets lo up; the kernel then gives it 127.0.0.1/8 and ::1.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", path, err)
	}
	fmt.Printf("init: loaded %s\n", filepath.Base(path))
	return nil
}

// powerOff waits for the console to drain, so the host reads the last line,
// then powers off. If that fails, init returns and the kernel panics, which
// with panic=-1 and qemu's -no-reboot also ends qemu.
func powerOff() {
	unix.IoctlSetInt(1, unix.TCSBRK, 1) // tcdrain
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Println("init: power off:", err)
	}
}

// sleep is sleep(1) for whole or fractional seconds and "infinity", enough
// for leaktest's fd holders.
func sleep(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: sleep SECONDS")
		return 1
	}
	if args[0] == "infinity" {
		for {
			time.Sleep(time.Hour)
		}
	}
	s, err := strconv.ParseFloat(args[0], 64)
	if err != nil || s < 0 {
		fmt.Fprintf(os.Stderr, "sleep: invalid time interval %q\n", args[0])
		return 1
	}
	time.Sleep(time.Duration(s * float64(time.Second)))
	return 0
}
