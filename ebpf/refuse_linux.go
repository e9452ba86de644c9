package ebpf

import (
	"os"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

func refused(name string) bool {
	v := os.Getenv(RefuseEnv)
	return v != "" && slices.Contains(strings.Split(v, ","), name)
}

// spoil makes the verifier refuse p: it now starts by reading a register
// nothing wrote ("R9 !read_ok"). The first instruction's metadata (the
// program's symbol, its BTF function) moves to the new one.
func spoil(p *ebpf.ProgramSpec) {
	insns := slices.Clone(p.Instructions)
	bad := asm.Mov.Reg(asm.R0, asm.R9)
	bad.Metadata, insns[0].Metadata = insns[0].Metadata, asm.Metadata{}
	p.Instructions = append(asm.Instructions{bad}, insns...)
}
