package ebpf

import (
	"os"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// RefuseEnv names the environment variable that makes the verifier refuse
// programs on purpose: a comma list of program names (dump_task_file,
// dump_tcp, on_set_state, ...). Tests use it to prove that one refusal
// turns off only what needs that program, in this process or in a
// closewait binary they run.
const RefuseEnv = "CLOSEWAIT_BPF_REFUSE"

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
