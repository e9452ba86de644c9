package ebpf

import (
	"testing"
	"unsafe"
)

// TestLayout checks the hand-written decoder's offsets against the Go
// structs bpf2go generated from the object's BTF, so that a change to
// struct record or struct event in closewait.c cannot go unnoticed.
func TestLayout(t *testing.T) {
	var r closewaitRecord
	var e closewaitEvent
	tests := []struct {
		name      string
		got, want uintptr
	}{
		{"record size", unsafe.Sizeof(r), RecordSize},
		{"record cookie", unsafe.Offsetof(r.Cookie), 0},
		{"record cgroups", unsafe.Offsetof(r.Cgroups), 144},
		{"record inode", unsafe.Offsetof(r.Inode), 8},
		{"record cw_age_ns", unsafe.Offsetof(r.CwAgeNs), 16},
		{"record netns", unsafe.Offsetof(r.Netns), 24},
		{"record tgid", unsafe.Offsetof(r.Tgid), 28},
		{"record fd", unsafe.Offsetof(r.Fd), 32},
		{"record uid", unsafe.Offsetof(r.Uid), 36},
		{"record recv_q", unsafe.Offsetof(r.RecvQ), 40},
		{"record send_q", unsafe.Offsetof(r.SendQ), 44},
		{"record last_ack_recv_ms", unsafe.Offsetof(r.LastAckRecvMs), 48},
		{"record last_data_recv_ms", unsafe.Offsetof(r.LastDataRecvMs), 52},
		{"record keepalive_time_ms", unsafe.Offsetof(r.KeepaliveTimeMs), 56},
		{"record keepalive_intvl_ms", unsafe.Offsetof(r.KeepaliveIntvlMs), 60},
		{"record user_timeout_ms", unsafe.Offsetof(r.UserTimeoutMs), 64},
		{"record timer_left_ms", unsafe.Offsetof(r.TimerLeftMs), 68},
		{"record sport", unsafe.Offsetof(r.Sport), 72},
		{"record dport", unsafe.Offsetof(r.Dport), 74},
		{"record family", unsafe.Offsetof(r.Family), 76},
		{"record state", unsafe.Offsetof(r.State), 77},
		{"record flags", unsafe.Offsetof(r.Flags), 78},
		{"record keepalive_probes", unsafe.Offsetof(r.KeepaliveProbes), 79},
		{"record timer", unsafe.Offsetof(r.Timer), 80},
		{"record probes_out", unsafe.Offsetof(r.ProbesOut), 81},
		{"record retransmits", unsafe.Offsetof(r.Retransmits), 82},
		{"record backoff", unsafe.Offsetof(r.Backoff), 83},
		{"record saddr", unsafe.Offsetof(r.Saddr), 84},
		{"record daddr", unsafe.Offsetof(r.Daddr), 100},
		{"record comm", unsafe.Offsetof(r.Comm), 116},
		{"record sk_err", unsafe.Offsetof(r.SkErr), 132},
		{"record keepalive_own", unsafe.Offsetof(r.KeepaliveOwn), 136},
		{"record xflags", unsafe.Offsetof(r.Xflags), 137},

		{"event size", unsafe.Sizeof(e), EventSize},
		{"event time_ns", unsafe.Offsetof(e.TimeNs), 0},
		{"event cookie", unsafe.Offsetof(e.Cookie), 8},
		{"event inode", unsafe.Offsetof(e.Inode), 16},
		{"event cw_ns", unsafe.Offsetof(e.CwNs), 24},
		{"event netns", unsafe.Offsetof(e.Netns), 32},
		{"event pid", unsafe.Offsetof(e.Pid), 36},
		{"event sport", unsafe.Offsetof(e.Sport), 40},
		{"event dport", unsafe.Offsetof(e.Dport), 42},
		{"event family", unsafe.Offsetof(e.Family), 44},
		{"event oldstate", unsafe.Offsetof(e.Oldstate), 45},
		{"event newstate", unsafe.Offsetof(e.Newstate), 46},
		{"event flags", unsafe.Offsetof(e.Flags), 47},
		{"event saddr", unsafe.Offsetof(e.Saddr), 48},
		{"event daddr", unsafe.Offsetof(e.Daddr), 64},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: offset %d in the object, %d in the decoder", tt.name, tt.got, tt.want)
		}
	}
}
