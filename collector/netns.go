package collector

import "strconv"

// netNamespace is one network namespace to list.
type netNamespace struct {
	inode uint64
	name  string // "host", its /run/netns name, or ""
	// path opens it: /proc/PID/ns/net of a process in it, or its bind
	// mount under /run/netns.
	path string
	own  bool // the caller's: listed without entering it
}

// netnsSearch is a search for the namespaces to list (searchNetNS).
type netnsSearch struct {
	// every: the selection is every namespace, and the search may still
	// run; wait for its list.
	every bool
	done  chan struct{}
	nss   []netNamespace
	names map[uint64]string
	err   error
}

// wait returns what resolveNetNS returned.
func (s *netnsSearch) wait() ([]netNamespace, map[uint64]string, error) {
	<-s.done
	return s.nss, s.names, s.err
}

// label names ns for a message: its name, else its inode.
func (ns netNamespace) label() string {
	if ns.name != "" {
		return ns.name
	}
	return strconv.FormatUint(ns.inode, 10)
}
