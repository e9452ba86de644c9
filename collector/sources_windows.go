//go:build windows

package collector

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// AgesKnown says whether a source of this OS knows how long a socket has
// been in CLOSE_WAIT (--older-than needs it).
const AgesKnown = false

// platformSources: the owner-module table first, for its creation times;
// gopsutil's owner-PID table when that fails.
func platformSources() []source {
	return []source{ipHelperSource{}, gopsutilSource{}}
}

// resolveOwners is never needed: both sources read owners with the table.
func resolveOwners(context.Context, string, []Socket, []uint64) (map[uint64][]Owner, []string, error) {
	return nil, nil, nil
}

var (
	iphlpapi                = windows.NewLazySystemDLL("iphlpapi.dll")
	procGetExtendedTcpTable = iphlpapi.NewProc("GetExtendedTcpTable")
)

const tcpTableOwnerModuleAll = 8 // TCP_TABLE_OWNER_MODULE_ALL

type ipHelperSource struct{}

func (ipHelperSource) name() string { return SourceIPHelper }

// dump makes one table call per address family, whatever q asks, and
// filters here: the listeners are needed to tell inbound from pooled.
func (ipHelperSource) dump(ctx context.Context, q query) (dumpResult, error) {
	var res dumpResult
	var pids []int
	// Wine builds the table from /proc/net/tcp, which can show a socket
	// twice when the kernel's table changes during the read.
	type tuple struct{ local, remote netip.AddrPort }
	seen := map[tuple]bool{}
	if q.countAll {
		res.counts = &[2]StateCounts{{}, {}}
	}
	for fi, fam := range []Family{FamilyIPv4, FamilyIPv6} {
		af := uint32(windows.AF_INET)
		if fam == FamilyIPv6 {
			af = windows.AF_INET6
		}
		b, err := extendedTCPTable(af)
		if err != nil {
			return dumpResult{}, err
		}
		rows, err := decodeMIBTCPTable(b, fam, time.Now())
		if err != nil {
			return dumpResult{}, err
		}
		for i := range rows {
			s := &rows[i].sock
			if k := (tuple{s.Local, s.Remote}); s.State != StateListen {
				if seen[k] {
					continue
				}
				seen[k] = true
			}
			if res.counts != nil {
				res.counts[fi][s.State]++
			}
			if s.State == StateListen {
				res.listeners = append(res.listeners, listener{local: s.Local, ownersKnown: true})
			}
			if !q.states.Has(s.State) || !q.filter.matchSocket(s) {
				continue
			}
			// PID 0 is the idle process (and every PID under Wine): no owner.
			if pid := rows[i].pid; q.owners && pid != 0 {
				s.Owners = []Owner{{PID: pid, FD: -1}}
				pids = append(pids, pid)
			}
			res.sockets = append(res.sockets, *s)
		}
		if err := ctx.Err(); err != nil {
			return dumpResult{}, err
		}
	}
	markInbound(res.sockets, res.listeners, q.procRoot)
	nameOwners(ctx, res.sockets, pids)
	res.ownersDone = true
	return res, nil
}

// extendedTCPTable returns the owner-module table of one address family,
// growing the buffer while Windows answers ERROR_INSUFFICIENT_BUFFER (the
// table can grow between the size query and the read).
func extendedTCPTable(af uint32) ([]byte, error) {
	if err := procGetExtendedTcpTable.Find(); err != nil {
		return nil, fmt.Errorf("GetExtendedTcpTable: %w", ErrUnsupported)
	}
	size := uint32(16 << 10)
	for tries := 0; tries < 8; tries++ {
		buf := make([]uint64, (size+7)/8) // 8-byte aligned for the rows
		r, _, _ := procGetExtendedTcpTable.Call(
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)),
			0, uintptr(af), tcpTableOwnerModuleAll, 0)
		switch err := windows.Errno(r); {
		case r == 0:
			return unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), len(buf)*8), nil
		case errors.Is(err, windows.ERROR_INSUFFICIENT_BUFFER):
			size += size / 4 // room for what appears before the next call
		default:
			return nil, fmt.Errorf("GetExtendedTcpTable: %w", err)
		}
	}
	return nil, errors.New("GetExtendedTcpTable: the table kept growing")
}
