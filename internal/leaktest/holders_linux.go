package leaktest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The holders below are processes in shapes that a scan of the fd tables
// must not miss: reparented orphans, siblings whose parent let go, and a
// process that got the fd over a unix socket. The test binary itself runs
// them, re-executed with helperEnv set: init then plays the part instead
// of running tests.
const helperEnv = "LEAKTEST_HELPER"

func init() {
	switch os.Getenv(helperEnv) {
	case "":
		return
	case "spawn":
		spawnHelper()
	case "receive":
		receiveHelper()
	case "handoff":
		handoffHelper()
	}
	os.Exit(2)
}

// spawnHelper starts LEAKTEST_N children that inherit fds 3 to
// 3+LEAKTEST_FILES-1 (sleeps, or receivers with LEAKTEST_RECEIVE set),
// prints their pids, closes its own copies, and then exits (LEAKTEST_STAY
// unset: the children are reparented) or stays.
func spawnHelper() {
	n, _ := strconv.Atoi(os.Getenv("LEAKTEST_N"))
	prog, args, env := "sleep", []string{"3600"}, os.Environ()
	if os.Getenv("LEAKTEST_RECEIVE") != "" {
		prog, args, env = "/proc/self/exe", nil, append(env, helperEnv+"=receive")
	}
	path, err := exec.LookPath(prog)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	if prog == "/proc/self/exe" {
		path, err = os.Executable()
		if err != nil {
			fmt.Println("error:", err)
			return
		}
	}
	files := heldFiles()
	var pids []string
	for range n {
		cmd := exec.Command(path, args...)
		cmd.Env = env
		cmd.ExtraFiles = files
		if err := cmd.Start(); err != nil {
			fmt.Println("error:", err)
			return
		}
		pids = append(pids, strconv.Itoa(cmd.Process.Pid))
	}
	for _, f := range files {
		f.Close()
	}
	fmt.Println(strings.Join(pids, " "))
	os.Stdout.Close()
	if os.Getenv("LEAKTEST_STAY") != "" {
		for {
			time.Sleep(time.Hour)
		}
	}
	os.Exit(0)
}

// heldFiles returns a helper's fds 3 to 3+LEAKTEST_FILES-1.
func heldFiles() []*os.File {
	nf, _ := strconv.Atoi(os.Getenv("LEAKTEST_FILES"))
	var files []*os.File
	for i := range nf {
		files = append(files, os.NewFile(uintptr(3+i), "held"))
	}
	return files
}

// receiveHelper receives fds over the unix socket at fd 3 and keeps them.
func receiveHelper() {
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4*8))
	_, oobn, _, _, err := unix.Recvmsg(3, buf, oob, 0)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) == 0 {
		fmt.Println("error: no rights:", err)
		return
	}
	if _, err := unix.ParseUnixRights(&msgs[0]); err != nil {
		return
	}
	for {
		time.Sleep(time.Hour)
	}
}

// handoffHelper holds fds 3 to 3+LEAKTEST_FILES-1 and prints its pid;
// at a line on stdin it starts a child (sleep) that inherits them, closes
// its own copies, prints the child's pid and stays.
func handoffHelper() {
	fmt.Println(os.Getpid())
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return
	}
	path, err := exec.LookPath("sleep")
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	files := heldFiles()
	cmd := exec.Command(path, "3600")
	cmd.ExtraFiles = files
	if err := cmd.Start(); err != nil {
		fmt.Println("error:", err)
		return
	}
	for _, f := range files {
		f.Close()
	}
	fmt.Println(cmd.Process.Pid)
	for {
		time.Sleep(time.Hour)
	}
}

// runHelper runs this test binary as a helper and returns its first line
// of output; the caller kills what it started.
func runHelper(t testing.TB, mode string, files []*os.File, env ...string) (*exec.Cmd, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), append([]string{helperEnv + "=" + mode}, env...)...)
	cmd.ExtraFiles = files
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting helper: %v", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.HasPrefix(line, "error:") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper %s: %q %v", mode, line, err)
	}
	return cmd, strings.TrimSpace(line)
}

