package report

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/collector"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// snapTime is fixed so the golden files never change with the clock.
var snapTime = time.Date(2026, 3, 14, 9, 26, 53, 589_000_000, time.UTC)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func dur(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// mixedSnapshot holds one socket per case the table must render: IPv4 and
// IPv6, an fd inherited by a forked worker, a socket still in the accept
// queue, exact, lower-bound and unknown ages, several causes. Sockets come
// oldest first, as the collector sorts them.
func mixedSnapshot(t *testing.T) *collector.Snapshot {
	t.Helper()
	cw := collector.StateCloseWait
	return &collector.Snapshot{
		Host:       "web-1",
		Time:       snapTime,
		Source:     "netlink",
		Warnings:   []string{"not root: owners of other users' sockets are hidden"},
		NetNSNames: map[uint64]string{4026531840: "host"},
		Sockets: []collector.Socket{
			{
				Family: collector.FamilyIPv6, State: cw,
				Local: ap("[::1]:8080"), Remote: ap("[::1]:51552"),
				RecvQ: 0, Inode: 91001, Cookie: 4101, UID: 1000, NetNS: 4026532301,
				Age: dur(t, "51h7m30s"), AgeKnown: true, AgeExact: true,
				Inbound: true,
				Owners:  []collector.Owner{{PID: 2044, Comm: "python3", FD: 5, Proc: &collector.Process{PPID: 1, UID: 1000, Cmdline: "python3 -m http.server 8000", Exe: "python3.11", Unit: "web.service"}}},
				Causes:  []collector.Cause{collector.CauseEOFNotClosed},
			},
			{
				Family: collector.FamilyIPv4, State: cw,
				Local: ap("10.0.0.5:8080"), Remote: ap("10.0.0.17:40112"),
				RecvQ: 1, Inode: 90210, Cookie: 4033, UID: 33, NetNS: 4026531840,
				Age: dur(t, "3h12m5s"), AgeKnown: true, AgeExact: true,
				Inbound: true,
				Owners:  []collector.Owner{{PID: 812, Comm: "nginx", FD: 7}, {PID: 813, Comm: "nginx", FD: 7}},
				Causes:  []collector.Cause{collector.CauseInherited, collector.CauseFINNotRead},
			},
			{
				Family: collector.FamilyIPv4, State: cw,
				Local: ap("10.0.0.5:8080"), Remote: ap("10.0.0.17:51552"),
				RecvQ: 0, Inode: 90377, Cookie: 4090, UID: 33,
				Age: dur(t, "4m12.3456s"), AgeKnown: true, AgeMax: dur(t, "4m30.2s"),
				Inbound: true,
				Owners:  []collector.Owner{{PID: 812, Comm: "nginx", FD: 6}},
				Causes:  []collector.Cause{collector.CauseEOFNotClosed},
			},
			{
				Family: collector.FamilyIPv6, State: cw,
				Local: ap("[2001:db8::5]:443"), Remote: ap("[2001:db8::17]:40112"),
				RecvQ: 518, SendQ: 0, Inode: 90555, Cookie: 4095, UID: 998,
				Age: dur(t, "12.3s"), AgeKnown: true,
				Inbound: true,
				Owners:  []collector.Owner{{PID: 1290, Comm: "java", FD: 113}},
				Causes:  []collector.Cause{collector.CauseUnreadData},
			},
			{
				Family: collector.FamilyIPv4, State: cw,
				Local: ap("127.0.0.1:9000"), Remote: ap("127.0.0.1:41234"),
				RecvQ: 1, Cookie: 4120,
				Age: dur(t, "850ms"), AgeKnown: true, AgeExact: true,
				Inbound:  true,
				Listener: []collector.Owner{{PID: 3321, Comm: "stalled", FD: 4}},
				Causes:   []collector.Cause{collector.CauseNotAccepted, collector.CauseFINNotRead},
			},
			{
				Family: collector.FamilyIPv4, State: cw,
				Local: ap("10.0.0.5:48822"), Remote: ap("10.0.0.9:5432"),
				RecvQ: 0, Inode: 90601, Cookie: 4077, UID: 998,
				Owners: []collector.Owner{{PID: 1290, Comm: "java", FD: 120}},
				Causes: []collector.Cause{collector.CausePooledClient, collector.CauseEOFNotClosed},
			},
		},
	}
}

// statesSnapshot lists more than CLOSE_WAIT, so the table needs STATE.
func statesSnapshot(t *testing.T) *collector.Snapshot {
	t.Helper()
	return &collector.Snapshot{
		Host: "web-1", Time: snapTime, Source: "netlink",
		Sockets: []collector.Socket{
			{
				Family: collector.FamilyIPv4, State: collector.StateCloseWait,
				Local: ap("127.0.0.1:8080"), Remote: ap("127.0.0.1:51552"),
				RecvQ: 0, Inode: 7001, Cookie: 11,
				Age: dur(t, "14m3s"), AgeKnown: true, AgeMax: dur(t, "14m3s"),
				Inbound: true,
				Owners:  []collector.Owner{{PID: 4242, Comm: "server", FD: 9}},
				Causes:  []collector.Cause{collector.CauseEOFNotClosed},
			},
			{
				Family: collector.FamilyIPv4, State: collector.StateEstablished,
				Local: ap("127.0.0.1:8080"), Remote: ap("127.0.0.1:51560"),
				RecvQ: 0, SendQ: 12, Inode: 7002, Cookie: 12,
				Age: dur(t, "2m"), AgeKnown: true, AgeMax: dur(t, "2m1s"),
				Inbound: true,
				Owners:  []collector.Owner{{PID: 4242, Comm: "server", FD: 10}},
			},
			{
				Family: collector.FamilyIPv6, State: collector.StateEstablished,
				Local: ap("[::1]:51570"), Remote: ap("[::1]:8081"),
				Inode: 7003, Cookie: 13,
				Age: dur(t, "5s"), AgeKnown: true,
				Owners: []collector.Owner{{PID: 5150, Comm: "curl", FD: 3}},
			},
			// Closed by the kernel: the ebpf source reads the socket, the
			// others find it through /proc, without addresses or error.
			{
				Family: collector.FamilyIPv4, State: collector.StateClose,
				Local: ap("127.0.0.1:0"), Remote: ap("127.0.0.1:51580"),
				Inode: 7004, Cookie: 14, SockErr: 104,
				Owners: []collector.Owner{{PID: 4242, Comm: "server", FD: 11}},
				Causes: []collector.Cause{collector.CauseClosedNotReleased},
			},
			{
				Family: collector.FamilyIPv6, State: collector.StateClose,
				Inode: 7005, QueuesUnknown: true, SockErrUnknown: true,
				Owners: []collector.Owner{{PID: 4242, Comm: "server", FD: 12}},
				Causes: []collector.Cause{collector.CauseClosedNotReleased},
			},
		},
	}
}

// procfsSnapshot comes from a source that knows no ages or cookies.
func procfsSnapshot(t *testing.T) *collector.Snapshot {
	t.Helper()
	return &collector.Snapshot{
		Host: "web-1", Time: snapTime, Source: "procfs",
		Warnings: []string{"netlink source unavailable (permission denied): using procfs"},
		Sockets: []collector.Socket{
			{
				Family: collector.FamilyIPv4, State: collector.StateCloseWait,
				Local: ap("127.0.0.1:8080"), Remote: ap("127.0.0.1:51552"),
				RecvQ: 1, Inode: 7001, Inbound: true,
				Owners: []collector.Owner{{PID: 4242, Comm: "server", FD: 9}},
				Causes: []collector.Cause{collector.CauseFINNotRead},
			},
		},
	}
}

// windowsSnapshot is what the Windows source gives: no queues, inode, uid
// or fd; an upper bound on the age from the connection's creation time;
// no owner where the PID was 0 (under Wine, every PID).
func windowsSnapshot(t *testing.T) *collector.Snapshot {
	t.Helper()
	unknown := collector.Socket{
		Family: collector.FamilyIPv4, State: collector.StateCloseWait,
		QueuesUnknown: true, InodeUnknown: true, UIDUnknown: true,
	}
	a, b, c := unknown, unknown, unknown
	a.Local, a.Remote, a.Inbound, a.AgeMax, a.Origin = ap("10.0.0.5:8080"), ap("10.0.0.9:50112"), true, dur(t, "2h5m"), collector.OriginAccepted
	a.Owners = []collector.Owner{{PID: 6120, Comm: "Server.exe", FD: -1}}
	b.Local, b.Remote, b.AgeMax, b.Origin = ap("10.0.0.5:52001"), ap("10.0.0.7:443"), dur(t, "41s"), collector.OriginConnected
	b.Owners = []collector.Owner{{PID: 7312, Comm: "client.exe", FD: -1}}
	c.Family, c.Local, c.Remote, c.Inbound = collector.FamilyIPv6, ap("[::1]:8080"), ap("[::1]:50200"), true
	socks := []collector.Socket{a, b, c}
	for i := range socks {
		collector.Classify(&socks[i])
	}
	return &collector.Snapshot{Host: "WIN-1", Time: snapTime, Source: "iphlpapi", Sockets: socks}
}

// containersSnapshot has owners in a Kubernetes pod, in a Docker
// container, and on the host, so the tables need CONTAINER/POD.
func containersSnapshot(t *testing.T) *collector.Snapshot {
	t.Helper()
	const (
		podID    = "3f1c2a7d9b8e4f60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718"
		dockerID = "9a8b7c6d5e4f30211a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081"
	)
	inPod := &collector.Process{PPID: 4100, UID: 0, Cmdline: "/app/server --port 8080", Exe: "server",
		Unit:      "cri-containerd-" + podID + ".scope",
		Container: &collector.Container{Runtime: "containerd", ID: podID, PodUID: "8d1e3b6a-2f4c-4b1e-9a7d-5c6b7a8f9e0d"}}
	inDocker := &collector.Process{PPID: 5100, UID: 33, Cmdline: "nginx: worker process", Exe: "nginx",
		Unit:      "docker-" + dockerID + ".scope",
		Container: &collector.Container{Runtime: "docker", ID: dockerID}}
	onHost := &collector.Process{PPID: 1, UID: 1000, Cmdline: "python3 app.py", Exe: "python3.11", Unit: "app.service"}
	cw := collector.StateCloseWait
	return &collector.Snapshot{
		Host: "node-3", Time: snapTime, Source: "netlink",
		Sockets: []collector.Socket{
			{
				Family: collector.FamilyIPv4, State: cw,
				Local: ap("10.244.1.23:8080"), Remote: ap("10.244.2.7:51552"),
				Inode: 81001, Cookie: 501, NetNS: 4026532501,
				Age: dur(t, "7m3s"), AgeKnown: true, AgeExact: true, Inbound: true,
				Owners: []collector.Owner{{PID: 4242, Comm: "server", FD: 9, Proc: inPod}},
				Causes: []collector.Cause{collector.CauseEOFNotClosed},
			},
			{
				Family: collector.FamilyIPv4, State: cw,
				Local: ap("172.17.0.2:80"), Remote: ap("172.17.0.1:40112"), RecvQ: 1,
				Inode: 81002, Cookie: 502, UID: 33, NetNS: 4026532601,
				Age: dur(t, "41s"), AgeKnown: true, Inbound: true,
				Owners: []collector.Owner{{PID: 5150, Comm: "nginx", FD: 7, Proc: inDocker}},
				Causes: []collector.Cause{collector.CauseFINNotRead},
			},
			{
				Family: collector.FamilyIPv4, State: cw,
				Local: ap("127.0.0.1:9000"), Remote: ap("127.0.0.1:41234"),
				Inode: 81003, Cookie: 503, UID: 1000, NetNS: 4026531840,
				Age: dur(t, "12s"), AgeKnown: true, AgeExact: true, Inbound: true,
				Owners: []collector.Owner{{PID: 6001, Comm: "python3", FD: 5, Proc: onHost}},
				Causes: []collector.Cause{collector.CauseEOFNotClosed},
			},
		},
	}
}

func emptySnapshot(*testing.T) *collector.Snapshot {
	return &collector.Snapshot{Host: "web-1", Time: snapTime, Source: "netlink"}
}

func TestGolden(t *testing.T) {
	snapshots := []struct {
		name string
		snap func(*testing.T) *collector.Snapshot
	}{
		{"mixed", mixedSnapshot},
		{"states", statesSnapshot},
		{"procfs", procfsSnapshot},
		{"windows", windowsSnapshot},
		{"containers", containersSnapshot},
		{"empty", emptySnapshot},
	}
	renders := []struct {
		suffix string
		render func(*bytes.Buffer, *collector.Snapshot) error
	}{
		{"table", func(b *bytes.Buffer, s *collector.Snapshot) error { return Table(b, s, TableOptions{}) }},
		{"summary", func(b *bytes.Buffer, s *collector.Snapshot) error {
			return Table(b, s, TableOptions{SummaryOnly: true})
		}},
		{"json", func(b *bytes.Buffer, s *collector.Snapshot) error { return JSON(b, s) }},
	}
	for _, sn := range snapshots {
		for _, r := range renders {
			name := sn.name + "." + r.suffix
			t.Run(name, func(t *testing.T) {
				var buf bytes.Buffer
				if err := r.render(&buf, sn.snap(t)); err != nil {
					t.Fatal(err)
				}
				golden(t, name, buf.Bytes())
			})
		}
	}
}

// golden compares got with testdata/name.golden, or rewrites the file
// under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./report -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (go test ./report -update rewrites it)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestFormatAge(t *testing.T) {
	tests := []struct {
		d            string
		known, exact bool
		want         string
	}{
		{"12s", false, true, "-"},
		{"12s", false, false, "-"},
		{"0s", true, true, "0ms"},
		{"850ms", true, true, "850ms"},
		{"999.9ms", true, true, "999ms"},
		{"1s", true, true, "1s"},
		{"12.9s", true, true, "12s"},
		{"12s", true, false, ">=12s"},
		{"59.999s", true, true, "59s"},
		{"1m", true, true, "1m"},
		{"4m12s", true, true, "4m12s"},
		{"14m3s", true, false, ">=14m3s"},
		{"1h", true, true, "1h"},
		{"3h12m59s", true, true, "3h12m"},
		{"23h59m59s", true, true, "23h59m"},
		{"24h", true, true, "1d"},
		{"51h7m", true, true, "2d3h"},
		{"51h7m", true, false, ">=2d3h"},
		{"9600h", true, true, "400d"},
		{"-5s", true, true, "0ms"},
	}
	for _, tt := range tests {
		t.Run(tt.want+"/"+tt.d, func(t *testing.T) {
			if got := FormatAge(dur(t, tt.d), tt.known, tt.exact); got != tt.want {
				t.Errorf("FormatAge(%s, %v, %v) = %q, want %q", tt.d, tt.known, tt.exact, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	got := collector.Summarize(mixedSnapshot(t))
	C := func(kv ...any) map[collector.Cause]int {
		m := map[collector.Cause]int{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(collector.Cause)] = kv[i+1].(int)
		}
		return m
	}
	want := []collector.ProcessSummary{
		// 812 holds two sockets; the older is exact, but the younger is a
		// lower bound whose upper bound (4m30s) stays below 3h12m5s.
		{PID: 812, Comm: "nginx", Sockets: 2, Oldest: dur(t, "3h12m5s"), OldestKnown: true, OldestExact: true,
			Causes: C(collector.CauseInherited, 1, collector.CauseFINNotRead, 1, collector.CauseEOFNotClosed, 1)},
		// java: one socket of unknown age may be older than 12.3s.
		{PID: 1290, Comm: "java", Sockets: 2, Oldest: dur(t, "12.3s"), OldestKnown: true, OldestExact: false,
			Causes: C(collector.CauseUnreadData, 1, collector.CausePooledClient, 1, collector.CauseEOFNotClosed, 1)},
		{PID: 2044, Comm: "python3", Sockets: 1, Oldest: dur(t, "51h7m30s"), OldestKnown: true, OldestExact: true,
			Causes: C(collector.CauseEOFNotClosed, 1)},
		// The inherited socket counts once for the forked worker too.
		{PID: 813, Comm: "nginx", Sockets: 1, Oldest: dur(t, "3h12m5s"), OldestKnown: true, OldestExact: true,
			Causes: C(collector.CauseInherited, 1, collector.CauseFINNotRead, 1)},
		// The socket in the accept queue counts under its listener's process.
		{PID: 3321, Comm: "stalled", Sockets: 1, Oldest: dur(t, "850ms"), OldestKnown: true, OldestExact: true,
			Causes: C(collector.CauseNotAccepted, 1, collector.CauseFINNotRead, 1)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Summarize:\ngot  %+v\nwant %+v", got, want)
	}
}

func TestTableFits80Columns(t *testing.T) {
	// Typical rows: a lower-bound age in minutes, causes one a line. pid_max
	// is 4194304 on most 64-bit distributions, so 7-digit pids are typical.
	// Long addresses or names may run wider, and do.
	typical := []collector.Socket{
		{
			Local: ap("10.0.0.5:8080"), Remote: ap("10.0.0.17:51552"),
			Age: 4*time.Minute + 12*time.Second, AgeKnown: true,
			Owners: []collector.Owner{{PID: 1234567, Comm: "nginx", FD: 12}},
			Causes: []collector.Cause{collector.CauseEOFNotClosed},
		},
		{
			Local: ap("127.0.0.1:8080"), Remote: ap("127.0.0.1:51552"), RecvQ: 1,
			Age: 14*time.Minute + 3*time.Second, AgeKnown: true,
			Owners: []collector.Owner{{PID: 31337, Comm: "node", FD: 1023}},
			Causes: []collector.Cause{collector.CauseFINNotRead},
		},
		{
			Local: ap("[::1]:8080"), Remote: ap("[::1]:51552"), RecvQ: 1,
			Age: 23*time.Hour + 59*time.Minute, AgeKnown: true,
			Owners: []collector.Owner{{PID: 4012, Comm: "gunicorn", FD: 12}, {PID: 4019, Comm: "gunicorn", FD: 12}},
			Causes: []collector.Cause{collector.CauseInherited, collector.CauseEOFNotClosed},
		},
		{
			// Two causes on IPv4 loopback: 90 columns on one line.
			Local: ap("127.0.0.1:8080"), Remote: ap("127.0.0.1:51552"), RecvQ: 1,
			Age: 14*time.Minute + 3*time.Second, AgeKnown: true,
			Owners: []collector.Owner{{PID: 1234567, Comm: "python3", FD: 1023}},
			Causes: []collector.Cause{collector.CauseInherited, collector.CauseFINNotRead},
		},
	}
	for _, s := range typical {
		t.Run(s.Local.String(), func(t *testing.T) {
			s.State = collector.StateCloseWait
			var buf bytes.Buffer
			if err := Table(&buf, &collector.Snapshot{Sockets: []collector.Socket{s}}, TableOptions{}); err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(buf.String(), "\n") {
				if len(line) > 80 {
					t.Errorf("%d columns: %q", len(line), line)
				}
			}
		})
	}
}

func TestTableLayout(t *testing.T) {
	var buf bytes.Buffer
	if err := Table(&buf, mixedSnapshot(t), TableOptions{}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, "not root") {
		t.Error("table printed a warning; warnings go to stderr, from the caller")
	}
	lines := strings.Split(out, "\n")
	if got := strings.Fields(lines[0]); !slices.Equal(got, []string{"PID", "COMMAND", "FD", "LOCAL", "REMOTE", "RECV-Q", "AGE", "CAUSE"}) {
		t.Errorf("header %q", got)
	}
	var cont, noOwner, summaryHeader bool
	for i, l := range lines {
		f := strings.Fields(l)
		switch {
		case len(f) > 0 && f[0] == "812" && strings.HasSuffix(l, " inherited"):
			// The second owner and the second cause share the next row.
			cont = slices.Equal(strings.Fields(lines[i+1]), []string{"813", "nginx", "7", "fin-not-read"})
		case strings.Contains(l, "127.0.0.1:9000"):
			noOwner = slices.Equal(f[:3], []string{"3321", "stalled", "-"})
		case l == "" && i+1 < len(lines):
			summaryHeader = slices.Equal(strings.Fields(lines[i+1]), []string{"PID", "COMMAND", "SOCKETS", "OLDEST", "CAUSES"})
		}
		if strings.HasSuffix(l, " ") {
			t.Errorf("trailing blank in %q", l)
		}
	}
	if !cont {
		t.Error("second owner and cause of the inherited socket are not on a continuation row")
	}
	if !noOwner {
		t.Error("socket in an accept queue does not show its listener's process and fd -")
	}
	if !summaryHeader {
		t.Error("no blank line followed by the summary header")
	}
	if !strings.Contains(out, "[2001:db8::5]:443") {
		t.Error("IPv6 address not in brackets")
	}
	if !strings.HasSuffix(out, "\n") || strings.HasSuffix(out, "\n\n") {
		t.Errorf("output should end in exactly one newline: %q", out[len(out)-10:])
	}
}

func TestTableNoSockets(t *testing.T) {
	tests := []struct {
		states collector.StateSet
		want   string
	}{
		{0, "no sockets in CLOSE_WAIT\n"},
		{collector.StatesCloseWait, "no sockets in CLOSE_WAIT\n"},
		{collector.StatesCloseWait.With(collector.StateEstablished), "no sockets in ESTABLISHED, CLOSE_WAIT\n"},
		{collector.StatesAll, "no TCP sockets\n"},
	}
	for _, tt := range tests {
		for _, summary := range []bool{false, true} {
			var buf bytes.Buffer
			if err := Table(&buf, emptySnapshot(t), TableOptions{States: tt.states, SummaryOnly: summary}); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tt.want {
				t.Errorf("states %v summary %v: got %q, want %q", tt.states, summary, buf.String(), tt.want)
			}
		}
	}
}

func TestTableControlCharsInComm(t *testing.T) {
	snap := procfsSnapshot(t)
	// An escape sequence, a newline, a bidi override and a name cut
	// mid-rune at 15 bytes all come out as escapes.
	snap.Sockets[0].Owners[0].Comm = "evil\x1b[2J\nx\u202eab\\\xe2\x82"
	var buf bytes.Buffer
	if err := Table(&buf, snap, TableOptions{}); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(buf.String(), "\x1b\u202e") || !strings.Contains(buf.String(), `evil\x1b[2J\x0ax\u202eab\\\xe2\x82`) {
		t.Errorf("control characters reached the table:\n%q", buf.String())
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for _, mk := range []func(*testing.T) *collector.Snapshot{mixedSnapshot, statesSnapshot, procfsSnapshot, windowsSnapshot, containersSnapshot, emptySnapshot} {
		snap := mk(t)
		var buf bytes.Buffer
		if err := JSON(&buf, snap); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(buf.String(), "}\n") {
			t.Errorf("document does not end in a newline")
		}
		dec := json.NewDecoder(bytes.NewReader(buf.Bytes()))
		dec.DisallowUnknownFields()
		var doc Document
		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("decoding into Document: %v", err)
		}
		if dec.More() {
			t.Error("more than one JSON value")
		}
		if want := NewDocument(snap); !reflect.DeepEqual(doc, want) {
			t.Errorf("round trip:\ngot  %+v\nwant %+v", doc, want)
		}
		if doc.Schema != "closewait/v1" || len(doc.Sockets) != len(snap.Sockets) {
			t.Errorf("schema %q, %d sockets", doc.Schema, len(doc.Sockets))
		}
	}
}

// TestJSONKeys pins the schema's keys and the encodings consumers rely on:
// arrays never null, unknown ages null, RFC 3339 time.
func TestJSONKeys(t *testing.T) {
	var buf bytes.Buffer
	if err := JSON(&buf, mixedSnapshot(t)); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	checkKeys(t, "document", doc, "schema", "host", "time", "source", "warnings", "sockets", "summary")
	if _, err := time.Parse(time.RFC3339, doc["time"].(string)); err != nil {
		t.Errorf("time is not RFC 3339: %v", err)
	}
	socks := doc["sockets"].([]any)
	for _, s := range socks {
		s := s.(map[string]any)
		checkKeys(t, "socket", s, "state", "family", "local", "remote", "recv_q", "send_q", "inode", "cookie",
			"uid", "netns", "netns_name", "age_seconds", "age_exact", "age_max_seconds", "error", "causes", "owners", "listener")
		if _, ok := s["causes"].([]any); !ok {
			t.Errorf("causes not an array: %v", s["causes"])
		}
		owners, ok := s["owners"].([]any)
		if !ok {
			t.Errorf("owners not an array: %v", s["owners"])
		}
		for _, o := range owners {
			checkKeys(t, "owner", o.(map[string]any), "pid", "comm", "fd", "process", "container")
			if c, ok := o.(map[string]any)["container"]; !ok || c != nil {
				t.Errorf("plain process's container = %v, want null", c)
			}
		}
	}
	for _, p := range doc["summary"].([]any) {
		p := p.(map[string]any)
		checkKeys(t, "summary", p, "pid", "comm", "sockets", "oldest_seconds", "oldest_exact", "causes")
		if _, ok := p["causes"].(map[string]any); !ok {
			t.Errorf("summary causes not an object: %v", p["causes"])
		}
	}
	// Spot values: rounding to milliseconds, bounds, nulls, family, brackets.
	lower := socks[2].(map[string]any)
	if lower["age_seconds"] != 252.346 || lower["age_max_seconds"] != 270.2 || lower["age_exact"] != false {
		t.Errorf("lower-bound socket: %v", lower)
	}
	exact := socks[1].(map[string]any)
	if exact["age_seconds"] != 11525.0 || exact["age_max_seconds"] != 11525.0 || exact["age_exact"] != true {
		t.Errorf("exact socket: %v", exact)
	}
	noBound := socks[3].(map[string]any)
	if noBound["age_max_seconds"] != nil || noBound["family"] != "ipv6" || noBound["local"] != "[2001:db8::5]:443" {
		t.Errorf("IPv6 lower bound without upper bound: %v", noBound)
	}
	unknown := socks[5].(map[string]any)
	if unknown["age_seconds"] != nil || unknown["age_max_seconds"] != nil {
		t.Errorf("unknown age not null: %v", unknown)
	}
	queued := socks[4].(map[string]any)
	if owners := queued["owners"].([]any); len(owners) != 0 {
		t.Errorf("not-accepted socket has owners %v", owners)
	}
	if l := queued["listener"].([]any); len(l) != 1 || l[0].(map[string]any)["comm"] != "stalled" {
		t.Errorf("not-accepted socket's listener %v, want the stalled server", l)
	}

	// What Windows cannot give is null, and an age bound needs no age.
	buf.Reset()
	if err := JSON(&buf, windowsSnapshot(t)); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	win := doc["sockets"].([]any)[0].(map[string]any)
	for _, k := range []string{"recv_q", "send_q", "inode", "uid", "age_seconds"} {
		if v, ok := win[k]; !ok || v != nil {
			t.Errorf("windows socket %s = %v, want null", k, v)
		}
	}
	if win["age_max_seconds"] != 7500.0 {
		t.Errorf("windows socket age_max_seconds = %v, want 7500", win["age_max_seconds"])
	}
	if o := win["owners"].([]any)[0].(map[string]any); o["fd"] != nil || o["pid"] != 6120.0 {
		t.Errorf("windows owner %v, want pid 6120, fd null", o)
	}

	// An empty snapshot still has arrays, not nulls.
	buf.Reset()
	if err := JSON(&buf, emptySnapshot(t)); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"warnings": []`, `"sockets": []`, `"summary": []`} {
		if !strings.Contains(buf.String(), key) {
			t.Errorf("empty document lacks %s:\n%s", key, buf.String())
		}
	}
}

func checkKeys(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(keys)
	if !slices.Equal(got, keys) {
		t.Errorf("%s keys %v, want %v", what, got, keys)
	}
}

func TestFormatSocketAge(t *testing.T) {
	tests := []struct {
		age, max time.Duration
		exact    bool
		want     string
	}{
		{21904 * time.Millisecond, 21912 * time.Millisecond, false, "21s"}, // the bounds print alike
		{21904 * time.Millisecond, 22100 * time.Millisecond, false, ">=21s"},
		{21904 * time.Millisecond, 0, false, ">=21s"}, // no upper bound
		{500 * time.Millisecond, 500 * time.Millisecond, true, "500ms"},
	}
	for _, tt := range tests {
		s := collector.Socket{Age: tt.age, AgeMax: tt.max, AgeKnown: true, AgeExact: tt.exact}
		if got := FormatSocketAge(&s); got != tt.want {
			t.Errorf("age %v max %v exact %v: %q, want %q", tt.age, tt.max, tt.exact, got, tt.want)
		}
	}
	if got := FormatSocketAge(&collector.Socket{}); got != "-" {
		t.Errorf("unknown age: %q, want -", got)
	}
}

// TestMappedAddresses: a dual-stack socket's IPv4 peer prints as IPv4 in
// the table; JSON keeps the kernel's form.
func TestMappedAddresses(t *testing.T) {
	s := collector.Socket{Family: collector.FamilyIPv6, State: collector.StateCloseWait,
		Local: netip.MustParseAddrPort("[::ffff:127.0.0.1]:8080"), Remote: netip.MustParseAddrPort("[::ffff:127.0.0.1]:40000")}
	snap := &collector.Snapshot{Sockets: []collector.Socket{s}}
	var table, js bytes.Buffer
	if err := Table(&table, snap, TableOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := JSON(&js, snap); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), " 127.0.0.1:8080 ") || strings.Contains(table.String(), "::ffff:") {
		t.Errorf("table:\n%s", table.String())
	}
	if !strings.Contains(js.String(), `"[::ffff:127.0.0.1]:8080"`) {
		t.Errorf("JSON lost the mapped form:\n%s", js.String())
	}
}
