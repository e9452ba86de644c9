package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Sizes of the fixed binary structs the BPF programs write (struct record
// and struct event in closewait.c). The objects are built little-endian
// only, so the decoder reads little-endian.
const (
	RecordSize = 152
	EventSize  = 80
)

// Address families as the kernel numbers them.
const (
	afInet  = 2
	afInet6 = 10
)

// Record flags (REC_* in closewait.c).
const (
	// RecKeepOpen: SO_KEEPALIVE is set on the socket.
	RecKeepOpen = 1 << 0
	// RecStamp: CloseWaitAge comes from the tracer's entry stamp.
	RecStamp = 1 << 1
	// RecOwned: an owner record from iter/task_file: TGID, FD and Comm
	// name a process holding the socket with this Inode. Besides them it
	// has only what struct sock holds (addresses, state, netns, uid,
	// SockErr, and Cookie when the kernel had made one).
	RecOwned = 1 << 2
	// RecListener: a listener, emitted by iter/tcp for inbound marking.
	RecListener = 1 << 3
	// RecAges: a full socket (not time-wait or request) on a kernel whose
	// CONFIG_HZ is known: LastAckRecv, LastDataRecv and the keepalive
	// times are set.
	RecAges = 1 << 4
	// RecMPTCP: the fd holds an MPTCP socket. The record names the owner
	// and the inode; the TCP subflows, which iter/tcp reports with that
	// inode, are the sockets.
	RecMPTCP = 1 << 5
	// RecChild: a full socket made by a listener (it keeps the listener's
	// backlog, even after the listener is closed).
	RecChild = 1 << 6
	// RecConnected: a full socket made by connect().
	RecConnected = 1 << 7
)

// Record xflags (RECX_* in closewait.c).
const (
	// RecXShared: the socket's file has more references than the one fd
	// (another fd, or a syscall under way): iter/task_file did not count
	// it in Held, and whoever counts must, once per inode.
	RecXShared = 1 << 0
	// RecXCount: a socket not in the requested states, sent only to be
	// counted (with RecXShared): Inode, NetNS, Family and State are set.
	RecXCount = 1 << 1
	// RecXFiled: from iter/tcp, a socket that has a file, which
	// iter/task_file reports too when an fd holds it.
	RecXFiled = 1 << 2
)

// KeepaliveOwn bits (KA_OWN_* in closewait.c): the socket's own value.
const (
	KeepaliveOwnIdle     = 1 << 0
	KeepaliveOwnInterval = 1 << 1
	KeepaliveOwnProbes   = 1 << 2
)

// Event flags (EV_* in closewait.c).
const (
	// EvDuration: CloseWait holds the time the socket spent in CLOSE_WAIT.
	EvDuration = 1 << 0
	// EvClassic: from the classic tracepoint, which has no cookie, inode
	// or network namespace.
	EvClassic = 1 << 1
)

// TCP states used here, numbered as the kernel numbers them.
const (
	stateSynRecv    = 3
	stateTimeWait   = 6
	stateClose      = 7
	stateCloseWait  = 8
	stateListen     = 10
	stateNewSynRecv = 12
)

// Record is one socket as the iterators report it. Fields the iterator
// could not know (the owner of a socket found by iter/tcp, ages of a
// time-wait socket) are zero; Flags says which are set.
type Record struct {
	Cookie uint64
	Inode  uint64
	// CloseWaitAge is the time since the socket entered CLOSE_WAIT, from
	// the tracer's stamp; valid with RecStamp.
	CloseWaitAge time.Duration
	NetNS        uint32
	TGID         uint32
	FD           uint32
	UID          uint32
	RecvQ        uint32
	SendQ        uint32
	// LastAckRecv and LastDataRecv are tcp_info's tcpi_last_ack_recv and
	// tcpi_last_data_recv; valid with RecAges.
	LastAckRecv  time.Duration
	LastDataRecv time.Duration
	// Keepalive settings, the netns sysctl defaults filled in for unset
	// socket options.
	KeepaliveIdle     time.Duration
	KeepaliveInterval time.Duration
	UserTimeout       time.Duration
	KeepaliveProbes   uint8
	// KeepaliveOwn says which of the three the socket sets itself
	// (KeepaliveOwn* bits); the others are the sysctl defaults.
	KeepaliveOwn uint8
	// Timer is inet_diag's idiag_timer (1 on, 2 keepalive, 3 timewait,
	// 4 persist; 0 none); TimerLeft the time until it fires.
	Timer       uint8
	TimerLeft   time.Duration
	ProbesOut   uint8
	Retransmits uint8
	Backoff     uint8 // icsk_backoff: retransmission timeouts doubled so far
	// SockErr is the socket's pending error (sk_err, else sk_err_soft): a
	// reset closes a socket with ECONNRESET, a timeout with ETIMEDOUT.
	SockErr uint32
	Family  uint8 // 2 (AF_INET) or 10 (AF_INET6)
	State   uint8
	Flags   uint8
	XFlags  uint8 // RecX* bits
	Local   netip.AddrPort
	Remote  netip.AddrPort
	Comm    [16]byte // NUL-padded task comm; valid with RecOwned
	// Cgroups stands for the owner's set of cgroups (the kernel's
	// css_set): owners with equal ones are in the same cgroups. Valid with
	// RecOwned; 0 when unknown.
	Cgroups uint64
}

// CommString returns the owner's command name.
func (r *Record) CommString() string { return cstring(r.Comm[:]) }

var (
	errShort  = errors.New("short record")
	errFamily = errors.New("unknown address family")
	errState  = errors.New("unknown TCP state")
)

// DecodeRecord decodes one record from the first RecordSize bytes of b.
// It does not allocate.
func DecodeRecord(b []byte, r *Record) error {
	if len(b) < RecordSize {
		return fmt.Errorf("%w: %d bytes, want %d", errShort, len(b), RecordSize)
	}
	b = b[:RecordSize]
	le := binary.LittleEndian
	family, state := b[76], b[77]
	if state == 0 || state > stateNewSynRecv {
		return fmt.Errorf("%w %d", errState, state)
	}
	local, remote, err := addrs(family, b[84:100], b[100:116])
	if err != nil {
		return err
	}
	ms := func(off int) time.Duration { return time.Duration(le.Uint32(b[off:])) * time.Millisecond }
	*r = Record{
		Cookie:            le.Uint64(b[0:]),
		Inode:             le.Uint64(b[8:]),
		CloseWaitAge:      time.Duration(le.Uint64(b[16:])),
		NetNS:             le.Uint32(b[24:]),
		TGID:              le.Uint32(b[28:]),
		FD:                le.Uint32(b[32:]),
		UID:               le.Uint32(b[36:]),
		RecvQ:             le.Uint32(b[40:]),
		SendQ:             le.Uint32(b[44:]),
		LastAckRecv:       ms(48),
		LastDataRecv:      ms(52),
		KeepaliveIdle:     ms(56),
		KeepaliveInterval: ms(60),
		UserTimeout:       ms(64),
		TimerLeft:         ms(68),
		Family:            family,
		State:             state,
		Flags:             b[78],
		KeepaliveProbes:   b[79],
		Timer:             b[80],
		ProbesOut:         b[81],
		Retransmits:       b[82],
		Backoff:           b[83],
		SockErr:           le.Uint32(b[132:]),
		KeepaliveOwn:      b[136],
		XFlags:            b[137],
		Cgroups:           le.Uint64(b[144:]),
		Local:             netip.AddrPortFrom(local, le.Uint16(b[72:])),
		Remote:            netip.AddrPortFrom(remote, le.Uint16(b[74:])),
	}
	copy(r.Comm[:], b[116:132])
	if r.CloseWaitAge < 0 { // a corrupt stamp; never a negative age
		r.CloseWaitAge, r.Flags = 0, r.Flags&^RecStamp
	}
	return nil
}

// DecodeRecords decodes the whole records at the start of b, calling fn
// with each (the Record is reused: copy what you keep). It returns the
// number of bytes consumed, a multiple of RecordSize; a trailing partial
// record is left for the caller to complete.
func DecodeRecords(b []byte, fn func(*Record)) (int, error) {
	var r Record
	n := 0
	for len(b)-n >= RecordSize {
		if err := DecodeRecord(b[n:], &r); err != nil {
			return n, fmt.Errorf("record at byte %d: %w", n, err)
		}
		fn(&r)
		n += RecordSize
	}
	return n, nil
}

// Owner is a process holding a socket through one of its fds.
type Owner struct {
	PID  int
	Comm string
	FD   int
}

// Event is one TCP state transition from the tracer.
type Event struct {
	// Time is CLOCK_MONOTONIC nanoseconds at the transition.
	Time   uint64
	Cookie uint64
	Inode  uint64
	// CloseWait is the time spent in CLOSE_WAIT, on leaving it, when the
	// entry was stamped (EvDuration).
	CloseWait time.Duration
	NetNS     uint32
	// PID is the task current at the transition: the kernel often moves
	// sockets in softirq, so this is usually not the owner.
	PID      uint32
	Family   uint8
	OldState uint8
	NewState uint8
	Flags    uint8
	Local    netip.AddrPort
	Remote   netip.AddrPort
}

// DecodeEvent decodes one event from the first EventSize bytes of b. It
// does not allocate.
func DecodeEvent(b []byte, e *Event) error {
	if len(b) < EventSize {
		return fmt.Errorf("%w: %d bytes, want %d", errShort, len(b), EventSize)
	}
	b = b[:EventSize]
	le := binary.LittleEndian
	family, olds, news := b[44], b[45], b[46]
	if olds == 0 || olds > stateNewSynRecv || news == 0 || news > stateNewSynRecv {
		return fmt.Errorf("%w %d -> %d", errState, olds, news)
	}
	local, remote, err := addrs(family, b[48:64], b[64:80])
	if err != nil {
		return err
	}
	*e = Event{
		Time:      le.Uint64(b[0:]),
		Cookie:    le.Uint64(b[8:]),
		Inode:     le.Uint64(b[16:]),
		CloseWait: time.Duration(le.Uint64(b[24:])),
		NetNS:     le.Uint32(b[32:]),
		PID:       le.Uint32(b[36:]),
		Family:    family,
		OldState:  olds,
		NewState:  news,
		Flags:     b[47],
		Local:     netip.AddrPortFrom(local, le.Uint16(b[40:])),
		Remote:    netip.AddrPortFrom(remote, le.Uint16(b[42:])),
	}
	if e.CloseWait < 0 {
		e.CloseWait, e.Flags = 0, e.Flags&^EvDuration
	}
	return nil
}

// addrs decodes a pair of addresses stored as 16 bytes each, IPv4 in the
// first four. IPv4-mapped IPv6 addresses of dual-stack sockets keep their
// ::ffff: form, as ss and the netlink source show them.
func addrs(family uint8, src, dst []byte) (netip.Addr, netip.Addr, error) {
	switch family {
	case afInet:
		return netip.AddrFrom4([4]byte(src[:4])), netip.AddrFrom4([4]byte(dst[:4])), nil
	case afInet6:
		return netip.AddrFrom16([16]byte(src[:16])), netip.AddrFrom16([16]byte(dst[:16])), nil
	}
	return netip.Addr{}, netip.Addr{}, fmt.Errorf("%w %d", errFamily, family)
}

// SameComm reports whether s is the NUL-terminated name in b, as in
// Record.Comm, without allocating: a caller that keeps names by pid
// checks a record against the name it has before making a new string.
func SameComm(s string, b []byte) bool {
	n := len(b)
	for i, c := range b {
		if c == 0 {
			n = i
			break
		}
	}
	return len(s) == n && s == string(b[:n])
}

func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