func killAtEnd(t testing.TB, pids []int) {
	t.Cleanup(func() {
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

func parsePIDs(t testing.TB, line string) []int {
	t.Helper()
	var pids []int
	for _, f := range strings.Fields(line) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("helper printed %q", line)
		}
		pids = append(pids, pid)
	}
	return pids
}

// HoldOrphan makes a process whose parent has exited hold files, as fds
// 3, 4, ...: the kernel reparents it to init (or a subreaper). It returns
// its pid; it is killed when the test ends.
func HoldOrphan(t testing.TB, files []*os.File) int {
	t.Helper()
	cmd, line := runHelper(t, "spawn", files, "LEAKTEST_N=1", "LEAKTEST_FILES="+strconv.Itoa(len(files)))
	pids := parsePIDs(t, line)
	killAtEnd(t, pids)
	cmd.Wait()
	return pids[0]
}

// HoldSiblings makes n sibling processes hold files, as fds 3, 4, ...;
// their parent, which stays alive, closes its own copies. It returns the
// siblings' pids and the parent's; all are killed when the test ends.
func HoldSiblings(t testing.TB, files []*os.File, n int) (siblings []int, parent int) {
	t.Helper()
	cmd, line := runHelper(t, "spawn", files, "LEAKTEST_N="+strconv.Itoa(n),
		"LEAKTEST_FILES="+strconv.Itoa(len(files)), "LEAKTEST_STAY=1")
	siblings = parsePIDs(t, line)
	killAtEnd(t, siblings)
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return siblings, cmd.Process.Pid
}

// HoldPassed passes f over a unix socket (SCM_RIGHTS) to a process that is
// no child of this one (its parent has exited), which keeps it. It returns
// that process's pid and the fd it got; it is killed when the test ends.
func HoldPassed(t testing.TB, f *os.File) (pid, fd int) {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs := os.NewFile(uintptr(sp[0]), "sender"), os.NewFile(uintptr(sp[1]), "receiver")
	defer mine.Close()
	cmd, line := runHelper(t, "spawn", []*os.File{theirs}, "LEAKTEST_N=1", "LEAKTEST_FILES=1", "LEAKTEST_RECEIVE=1")
	theirs.Close()
	pid = parsePIDs(t, line)[0]
	killAtEnd(t, []int{pid})
	cmd.Wait()
	if err := unix.Sendmsg(int(mine.Fd()), []byte{0}, unix.UnixRights(int(f.Fd())), nil, 0); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("socket:[%d]", st.Ino)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, e := range ents {
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); l == want {
				fd, _ = strconv.Atoi(e.Name())
				return pid, fd
			}
		}
	}
	t.Fatalf("the receiver %d never got %s", pid, want)
	return 0, 0
}

// Handoff is a process that holds files until told to hand them to a
// child, as a server hands a connection to a worker.
type Handoff struct {
	PID   int
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	child int
}

// HoldHandoff starts a process that holds files as fds 3, 4, ... The
// caller's copies stay open; close them to leave it the only holder. It is
// killed, with its child, when the test ends.
func HoldHandoff(t testing.TB, files []*os.File) *Handoff {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), helperEnv+"=handoff", "LEAKTEST_FILES="+strconv.Itoa(len(files)))
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	h := &Handoff{cmd: cmd}
	if h.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h.out = bufio.NewReader(out)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting helper: %v", err)
	}
	t.Cleanup(func() {
		if h.child != 0 {
			syscall.Kill(h.child, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	h.PID = h.readPID(t)
	return h
}

// Handoff has the process start a child that inherits the files, and
// close its own copies. It returns the child's pid.
func (h *Handoff) Handoff(t testing.TB) int {
	t.Helper()
	if _, err := io.WriteString(h.in, "go\n"); err != nil {
		t.Fatal(err)
	}
	h.child = h.readPID(t)
	return h.child
}

func (h *Handoff) readPID(t testing.TB) int {
	t.Helper()
	line, err := h.out.ReadString('\n')
	if err != nil || strings.HasPrefix(line, "error:") {
		t.Fatalf("handoff helper: %q %v", line, err)
	}
	return parsePIDs(t, line)[0]
}
