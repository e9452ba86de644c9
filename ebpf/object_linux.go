//go:build linux

package ebpf

import (
	"crypto/sha256"
	"encoding/hex"
)

// ObjectSHA256 is the hex SHA-256 of the BPF object embedded in this
// binary, so a build can be matched to the object it loads.
func ObjectSHA256() string {
	sum := sha256.Sum256(_ClosewaitBytes)
	return hex.EncodeToString(sum[:])
}
