package collector

// FDUsage is a process's open file descriptors against its limit: a leak
// of one fd per CLOSE_WAIT socket ends at "too many open files".
type FDUsage struct {
	Open int
	// Limit is the soft RLIMIT_NOFILE, the one open(2) and accept(2) hit;
	// 0 when unlimited or unknown.
	Limit int
}
