package leaktest

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// NetNS makes a network namespace named name, bind-mounted at
// /run/netns/name as `ip netns add` makes it, with its loopback up, and
// removes it when the test ends. It needs no ip(8): the test kernels'
// guests have none.
func NetNS(t testing.TB, name string) {
	t.Helper()
	RequireRoot(t)
	p := netnsDir + "/" + name
	drop := func() {
		unix.Unmount(p, unix.MNT_DETACH)
		os.Remove(p)
	}
	drop() // left by a killed run
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(drop)
	if err := onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		if err := unix.Mount("/proc/thread-self/ns/net", p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount at %s: %w", p, err)
		}
		if err := OwnPortRange(); err != nil {
			return err
		}
		return LoopbackUp()
	}); err != nil {
		t.Fatalf("network namespace %s: %v", name, err)
	}
}

// OtherPortRange is the ephemeral port range (ip_local_port_range) of the
// test namespaces: above the default one (32768-60999), so that no socket
// there has a port of a socket of the tests that run on the host at the
// same time, which may list every namespace and filter by port.
const OtherPortRange = "61000 65535"

// OwnPortRange gives the calling thread's network namespace, a test's
// own, OtherPortRange.
func OwnPortRange() error {
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte(OtherPortRange), 0o644); err != nil {
		return fmt.Errorf("ephemeral port range: %w", err)
	}
	return nil
}

// DeleteNetNS removes the namespace NetNS made, before the test ends.
func DeleteNetNS(t testing.TB, name string) {
	t.Helper()
	p := netnsDir + "/" + name
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
		t.Fatalf("unmount %s: %v", p, err)
	}
	os.Remove(p)
}

const netnsDir = "/run/netns"

// onThread runs fn on a locked OS thread and moves the thread back to its
// network namespace after. A thread that cannot go back is never unlocked,
// so it ends with the goroutine; but the main thread does not end, and
// /proc/self/net is the main thread's: hence the going back.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		back, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer back.Close()
		err = fn()
		if unix.Setns(int(back.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// LoopbackUp sets lo up in the calling thread's network namespace.
func LoopbackUp() error { return setLoopback(true) }

// LoopbackDown sets lo down in the calling thread's network namespace:
// whatever its sockets send then goes nowhere, as to a peer that vanished.
func LoopbackDown() error { return setLoopback(false) }

func setLoopback(up bool) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	flags := ifr.Uint16() &^ unix.IFF_UP
	if up {
		flags |= unix.IFF_UP
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up %v: %w", up, err)
	}
	return nil
}

// InNetNS runs fn with the calling goroutine's thread in the namespace
// named name: the sockets fn makes, and the processes it starts, are
// there. fn may call t.Fatal.
func InNetNS(t testing.TB, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	back, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer back.Close()
	ns, err := os.Open(netnsDir + "/" + name)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	err = unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET)
	ns.Close()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("setns %s: %v", name, err)
	}
	defer func() {
		// A thread that cannot go back stays locked: it ends with the
		// goroutine.
		if unix.Setns(int(back.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	fn()
}

// NetNSInode returns the inode of the namespace named name.
func NetNSInode(t testing.TB, name string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(netnsDir+"/"+name, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
