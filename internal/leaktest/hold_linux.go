package leaktest

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// Child holds files in another process: fd 3+i of the child is files[i].
// It runs until the test ends.
type Child struct {
	PID int
	cmd *exec.Cmd
}

// Hold starts a child process (sleep) that inherits files as fds 3, 4, ...
// The caller's copies stay open; close them to leave the child the only holder.
func Hold(t testing.TB, files []*os.File) *Child {
	t.Helper()
	return hold(t, files, nil)
}

// HoldAs is Hold with the child running as user and group uid.
func HoldAs(t testing.TB, files []*os.File, uid uint32) *Child {
	t.Helper()
	return hold(t, files, &syscall.Credential{Uid: uid, Gid: uid})
}

// HoldNamed is Hold with the child running a copy of sleep(1) named name,
// and args after its 3600.
func HoldNamed(t testing.TB, files []*os.File, name string, args ...string) *Child {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatalf("holder needs sleep(1): %v", err)
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(prog, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return start(t, exec.Command(prog, append([]string{"3600"}, args...)...), files, nil)
}

func hold(t testing.TB, files []*os.File, cred *syscall.Credential) *Child {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatalf("holder needs sleep(1): %v", err)
	}
	return start(t, exec.Command(sleep, "3600"), files, cred)
}

func start(t testing.TB, cmd *exec.Cmd, files []*os.File, cred *syscall.Credential) *Child {
	t.Helper()
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start holder: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return &Child{PID: cmd.Process.Pid, cmd: cmd}
}
