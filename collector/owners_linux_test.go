package collector

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/closewait/closewait/internal/leaktest"
)

// fakeProc is a process in a procfs tree built for a test: its fd
// directory holds symlinks whose targets read like the kernel's.
type fakeProc struct {
	pid, ppid int
	comm      string
	fds       map[int]string // fd -> link target
}

func buildProc(t *testing.T, procs []fakeProc) string {
	t.Helper()
	root := t.TempDir()
	for _, p := range procs {
		dir := filepath.Join(root, strconv.Itoa(p.pid))
		if err := os.MkdirAll(filepath.Join(dir, "fd"), 0o755); err != nil {
			t.Fatal(err)
		}
		stat := fmt.Sprintf("%d (%s) S %d %d 0 0 -1 4194304\n", p.pid, p.comm, p.ppid, p.pid)
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "comm"), []byte(p.comm+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for fd, target := range p.fds {
			if err := os.Symlink(target, filepath.Join(dir, "fd", strconv.Itoa(fd))); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Not processes: resolveOwners must pass over them.
	for _, name := range []string{"net", "self", "sys"} {
		if err := os.MkdirAll(filepath.Join(root, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestResolveOwnersFakeProc(t *testing.T) {
	// 10 and its child 20 share socket 1001 (inherited); 30 holds 1002 and
	// other files; 40 holds nothing wanted. The table of 50 is larger than
	// a chunk, so it is shared out among the workers.
	big := map[int]string{}
	for fd := range 3 * fdChunkSize {
		big[fd] = fmt.Sprintf("socket:[%d]", 900000+fd)
	}
	big[777] = "socket:[1003]"
	root := buildProc(t, []fakeProc{
		{pid: 10, ppid: 1, comm: "server", fds: map[int]string{0: "/dev/null", 5: "socket:[1001]", 6: "pipe:[55]"}},
		{pid: 20, ppid: 10, comm: "worker with spaces", fds: map[int]string{3: "socket:[1001]", 4: "socket:[1001]"}},
		{pid: 30, ppid: 1, comm: "client", fds: map[int]string{9: "socket:[1002]", 10: "anon_inode:[eventfd]", 11: "socket:[bad]"}},
		{pid: 40, ppid: 1, comm: "idle", fds: map[int]string{1: "socket:[5]"}},
		{pid: 50, ppid: 1, comm: "bigtable", fds: big},
	})
	socks := []Socket{
		{Inode: 1001}, {Inode: 1002}, {Inode: 0}, {Inode: 1003}, {Inode: 4242}, {Inode: 1001},
	}
	_, warnings, err := resolveOwners(context.Background(), root, socks, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings %v", warnings)
	}
	want := [][]Owner{
		{{PID: 10, Comm: "server", FD: 5}, {PID: 20, Comm: "worker with spaces", FD: 3}, {PID: 20, Comm: "worker with spaces", FD: 4}},
		{{PID: 30, Comm: "client", FD: 9}},
		nil,
		{{PID: 50, Comm: "bigtable", FD: 777}},
		nil,
		{{PID: 10, Comm: "server", FD: 5}, {PID: 20, Comm: "worker with spaces", FD: 3}, {PID: 20, Comm: "worker with spaces", FD: 4}},
	}
	for i, s := range socks {
		if !slices.Equal(s.Owners, want[i]) {
			t.Errorf("inode %d: owners %v, want %v", s.Inode, s.Owners, want[i])
		}
	}
	socks[0].Owners[0].FD = -1
	if socks[5].Owners[0].FD == -1 {
		t.Error("two sockets share one Owners slice")
	}
	// The holders sit side by side in one array: an append copies.
	_ = append(socks[1].Owners, Owner{PID: -1})
	if socks[3].Owners[0].PID != 50 {
		t.Error("an append to one socket's owners overwrote another's")
	}

	// Extra inodes (listeners'): their holders come back by inode.
	lowners, _, err := resolveOwners(context.Background(), root, nil, []uint64{1002, 5, 4242})
	if err != nil {
		t.Fatal(err)
	}
	wantExtra := map[uint64][]Owner{1002: want[1], 5: {{PID: 40, Comm: "idle", FD: 1}}}
	if len(lowners) != len(wantExtra) || !slices.Equal(lowners[1002], wantExtra[1002]) || !slices.Equal(lowners[5], wantExtra[5]) {
		t.Errorf("extra inodes' owners %v, want %v", lowners, wantExtra)
	}

	// Every holder, every time: no scan stops early.
	for range 20 {
		socks = []Socket{{Inode: 1001}, {Inode: 1003}}
		if _, _, err := resolveOwners(context.Background(), root, socks, nil); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(socks[0].Owners, want[0]) || !slices.Equal(socks[1].Owners, want[3]) {
			t.Fatalf("owners %v and %v, want %v and %v", socks[0].Owners, socks[1].Owners, want[0], want[3])
		}
	}

	// A cancelled context is an error, not a partial answer.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := resolveOwners(ctx, root, []Socket{{Inode: 1001}}, nil); err == nil {
		t.Error("cancelled scan gave no error")
	}
}

func TestParsePPID(t *testing.T) {
	tests := []struct {
		stat string
		want int
	}{
		{"42 (sleep) S 7 42 42 0 -1", 7},
		{"42 (a) b (c)) R 1234 42", 1234},
		{"1 (systemd) S 0 1 1", 0},
		{"42 (cut", 0},
		{"42 (x) S", 0},
		{"42 (x) S -5", 0},
		{"", 0},
	}
	for _, tt := range tests {
		if got := parsePPID([]byte(tt.stat)); got != tt.want {
			t.Errorf("parsePPID(%q) = %d, want %d", tt.stat, got, tt.want)
		}
	}
}

func TestSocketInode(t *testing.T) {
	tests := []struct {
		link string
		ino  uint64
		ok   bool
	}{
		{"socket:[12345]", 12345, true},
		{"socket:[0]", 0, true},
		{"socket:[18446744073709551615]", 18446744073709551615, true},
		{"socket:[18446744073709551616]", 0, false},
		{"socket:[]", 0, false},
		{"socket:[12a]", 0, false},
		{"socket:[12", 0, false},
		{"pipe:[12]", 0, false},
		{"/tmp/socket:[12]", 0, false},
	}
	for _, tt := range tests {
		ino, ok := socketInode([]byte(tt.link))
		if ino != tt.ino || ok != tt.ok {
			t.Errorf("socketInode(%q) = %d, %v; want %d, %v", tt.link, ino, ok, tt.ino, tt.ok)
		}
	}
}

// FuzzSocketInode feeds fd link targets, seeded with kinds readlink returns
// on this machine. It accepts exactly "socket:[N]" with N a decimal uint64.
func FuzzSocketInode(f *testing.F) {
	for _, link := range []string{
		"socket:[17291]", "socket:[0]", "socket:[18446744073709551615]", "socket:[18446744073709551616]",
		"pipe:[86543]", "anon_inode:[eventpoll]", "anon_inode:bpf-map", "net:[4026531840]",
		"/dev/null", "/tmp/socket:[12] (deleted)", "socket:[]", "socket:[+1]", "socket:[1_0]",
	} {
		f.Add([]byte(link))
	}
	f.Fuzz(func(t *testing.T, link []byte) {
		ino, ok := socketInode(link)
		inner, hasPrefix := strings.CutPrefix(string(link), "socket:[")
		inner, hasSuffix := strings.CutSuffix(inner, "]")
		digits := hasPrefix && hasSuffix && inner != "" && strings.Trim(inner, "0123456789") == ""
		want, err := strconv.ParseUint(inner, 10, 64)
		if wantOK := digits && err == nil; ok != wantOK || (ok && ino != want) {
			t.Fatalf("socketInode(%q) = %d, %v; want %d, %v", link, ino, ok, want, wantOK)
		}
	})
}

// FuzzAtoi32 feeds fd and pid directory names: only decimal int32 values,
// as the kernel prints them, are numbers.
func FuzzAtoi32(f *testing.F) {
	for _, name := range []string{"0", "1", "255", "4194304", "2147483647", "2147483648", ".", "..", "self", "-1", "+1", "0x10", "00000000001"} {
		f.Add([]byte(name))
	}
	f.Fuzz(func(t *testing.T, name []byte) {
		n, ok := atoi32(name)
		want, err := strconv.ParseInt(string(name), 10, 32)
		wantOK := err == nil && len(name) <= 10 && strings.Trim(string(name), "0123456789") == ""
		if ok != wantOK || (ok && int64(n) != want) {
			t.Fatalf("atoi32(%q) = %d, %v; want %d, %v", name, n, ok, want, wantOK)
		}
	})
}

// FuzzParsePPID feeds /proc/PID/stat text, seeded with a real line. Any
// text gives a pid of 0 or more; a line the kernel would print gives its
// ppid whatever the command name holds (spaces, parentheses, newlines).
func FuzzParsePPID(f *testing.F) {
	const real = "16474 (cat) R 16469 16469 4488 0 -1 4194304 102 0 0 0 0 0 0 0 20 0 1 0 405554 3133440 413 18446744073709551615 94876532850688 0\n"
	f.Add([]byte(real), []byte("cat"), int32(16469))
	f.Add([]byte("42 (a) b (c)) R 1234 42"), []byte("a) b (c)"), int32(1))
	f.Add([]byte("1 (systemd) S 0 1 1"), []byte(") S 7 "), int32(0))
	f.Fuzz(func(t *testing.T, stat, comm []byte, ppid int32) {
		if p := parsePPID(stat); p < 0 {
			t.Fatalf("parsePPID(%q) = %d", stat, p)
		}
		if ppid < 0 || len(comm) > 64 {
			return
		}
		line := fmt.Sprintf("4242 (%s) S %d 4242 4242 0 -1 4194304 102 0\n", comm, ppid)
		if p := parsePPID([]byte(line)); p != int(ppid) {
			t.Fatalf("parsePPID(%q) = %d, want %d", line, p, ppid)
		}
	})
}

// TestOwnersUnderChurn collects while processes that hold the socket start
// and exit, and while this process's fd table grows and shrinks: every
// collection succeeds, and the socket always has this process, which holds
// it throughout, among its owners. A process gone mid-scan is left out or
// kept, never an error.
func TestOwnersUnderChurn(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	c := leaktest.CloseWait(t, ln, 1)[0]
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // holders that exit within milliseconds
		for {
			select {
			case <-stop:
				return
			default:
			}
			cmd := exec.Command(sleep, "0.01")
			cmd.ExtraFiles = []*os.File{c.File}
			if cmd.Start() == nil {
				cmd.Wait()
			}
		}
	})
	wg.Go(func() { // this process's fd table changing
		for {
			select {
			case <-stop:
				return
			default:
			}
			var fs []*os.File
			for range 64 {
				if f, err := os.Open("/dev/null"); err == nil {
					fs = append(fs, f)
				}
			}
			for _, f := range fs {
				f.Close()
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()
	self := os.Getpid()
	for _, src := range sources {
		for run := range 8 {
			snap := collect(t, Options{Source: src, Filter: Filter{SPorts: []uint16{port(ln.Addr())}}})
			if len(snap.Sockets) != 1 {
				t.Fatalf("%s run %d: %d sockets, want 1", src, run, len(snap.Sockets))
			}
			if !slices.ContainsFunc(snap.Sockets[0].Owners, func(o Owner) bool { return o.PID == self && o.FD == int(c.File.Fd()) }) {
				t.Fatalf("%s run %d: owners %v, want pid %d fd %d among them", src, run, snap.Sockets[0].Owners, self, c.File.Fd())
			}
		}
	}
}
