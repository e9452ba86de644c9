package collector

// AgesKnown says whether a source of this OS knows how long a socket has
// been in CLOSE_WAIT (--older-than needs it).
const AgesKnown = true

// platformSources lists the Linux sources, best first.
func platformSources() []source {
	return []source{ebpfSource{}, netlinkSource{}, procfsSource{}}
}
