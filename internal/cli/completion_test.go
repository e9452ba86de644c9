package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/closewait/closewait/internal/leaktest"
)

// generated runs closewait with args and returns its stdout.
func generated(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr, code := runArgs(t, args...)
	if code != 0 || stderr != "" {
		t.Fatalf("closewait %s: exit %d, stderr %q", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

// TestGeneratedCoverEveryFlag checks that the man page and the three
// completion scripts name every command, flag and positional word.
func TestGeneratedCoverEveryFlag(t *testing.T) {
	specs, err := commandSpecs()
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"man":  generated(t, "help", "--man"),
		"bash": generated(t, "completion", "bash"),
		"zsh":  generated(t, "completion", "zsh"),
		"fish": generated(t, "completion", "fish"),
	}
	for _, s := range specs {
		for out, text := range outputs {
			want := []string{s.name}
			want = append(want, s.fs.args...)
			for _, f := range s.flags() {
				long, short := "--"+f.Name, "-"+f.Shorthand
				switch out {
				case "man":
					long, short = roffText(long), roffText(short)
				case "fish":
					long, short = "-l "+f.Name, "-s "+f.Shorthand
				}
				want = append(want, long)
				if f.Shorthand != "" {
					want = append(want, short)
				}
				want = append(want, flagValues(f)...)
			}
			// Each command's part of the output: after its name.
			part := text
			if i := strings.Index(text, sectionMark(out, s.name)); i >= 0 {
				part = text[i:]
			} else {
				t.Errorf("%s: no section for %s (%q)", out, s.name, sectionMark(out, s.name))
			}
			for _, w := range want {
				if !strings.Contains(part, w) {
					t.Errorf("%s: %s lacks %q", out, s.name, w)
				}
			}
		}
	}
}

// sectionMark is where a command's part of a generated file starts.
func sectionMark(out, name string) string {
	switch out {
	case "man":
		return ".SH \"CLOSEWAIT " + strings.ToUpper(name)
	case "bash":
		if name == "list" {
			return `    list|"")`
		}
		return "    " + name + ")"
	case "zsh":
		return "_closewait_" + name + "()"
	default:
		return "__fish_seen_subcommand_from " + name
	}
}

// TestManHasHelpText checks that each command's --help paragraphs are in
// the man page word for word (after roff escaping).
func TestManHasHelpText(t *testing.T) {
	man := generated(t, "help", "--man")
	for _, c := range commands() {
		help := generated(t, c.name, "--help")
		about, _, _ := strings.Cut(help, "\n\nUsage:\n")
		for _, p := range strings.Split(about, "\n\n") {
			if !strings.Contains(man, roffText(p)) {
				t.Errorf("man page lacks %s's paragraph %q", c.name, p)
			}
		}
	}
}

// TestManRenders renders the man page with groff and with man, both of
// which must accept it without warnings.
func TestManRenders(t *testing.T) {
	page := filepath.Join(t.TempDir(), "closewait.1")
	if err := os.WriteFile(page, []byte(generated(t, "help", "--man")), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, argv := range [][]string{
		{"groff", "-man", "-Tutf8", "-ww", "-z", page},
		{"man", "--warnings", "-l", page},
	} {
		if _, err := exec.LookPath(argv[0]); err != nil {
			leaktest.Missing(t, argv[0]+" not installed (make deps)")
			continue
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), "MANPAGER=cat", "PAGER=cat", "MANWIDTH=80")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || stderr.Len() > 0 {
			t.Errorf("%s: %v, stderr:\n%s", strings.Join(argv, " "), err, stderr.String())
		}
		if argv[0] == "man" && !strings.Contains(string(out), "CLOSEWAIT TRACER") {
			t.Errorf("man -l output lacks the tracer section:\n%.500s", out)
		}
	}
}

// TestCompletionScriptsParse checks each script with its shell's syntax
// check, and that bash registers the completion.
func TestCompletionScriptsParse(t *testing.T) {
	dir := t.TempDir()
	for _, sh := range completionShells {
		t.Run(sh, func(t *testing.T) {
			if _, err := exec.LookPath(sh); err != nil {
				leaktest.Missing(t, sh+" not installed (make deps)")
			}
			script := filepath.Join(dir, sh)
			if err := os.WriteFile(script, []byte(generated(t, "completion", sh)), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(sh, "-n", script).CombinedOutput(); err != nil || len(out) > 0 {
				t.Errorf("%s -n: %v\n%s", sh, err, out)
			}
			if sh != "bash" {
				return
			}
			// Load it and complete "closewait tracer " and "closewait --source ".
			probe := `source "$1"; complete -p closewait
COMP_WORDS=(closewait tracer ""); COMP_CWORD=2; _closewait; echo "${COMPREPLY[*]}"
COMP_WORDS=(closewait --source ""); COMP_CWORD=2; _closewait; echo "${COMPREPLY[*]}"`
			out, err := exec.Command("bash", "-c", probe, "bash", script).CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, out)
			}
			for _, want := range []string{"complete -F _closewait closewait", "install status remove", "auto ebpf netlink procfs"} {
				if !strings.Contains(string(out), want) {
					t.Errorf("bash completion output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

func TestVersionFields(t *testing.T) {
	out := generated(t, "--version")
	for _, re := range []string{
		`(?m)^closewait \S+$`,
		`(?m)^commit: \S+`,
		`(?m)^go: go1\.\d+`,
		`(?m)^bpf object: (sha256:[0-9a-f]{64}|none \(no BPF on \w+\))$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("--version output does not match %s:\n%s", re, out)
		}
	}
}

func TestCompletionBadShell(t *testing.T) {
	assertUsageError(t, "completion", "completion")
	assertUsageError(t, "tcsh", "completion", "tcsh")
}
