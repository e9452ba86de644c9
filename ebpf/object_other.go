//go:build !linux

package ebpf

// ObjectSHA256 is empty where no BPF object is embedded (not Linux).
func ObjectSHA256() string { return "" }
