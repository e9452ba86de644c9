package leaktest

import (
	"os"
	"os/exec"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// NetNS makes a network namespace named name (`ip netns add`, so it is
// bind-mounted at /run/netns/name) with its loopback up, and deletes it
// when the test ends.
func NetNS(t testing.TB, name string) {
	t.Helper()
	RequireRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		Missing(t, "needs ip(8) (iproute2)")
	}
	exec.Command("ip", "netns", "delete", name).Run() // left by a killed run
	for _, args := range [][]string{{"netns", "add", name}, {"-n", name, "link", "set", "lo", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		if args[1] == "add" {
			t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
		}
	}
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
	ns, err := os.Open("/run/netns/" + name)
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
	if err := unix.Stat("/run/netns/"+name, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
