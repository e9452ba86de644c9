package harness

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// dropper makes peers vanish: an nftables table of its own, with an output
// chain that drops the packets of chosen loopback connections both ways.
// It talks netlink through google/nftables rather than running nft, so
// the command needs no nft binary, only the kernel's nf_tables.
type dropper struct {
	mu    sync.Mutex
	conn  *nftables.Conn
	table *nftables.Table
	chain *nftables.Chain
}

var tableSeq atomic.Uint32

// newDropper creates the table and chain. It fails with a clear message
// when not privileged or when the kernel lacks nf_tables.
func newDropper() (*dropper, error) {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, nftError(err)
	}
	removeStaleTables(c)
	d := &dropper{conn: c}
	d.table = c.AddTable(&nftables.Table{
		Family: nftables.TableFamilyINet,
		Name:   fmt.Sprintf("%s%d_%d", tablePrefix, os.Getpid(), tableSeq.Add(1)),
	})
	d.chain = c.AddChain(&nftables.Chain{
		Name:     "output",
		Table:    d.table,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookOutput,
		Priority: nftables.ChainPriorityFilter,
	})
	if err := c.Flush(); err != nil {
		c.CloseLasting()
		return nil, nftError(err)
	}
	return d, nil
}

func nftError(err error) error {
	switch {
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		return fmt.Errorf("adding an nftables rule needs root (CAP_NET_ADMIN): %w", err)
	case errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOENT):
		return fmt.Errorf("nftables is not available in this kernel (CONFIG_NF_TABLES): %w", err)
	}
	return fmt.Errorf("nftables: %w", err)
}

// drop adds rules that drop both directions of each flow on loopback.
// Local traffic to any local address leaves through lo, so the output
// hook with oifname "lo" sees it all.
func (d *dropper) drop(flows []flow) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range flows {
		for _, ports := range [][2]uint16{{f.client, f.server}, {f.server, f.client}} {
			d.conn.AddRule(&nftables.Rule{Table: d.table, Chain: d.chain, Exprs: dropPorts(ports[0], ports[1])})
		}
	}
	if err := d.conn.Flush(); err != nil {
		return fmt.Errorf("adding drop rules: %w", nftError(err))
	}
	return nil
}

// dropPorts is `oifname "lo" meta l4proto tcp th sport S th dport D drop`.
func dropPorts(sport, dport uint16) []expr.Any {
	ifname := make([]byte, unix.IFNAMSIZ)
	copy(ifname, "lo")
	ports := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, sport), dport)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		// Source and destination port are the transport header's first four bytes.
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ports},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// clear removes every drop rule and keeps the table.
func (d *dropper) clear() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.conn.FlushChain(d.chain)
	if err := d.conn.Flush(); err != nil {
		return fmt.Errorf("removing drop rules: %w", nftError(err))
	}
	return nil
}

// close deletes the table with its rules.
func (d *dropper) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.conn.DelTable(d.table)
	err := d.conn.Flush()
	d.conn.CloseLasting()
	if err != nil {
		return fmt.Errorf("deleting nftables table %s: %w", d.table.Name, err)
	}
	return nil
}

// removeStaleTables deletes tables left by runs that were killed before
// they could clean up: their drop rules would break later connections
// that happen to reuse the same ports. Best effort.
func removeStaleTables(c *nftables.Conn) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return
	}
	stale := false
	for _, t := range tables {
		rest, ok := strings.CutPrefix(t.Name, tablePrefix)
		if !ok {
			continue
		}
		pid, _, _ := strings.Cut(rest, "_")
		n, err := strconv.Atoi(pid)
		if err != nil || n <= 0 {
			continue
		}
		if err := unix.Kill(n, 0); errors.Is(err, unix.ESRCH) {
			c.DelTable(t)
			stale = true
		}
	}
	if stale {
		c.Flush()
	}
}
