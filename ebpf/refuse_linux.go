package ebpf

import (
	"os"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

func refused(name string) bool {
	v := os.Getenv(RefuseEnv)
	return v != "" && slices.Contains(strings.Split(v, ","), name)
}

// spoil makes the verifier refuse p: it now starts by reading a register
// nothing wrote ("R9 !read_ok"). The first instruction's symbol and BTF
// function move to the new one, which shares its line; its CO-RE
// relocation stays.
func spoil(p *ebpf.ProgramSpec) {
	insns := slices.Clone(p.Instructions)
	bad := asm.Mov.Reg(asm.R0, asm.R9).WithSymbol(insns[0].Symbol()).WithSource(insns[0].Source())
	bad = btf.WithFuncMetadata(bad, btf.FuncMetadata(&insns[0]))
	insns[0] = btf.WithFuncMetadata(insns[0].WithSymbol(""), nil)
	p.Instructions = append(asm.Instructions{bad}, insns...)
}
