package ebpf

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/closewait/closewait/internal/leaktest"
)

// TestProgramsLoad loads every program of the object under every setting
// of the load-time constants it reads: the verifier prunes the branches a
// setting turns off, so each setting is its own program to prove. It is
// the regression test for kernels whose verifier marks pointers reached by
// walking a struct untrusted (dump_task_file was refused on one 6.18 build).
func TestProgramsLoad(t *testing.T) {
	requireRootBPF(t)
	netns, err := ownNetNS()
	if err != nil {
		t.Fatal(err)
	}
	// The constants each program reads, with the values worth proving. The
	// iterators' other settings are in iter_cfg, so every walk they allow
	// is verified in each load.
	tracer := map[string][]any{
		"stamp_enter":  {uint8(0), uint8(1)},
		"emit_events":  {uint8(0), uint8(1), uint8(2)},
		"target_netns": {uint32(0), netns},
	}
	programs := map[string]map[string][]any{
		"dump_task_file": {
			"read_stamps":  {uint8(0), uint8(1), uint8(2)},
			"full_records": {uint8(0), uint8(1)},
			"config_hz":    {uint32(0), uint32(250)},
		},
		"dump_tcp": {
			"read_stamps": {uint8(0), uint8(1), uint8(2)},
			"config_hz":   {uint32(0), uint32(250)},
		},
		"on_set_state":    tracer,
		"on_set_state_tp": tracer,
		"on_accept4_exit": {"target_netns": {uint32(0), netns}},
		"on_accept_exit":  {"target_netns": {uint32(0), netns}},
		"on_socket_exit":  {"target_netns": {uint32(0), netns}},
	}
	spec, err := loadClosewait()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := slices.Sorted(maps.Keys(spec.Programs)), slices.Sorted(maps.Keys(programs)); !slices.Equal(got, want) {
		t.Fatalf("object has programs %v, the test knows %v", got, want)
	}
	for _, name := range slices.Sorted(maps.Keys(programs)) {
		for _, setting := range settings(programs[name]) {
			t.Run(name+"/"+label(setting), func(t *testing.T) {
				spec, err := loadClosewait()
				if err != nil {
					t.Fatal(err)
				}
				if err := setVars(spec, setting); err != nil {
					t.Fatal(err)
				}
				for other := range spec.Programs {
					if other != name {
						delete(spec.Programs, other)
					}
				}
				coll, err := ebpf.NewCollection(spec)
				if err != nil {
					t.Fatalf("%+v", loadError(name, err))
				}
				coll.Close()
			})
		}
	}
}

// requireRootBPF skips (fails in CI) without root or kernel BTF, the
// prerequisites of every program, whatever the iterators do.
func requireRootBPF(t *testing.T) {
	t.Helper()
	leaktest.RequireRoot(t)
	if err := preflight(); err != nil {
		leaktest.Missing(t, fmt.Sprintf("BPF cannot load: %v", err))
	}
}

// settings returns every combination of the values in vars.
func settings(vars map[string][]any) []map[string]any {
	out := []map[string]any{{}}
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		var next []map[string]any
		for _, s := range out {
			for _, v := range vars[name] {
				m := maps.Clone(s)
				m[name] = v
				next = append(next, m)
			}
		}
		out = next
	}
	return out
}

func label(setting map[string]any) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(setting)) {
		parts = append(parts, fmt.Sprintf("%s=%v", name, setting[name]))
	}
	return strings.Join(parts, ",")
}

