package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// writeMan writes closewait(1) in roff from the texts --help prints: the
// top-level help, then each command's about text, usage, flags and
// examples, so the page and the help cannot drift apart.
func writeMan(w io.Writer) error {
	specs, err := commandSpecs()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, ".TH CLOSEWAIT 1 \"\" %s \"User Commands\"\n", roffQuote("closewait "+version))
	fmt.Fprint(w, ".SH NAME\nclosewait \\- find TCP sockets stuck in CLOSE_WAIT, their owners, ages and causes\n")
	fmt.Fprint(w, ".SH SYNOPSIS\n.B closewait\n[\\fIcommand\\fR] [\\fIflags\\fR]\n")
	fmt.Fprint(w, ".SH DESCRIPTION\n")
	roffParagraphs(w, topAbout)
	roffParagraphs(w, topMore)
	fmt.Fprint(w, ".SH COMMANDS\n")
	for _, s := range specs {
		fmt.Fprintf(w, ".TP\n.B %s\n%s\n", s.name, roffText(s.summary))
	}
	for _, s := range specs {
		fmt.Fprintf(w, ".SH %s\n", roffQuote("CLOSEWAIT "+strings.ToUpper(s.name)))
		fmt.Fprintf(w, ".nf\n%s\n.fi\n", roffText(s.fs.usage))
		roffParagraphs(w, s.fs.about)
		fmt.Fprint(w, ".SS Flags\n")
		for _, f := range s.flags() {
			fmt.Fprintf(w, ".TP\n%s\n%s\n", roffFlag(f), roffText(flagDoc(f)))
		}
		if s.fs.examples != "" {
			fmt.Fprintf(w, ".SS Examples\n.nf\n%s\n.fi\n", roffText(strings.TrimRight(s.fs.examples, "\n")))
		}
	}
	fmt.Fprint(w, ".SH SEE ALSO\n.BR ss (8),\n.BR lsof (8),\n.BR systemd.service (5)\n")
	return nil
}

// roffFlag renders "-h, --help" or "--source string" in bold and italics.
func roffFlag(f *pflag.Flag) string {
	s := `\fB\-\-` + roffText(f.Name) + `\fR`
	if f.Shorthand != "" {
		s = `\fB\-` + roffText(f.Shorthand) + `\fR, ` + s
	}
	if takesValue(f) {
		name, _ := pflag.UnquoteUsage(f)
		s += ` \fI` + roffText(name) + `\fR`
	}
	return s
}

// flagDoc is a flag's usage with its default, as pflag prints it.
func flagDoc(f *pflag.Flag) string {
	_, usage := pflag.UnquoteUsage(f)
	if takesValue(f) && f.DefValue != "" && f.DefValue != "[]" {
		usage += fmt.Sprintf(" (default %q)", f.DefValue)
	}
	return usage
}

// roffParagraphs writes text, whose paragraphs are split by blank lines,
// as filled roff paragraphs.
func roffParagraphs(w io.Writer, text string) {
	for _, p := range strings.Split(strings.TrimSpace(text), "\n\n") {
		fmt.Fprintf(w, ".PP\n%s\n", roffText(p))
	}
}

// roffText escapes text so roff prints it as is: backslashes and hyphens
// escaped, no line taken for a request.
func roffText(s string) string {
	s = strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			lines[i] = `\&` + l
		}
	}
	return strings.Join(lines, "\n")
}

// roffQuote makes s one quoted macro argument.
func roffQuote(s string) string {
	return `"` + strings.ReplaceAll(roffText(s), `"`, `""`) + `"`
}
