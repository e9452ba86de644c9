//go:build !linux

package collector

// readProcesses reads nothing here: the sources of other OSes give pids
// and names only.
func readProcesses(string, []Socket) {}