// TestRefusedProgram makes the verifier refuse one program at a time and
// checks that only what needs it stops, and that the error names it.
func TestRefusedProgram(t *testing.T) {
	requireBPF(t)
	ln := leaktest.Listen(t, "tcp4")
	port := portOf(ln.Addr())
	leaktest.CloseWait(t, ln, 1)
	walk := func(t *testing.T, it *Iterators) (files, tcp int, filesErr, tcpErr error) {
		t.Helper()
		filesErr = it.Files(func(r *Record) {
			if r.Local.Port() == port && r.Flags&(RecListener|RecMPTCP) == 0 && r.State != stateListen {
				files++
			}
		})
		tcpErr = it.TCP(func(r *Record) {
			if r.Local.Port() == port && r.Flags&(RecListener|RecMPTCP) == 0 && r.State != stateListen {
				tcp++
			}
		})
		return
	}

	t.Run("dump_task_file", func(t *testing.T) {
		t.Setenv(RefuseEnv, "dump_task_file")
		it, err := LoadIterators(IterOptions{PinDir: t.TempDir()})
		if err != nil {
			t.Fatalf("%+v", err)
		}
		defer it.Close()
		files, tcp, filesErr, tcpErr := walk(t, it)
		if !strings.HasPrefix(fmt.Sprint(it.FilesErr()), "verifier refused dump_task_file: ") || filesErr == nil || files != 0 {
			t.Errorf("iter/task_file: error %v, walk %v, %d records; want refused", it.FilesErr(), filesErr, files)
		}
		if tcpErr != nil || tcp != 1 {
			t.Errorf("iter/tcp: %v, %d records; want the socket", tcpErr, tcp)
		}
	})
	t.Run("dump_tcp", func(t *testing.T) {
		t.Setenv(RefuseEnv, "dump_tcp")
		it, err := LoadIterators(IterOptions{PinDir: t.TempDir()})
		if err != nil {
			t.Fatalf("%+v", err)
		}
		defer it.Close()
		files, _, filesErr, tcpErr := walk(t, it)
		if filesErr != nil || files != 1 {
			t.Errorf("iter/task_file: %v, %d records; want the owner", filesErr, files)
		}
		if !strings.HasPrefix(fmt.Sprint(tcpErr), "verifier refused dump_tcp: ") {
			t.Errorf("iter/tcp: %v, want refused", tcpErr)
		}
	})
	t.Run("both", func(t *testing.T) {
		t.Setenv(RefuseEnv, "dump_task_file,dump_tcp")
		it, err := LoadIterators(IterOptions{PinDir: t.TempDir()})
		if err == nil {
			it.Close()
			t.Fatal("iterators loaded with both programs refused")
		}
		if msg := err.Error(); !strings.Contains(msg, "dump_task_file") || !strings.Contains(msg, "dump_tcp") {
			t.Errorf("error %q names not both programs", msg)
		}
	})
	t.Run("on_set_state", func(t *testing.T) {
		// The tracer falls back to the classic tracepoint.
		t.Setenv(RefuseEnv, "on_set_state")
		dir := testPinDir(t)
		st, err := InstallTracer(TracerOptions{PinDir: dir})
		if err != nil {
			t.Fatalf("%+v", err)
		}
		if st.Mode != ModeTracepoint {
			t.Errorf("tracer mode %q, want %q", st.Mode, ModeTracepoint)
		}
		tr, err := OpenTrace(TraceOptions{PinDir: dir})
		if err != nil {
			t.Fatalf("%+v", err)
		}
		defer tr.Close()
		if tr.Mode() != ModeTracepoint {
			t.Errorf("trace mode %q, want %q", tr.Mode(), ModeTracepoint)
		}
		// The iterators need no tracer program.
		it, err := LoadIterators(IterOptions{PinDir: dir})
		if err != nil {
			t.Fatalf("%+v", err)
		}
		defer it.Close()
		// iter/tcp leaves out what iter/task_file sent.
		if files, tcp, filesErr, tcpErr := walk(t, it); filesErr != nil || tcpErr != nil || files != 1 || tcp != 0 {
			t.Errorf("iterators beside a refused tracer: %v %v, %d and %d records", filesErr, tcpErr, files, tcp)
		}
	})
}

// setVars sets load-time constants by name, for the tests that try every
// combination.
func setVars(spec *ebpf.CollectionSpec, vars map[string]any) error {
	for name, v := range vars {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("object has no variable %s", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
	}
	return nil
}
