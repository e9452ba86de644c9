package collector

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"
)

// procfsSource parses /proc/net/tcp and /proc/net/tcp6: slower than
// sock_diag (the kernel prints every socket, whatever its state) and without
// cookies or ages, but always there.
type procfsSource struct{}

func (procfsSource) name() string { return SourceProcfs }

func (procfsSource) dump(ctx context.Context, q query) (dumpResult, error) {
	return dumpEachNetNS(ctx, q, func(ns *netNamespace) (dumpResult, error) {
		return procfsDumpNetNS(ctx, q, ns)
	})
}

// procfsDumpNetNS reads the tables of one namespace; nil is the caller's.
func procfsDumpNetNS(ctx context.Context, q query, ns *netNamespace) (dumpResult, error) {
	tables := []struct {
		file string
		fam  Family
		f    *os.File
	}{{file: "tcp", fam: FamilyIPv4}, {file: "tcp6", fam: FamilyIPv6}}
	dir := procNetDir(q.procRoot)
	defer func() {
		for _, t := range tables {
			if t.f != nil {
				t.f.Close()
			}
		}
	}()
	// A file of /proc/net shows the namespace it was opened in.
	var eph portRange
	var netns uint64
	err := withinNetNS(ns, func() error {
		want := familiesToWalk(ns, q)
		for i := range tables {
			t := &tables[i]
			if !want[i] {
				continue // no socket of this family to find
			}
			f, err := os.Open(dir + t.file)
			if err != nil {
				if t.fam == FamilyIPv6 && errors.Is(err, fs.ErrNotExist) {
					continue // IPv6 disabled
				}
				return err
			}
			t.f = f
		}
		eph, netns = readEphemeralPorts(q.procRoot), netnsInode(q.procRoot)
		return nil
	})
	if err != nil {
		return dumpResult{}, err
	}
	var socks []Socket
	var listeners []listener
	for _, t := range tables {
		if err := ctx.Err(); err != nil {
			return dumpResult{}, err
		}
		if t.f == nil {
			continue
		}
		s, l, err := parseProcNetTCP(t.f, t.fam, q.states)
		if err != nil {
			return dumpResult{}, fmt.Errorf("reading %s: %w", dir+t.file, err)
		}
		socks = append(socks, s...)
		listeners = append(listeners, l...)
	}
	socks = dropRepeats(socks)
	setNetNS(socks, listeners, netns)
	markInboundNS(socks, listeners, func(uint64) portRange { return eph })
	return dumpResult{sockets: socks, listeners: listeners}, nil
}

// procNetDir is where the calling thread's /proc/net files are. /proc/net
// is the main thread's, which another walk may have moved into another
// namespace for a moment: /proc/thread-self/net is this thread's. A copy
// of /proc (tests) has only net.
func procNetDir(procRoot string) string {
	if procRoot == "/proc" {
		return procRoot + "/thread-self/net/"
	}
	return procRoot + "/net/"
}

// dropRepeats keeps the first of rows that name one socket (addresses and
// inode). The kernel prints /proc/net/tcp a page at a time and finds its
// place again by position in a hash chain, so a socket added or removed
// between two pages can make a row repeat.
func dropRepeats(socks []Socket) []Socket {
	type key struct {
		local, remote netip.AddrPort
		inode         uint64
	}
	seen := make(map[key]bool, len(socks))
	return slices.DeleteFunc(socks, func(s Socket) bool {
		k := key{s.Local, s.Remote, s.Inode}
		if seen[k] {
			return true
		}
		seen[k] = true
		return false
	})
}

// userHZ is the unit of the timer column (clock_t ticks).
const userHZ = 100

// parseProcNetTCP parses the text of /proc/net/tcp (fam FamilyIPv4) or
// /proc/net/tcp6 (FamilyIPv6). It returns the sockets whose state is in
// states, and the address of every listener whatever states holds.
func parseProcNetTCP(r io.Reader, fam Family, states StateSet) ([]Socket, []listener, error) {
	var socks []Socket
	var listeners []listener
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if line == 1 && bytes.Contains(b, []byte("local_address")) {
			continue
		}
		if len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		s, err := parseProcNetTCPLine(b, fam, states)
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: %w", line, err)
		}
		if s.State == StateListen {
			listeners = append(listeners, listener{local: s.Local, inode: s.Inode})
		}
		if states.Has(s.State) {
			socks = append(socks, s)
		}
	}
	return socks, listeners, sc.Err()
}

