package collector

// platformSources lists the Linux sources, best first.
func platformSources() []source {
	return []source{ebpfSource{}, netlinkSource{}, procfsSource{}}
}
