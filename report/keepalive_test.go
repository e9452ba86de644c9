package report

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/collector"
)

// keepaliveAudit builds an audit the way CollectKeepalive does, from
// sockets as the ebpf source (ka set) or another source (ka nil) gives
// them.
func keepaliveAudit(source string, socks []collector.Socket) *collector.KeepaliveAudit {
	snap := &collector.Snapshot{Host: "web1", Time: time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC), Source: source, Sockets: socks}
	a := &collector.KeepaliveAudit{Snapshot: snap}
	for i := range snap.Sockets {
		collector.Classify(&snap.Sockets[i])
		a.Audited = append(a.Audited, collector.KeepaliveSocket{Socket: &snap.Sockets[i], DeadPeer: collector.DeadPeerOf(&snap.Sockets[i])})
	}
	for i := range a.Audited {
		if a.Audited[i].Unresponsive {
			a.Audited[i].Causes = append(a.Audited[i].Causes, collector.CausePeerUnresponsive)
		}
	}
	a.Processes = collector.SummarizeKeepalive(a.Audited)
	return a
}

func kaSocket(pid int, comm, remote string, idle time.Duration, ka *collector.Keepalive) collector.Socket {
	return collector.Socket{
		Family: collector.FamilyIPv4, State: collector.StateEstablished,
		Local: netip.MustParseAddrPort("10.0.0.5:8080"), Remote: netip.MustParseAddrPort(remote),
		Owners: []collector.Owner{{PID: pid, Comm: comm, FD: 7}}, Idle: idle, IdleKnown: true, Keepalive: ka,
	}
}

func TestKeepaliveTable(t *testing.T) {
	s := time.Second
	off := &collector.Keepalive{Idle: 7200 * s, Interval: 75 * s, Probes: 9}
	def := &collector.Keepalive{Enabled: true, Idle: 7200 * s, Interval: 75 * s, Probes: 9}
	short := &collector.Keepalive{Enabled: true, Idle: 5 * s, Interval: 5 * s, Probes: 3, Own: collector.KeepaliveOwnAll}
	closed := collector.Socket{
		Family: collector.FamilyIPv4, State: collector.StateClose,
		Local: netip.MustParseAddrPort("10.0.0.5:0"), Remote: netip.MustParseAddrPort("10.0.9.4:41000"),
		Owners: []collector.Owner{{PID: 4242, Comm: "nginx", FD: 9}}, SockErr: 104,
	}
	silent := kaSocket(6161, "app", "10.0.9.3:45001", 14*s, short)
	silent.Unanswered = 2 // keepalive probes unanswered
	a := keepaliveAudit("ebpf", []collector.Socket{
		kaSocket(4242, "nginx", "10.0.9.7:51234", 3*time.Hour+2*time.Minute, off),
		kaSocket(4242, "nginx", "10.0.9.8:40112", 5*s, off),
		kaSocket(5150, "java", "10.0.9.9:33012", 12*time.Minute, def),
		kaSocket(6161, "app", "10.0.9.3:45000", s, short),
		silent,
		closed,
	})
	var buf bytes.Buffer
	if err := KeepaliveTable(&buf, a, false); err != nil {
		t.Fatal(err)
	}
	golden(t, "keepalive.table", buf.Bytes())
	for _, line := range strings.Split(buf.String(), "\n") {
		if len(line) > 80 {
			t.Errorf("line of %d columns: %q", len(line), line)
		}
	}
	buf.Reset()
	if err := KeepaliveJSON(&buf, a); err != nil {
		t.Fatal(err)
	}
	golden(t, "keepalive.json", buf.Bytes())

	// The netlink source: keepalive on or off from the timer, nothing else.
	n := kaSocket(5150, "java", "10.0.9.9:33012", time.Minute, nil)
	n.Timer = "keepalive"
	m := kaSocket(5150, "java", "10.0.9.9:33013", time.Minute, nil)
	m.Timer = "on"                                                // a retransmission hides the keepalive timer
	hidden := kaSocket(0, "", "10.0.9.9:33014", time.Minute, nil) // owner hidden: not root
	hidden.Owners = nil
	buf.Reset()
	if err := KeepaliveJSON(&buf, keepaliveAudit("netlink", []collector.Socket{n, m, hidden})); err != nil {
		t.Fatal(err)
	}
	golden(t, "keepalive-netlink.json", buf.Bytes())
}
