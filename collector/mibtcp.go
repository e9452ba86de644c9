package collector

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"time"
)

// SourceIPHelper is the Windows source that reads GetExtendedTcpTable's
// owner-module tables, which carry each connection's creation time.
const SourceIPHelper = "iphlpapi"

// The rows GetExtendedTcpTable returns for TCP_TABLE_OWNER_MODULE_ALL, as
// laid out in memory on 64-bit Windows (little-endian). A table is a
// DWORD count, 4 bytes of padding (the rows hold 8-byte integers), then
// the rows. This file builds on every OS so the decoder is tested on Linux.
const (
	mibTableHeader   = 8
	mibTCPRowSize    = 160                // MIB_TCPROW_OWNER_MODULE
	mibTCP6RowSize   = 192                // MIB_TCP6ROW_OWNER_MODULE
	filetimeUnixDiff = 116444736000000000 // 1601-01-01 to 1970-01-01 in 100 ns
)

// mibStates maps MIB_TCP_STATE (1 CLOSED ... 12 DELETE_TCB) to State.
var mibStates = [...]State{
	1:  StateClose,
	2:  StateListen,
	3:  StateSynSent,
	4:  StateSynRecv,
	5:  StateEstablished,
	6:  StateFinWait1,
	7:  StateFinWait2,
	8:  StateCloseWait,
	9:  StateClosing,
	10: StateLastAck,
	11: StateTimeWait,
	12: StateClose, // DELETE_TCB: being freed
}

// mibRow is one decoded table row: the socket and its owner's PID.
type mibRow struct {
	sock Socket
	pid  int
}

// decodeMIBTCPTable decodes a MIB_TCPTABLE_OWNER_MODULE (family IPv4) or
// MIB_TCP6TABLE_OWNER_MODULE (IPv6). now turns each row's creation time
// into AgeMax; a zero creation time leaves AgeMax 0 (unknown).
func decodeMIBTCPTable(b []byte, family Family, now time.Time) ([]mibRow, error) {
	size := mibTCPRowSize
	if family == FamilyIPv6 {
		size = mibTCP6RowSize
	}
	if len(b) < 4 {
		return nil, fmt.Errorf("tcp table: %d bytes, want at least 4", len(b))
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n == 0 {
		return nil, nil
	}
	if want := mibTableHeader + n*size; n > len(b)/size || len(b) < want {
		return nil, fmt.Errorf("tcp table: %d rows need %d bytes, have %d", n, mibTableHeader+n*size, len(b))
	}
	rows := make([]mibRow, n)
	for i := range rows {
		r := b[mibTableHeader+i*size:][:size]
		var err error
		if family == FamilyIPv6 {
			err = decodeMIBTCP6Row(r, &rows[i], now)
		} else {
			err = decodeMIBTCPRow(r, &rows[i], now)
		}
		if err != nil {
			return nil, fmt.Errorf("tcp table row %d: %w", i, err)
		}
	}
	return rows, nil
}

// decodeMIBTCPRow decodes MIB_TCPROW_OWNER_MODULE: dwState, dwLocalAddr,
// dwLocalPort, dwRemoteAddr, dwRemotePort, dwOwningPid, liCreateTimestamp,
// OwningModuleInfo. Addresses and ports are in network byte order.
func decodeMIBTCPRow(r []byte, row *mibRow, now time.Time) error {
	le := binary.LittleEndian
	st, err := mibState(le.Uint32(r[0:]))
	if err != nil {
		return err
	}
	row.sock = Socket{
		Family: FamilyIPv4,
		State:  st,
		Local:  netip.AddrPortFrom(netip.AddrFrom4([4]byte(r[4:8])), mibPort(r[8:])),
		Remote: netip.AddrPortFrom(netip.AddrFrom4([4]byte(r[12:16])), mibPort(r[16:])),
	}
	row.pid = int(le.Uint32(r[20:]))
	row.sock.AgeMax = ageSince(int64(le.Uint64(r[24:])), now)
	markUnknowns(&row.sock)
	return nil
}

// decodeMIBTCP6Row decodes MIB_TCP6ROW_OWNER_MODULE: ucLocalAddr[16],
// dwLocalScopeId, dwLocalPort, ucRemoteAddr[16], dwRemoteScopeId,
// dwRemotePort, dwState, dwOwningPid, liCreateTimestamp, OwningModuleInfo.
func decodeMIBTCP6Row(r []byte, row *mibRow, now time.Time) error {
	le := binary.LittleEndian
	st, err := mibState(le.Uint32(r[48:]))
	if err != nil {
		return err
	}
	row.sock = Socket{
		Family: FamilyIPv6,
		State:  st,
		Local:  netip.AddrPortFrom(mibAddr6(r[0:16], le.Uint32(r[16:])), mibPort(r[20:])),
		Remote: netip.AddrPortFrom(mibAddr6(r[24:40], le.Uint32(r[40:])), mibPort(r[44:])),
	}
	row.pid = int(le.Uint32(r[52:]))
	row.sock.AgeMax = ageSince(int64(le.Uint64(r[56:])), now)
	markUnknowns(&row.sock)
	return nil
}

// markUnknowns flags what no Windows table has: queues, uid, inode. A
// listener's remote end becomes the zero AddrPort ("*").
func markUnknowns(s *Socket) {
	if s.State == StateListen {
		s.Remote = netip.AddrPort{}
	}
	s.QueuesUnknown, s.UIDUnknown, s.InodeUnknown = true, true, true
}

func mibState(v uint32) (State, error) {
	if v == 0 || v >= uint32(len(mibStates)) {
		return 0, fmt.Errorf("unknown MIB_TCP_STATE %d", v)
	}
	return mibStates[v], nil
}

// mibPort reads a port stored in network byte order in a DWORD's low bytes.
func mibPort(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

// mibAddr6 is the address with its scope id as zone, for link-local ones.
func mibAddr6(b []byte, scope uint32) netip.Addr {
	a := netip.AddrFrom16([16]byte(b))
	if scope != 0 && (a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast()) {
		a = a.WithZone(strconv.FormatUint(uint64(scope), 10))
	}
	return a
}

// ageSince turns a FILETIME (100 ns since 1601) into the time from then
// to now; 0 when the stamp is unset or later than now.
func ageSince(filetime int64, now time.Time) time.Duration {
	// Before 1970, or past what nanoseconds since 1970 can hold (year
	// 2262): not a creation time.
	if filetime <= filetimeUnixDiff || filetime-filetimeUnixDiff > math.MaxInt64/100 {
		return 0
	}
	created := time.Unix(0, (filetime-filetimeUnixDiff)*100)
	if !created.Before(now) {
		return 0
	}
	return now.Sub(created)
}
