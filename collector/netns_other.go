//go:build !linux

package collector

import "errors"

// resolveNetNS: network namespaces are Linux's.
func resolveNetNS(_ string, sel []string, _ *[]string) ([]netNamespace, map[uint64]string, error) {
	if len(sel) > 0 {
		return nil, nil, errors.New("--netns: network namespaces are Linux only")
	}
	return nil, nil, nil
}

// searchNetNS is resolveNetNS, done at once.
func searchNetNS(procRoot string, sel []string, warnings *[]string) *netnsSearch {
	s := &netnsSearch{done: make(chan struct{})}
	s.nss, s.names, s.err = resolveNetNS(procRoot, sel, warnings)
	close(s.done)
	return s
}

// CheckNetNS reports whether each of sel names a network namespace.
func CheckNetNS(sel []string) error {
	_, _, err := resolveNetNS("", sel, nil)
	return err
}