// parseProcNetTCPLine parses one row:
//
//	sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
//
// Rows in states neither wanted nor LISTEN come back with only State set.
func parseProcNetTCPLine(b []byte, fam Family, states StateSet) (Socket, error) {
	var f [10][]byte
	rest := b
	for i := range f {
		f[i], rest = nextField(rest)
		if f[i] == nil {
			return Socket{}, fmt.Errorf("%d fields, want at least %d", i, len(f))
		}
	}
	st, err := parseHex(f[3], 8)
	if err != nil {
		return Socket{}, fmt.Errorf("state %q: %w", f[3], err)
	}
	s := Socket{Family: fam, State: State(st)}
	if !states.Has(s.State) && s.State != StateListen {
		return s, nil
	}
	if s.Local, err = parseProcAddr(f[1], fam); err != nil {
		return s, fmt.Errorf("local address: %w", err)
	}
	if s.State != StateListen {
		if s.Remote, err = parseProcAddr(f[2], fam); err != nil {
			return s, fmt.Errorf("remote address: %w", err)
		}
	}
	tx, rx, ok := bytes.Cut(f[4], []byte(":"))
	if !ok {
		return s, fmt.Errorf("queues %q: want tx:rx", f[4])
	}
	if s.SendQ, err = parseHex32(tx); err != nil {
		return s, fmt.Errorf("tx_queue: %w", err)
	}
	if s.RecvQ, err = parseHex32(rx); err != nil {
		return s, fmt.Errorf("rx_queue: %w", err)
	}
	tr, when, ok := bytes.Cut(f[5], []byte(":"))
	if !ok {
		return s, fmt.Errorf("timer %q: want tr:when", f[5])
	}
	timer, err := parseHex(tr, 8)
	if err != nil {
		return s, fmt.Errorf("timer: %w", err)
	}
	if s.Timer = timerName(uint8(timer)); s.Timer != "" {
		ticks, err := parseHex(when, 64)
		if err != nil {
			return s, fmt.Errorf("timer expiry: %w", err)
		}
		s.TimerLeft = time.Duration(min(ticks, 1<<32)) * (time.Second / userHZ)
	}
	uid, err := strconv.ParseUint(string(f[7]), 10, 32)
	if err != nil {
		return s, fmt.Errorf("uid: %w", err)
	}
	s.UID = uint32(uid)
	if s.Inode, err = strconv.ParseUint(string(f[9]), 10, 64); err != nil {
		return s, fmt.Errorf("inode: %w", err)
	}
	return s, nil
}

// parseProcAddr parses "0100007F:1F90": the address as 32-bit words, each
// printed in host byte order, then the port.
func parseProcAddr(b []byte, fam Family) (netip.AddrPort, error) {
	hexAddr, hexPort, ok := bytes.Cut(b, []byte(":"))
	want := 8
	if fam == FamilyIPv6 {
		want = 32
	}
	if !ok || len(hexAddr) != want || len(hexPort) != 4 {
		return netip.AddrPort{}, fmt.Errorf("malformed %q", b)
	}
	var raw [16]byte
	for i := 0; i < len(hexAddr); i += 8 {
		w, err := parseHex32(hexAddr[i : i+8])
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("malformed %q: %w", b, err)
		}
		binary.NativeEndian.PutUint32(raw[i/2:], w)
	}
	port, err := parseHex(hexPort, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("malformed port in %q: %w", b, err)
	}
	addr := netip.AddrFrom16(raw)
	if fam == FamilyIPv4 {
		addr = netip.AddrFrom4([4]byte(raw[:4]))
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

func parseHex32(b []byte) (uint32, error) {
	v, err := parseHex(b, 32)
	return uint32(v), err
}

// parseHex parses an unsigned hex number of at most bits bits. Unlike
// strconv it takes bytes, so the rows it skips cost no allocation.
func parseHex(b []byte, bits int) (uint64, error) {
	if len(b) == 0 || len(b) > bits/4 {
		return 0, fmt.Errorf("bad hex %q", b)
	}
	var v uint64
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, fmt.Errorf("bad hex %q", b)
		}
		v = v<<4 | uint64(c)
	}
	return v, nil
}

// nextField splits off the first space-separated field; nil when none is left.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && b[i] == ' ' {
		i++
	}
	if i == len(b) {
		return nil, nil
	}
	j := i
	for j < len(b) && b[j] != ' ' {
		j++
	}
	return b[i:j], b[j:]
}
