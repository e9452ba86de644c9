package report

import (
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/clipperhouse/displaywidth"
)

// textWidth is the width of s in terminal columns, as tablewriter v1.1.5's
// twwidth.Width measures a cell: rune by rune with displaywidth, East Asian
// ambiguous runes wide where twwidth's look at the environment says so.
// twwidth itself is not linked: its init compiles a regexp and allocates a
// 650 KB cache, a tenth of the start of a short listing.
// TestTextWidthMatchesTwwidth holds the two together. Unlike Width, it
// neither strips ANSI sequences nor widens tabs: the cells it measures
// have been through Printable, which escapes both.
func textWidth(s string) int { return widthOptions().width(s) }

// widthRules are the settings textWidth measures with.
type widthRules struct {
	runes         displaywidth.Options
	narrowBorders bool // box-drawing runes one column even when East Asian
}

func (o widthRules) width(s string) int {
	n := 0
	for _, r := range s {
		if o.narrowBorders && r >= 0x2500 && r <= 0x257f { // box drawing
			n++
			continue
		}
		n += o.runes.Rune(r)
	}
	return n
}

// widthOptions is what twwidth's init makes of the environment.
var widthOptions = sync.OnceValue(func() widthRules {
	ea := eastAsian()
	return widthRules{runes: displaywidth.Options{EastAsianWidth: ea}, narrowBorders: ea && modernTerminal()}
})

// eastAsian is twwidth's EastAsianDetect: RUNEWIDTH_EASTASIAN if set,
// else narrow in a modern terminal, else wide in a CJK locale.
func eastAsian() bool {
	switch strings.ToLower(os.Getenv("RUNEWIDTH_EASTASIAN")) {
	case "0", "off", "false", "no":
		return false
	case "1", "on", "true", "yes":
		return true
	}
	if modernTerminal() {
		return false
	}
	locale := ""
	for _, v := range []string{"LC_ALL", "LC_CTYPE", "LANG"} {
		if locale = os.Getenv(v); locale != "" {
			break
		}
	}
	if locale == "" || locale == "C" || locale == "POSIX" {
		return false
	}
	locale, _, _ = strings.Cut(locale, ".")
	locale, _, _ = strings.Cut(locale, "@")
	locale = strings.ToLower(locale)
	for _, p := range []string{"zh", "ja", "ko", "chi", "zho", "jpn", "kor", "chinese", "japanese", "korean"} {
		if strings.HasPrefix(locale, p) {
			return true
		}
	}
	parts := strings.Split(locale, "_")
	return slices.ContainsFunc(parts[1:], func(r string) bool {
		return slices.Contains([]string{"cn", "tw", "hk", "mo", "jp", "kr", "kp", "sg"}, r)
	})
}

// modernTerminals are the TERM_PROGRAM and TERM values twwidth takes for
// terminals that draw ambiguous runes narrow.
var modernTerminals = []string{
	"vscode", "visual studio code", "iterm.app", "iterm2", "windows terminal", "windowsterminal",
	"alacritty", "kitty", "hyper", "tabby", "terminus", "fluentterminal", "warp", "ghostty", "rio",
	"jetbrains-jediterm", "xterm-kitty", "xterm-ghostty", "wezterm",
}

// modernTerminal is twwidth's isModernEnvironment.
func modernTerminal() bool {
	if slices.Contains(modernTerminals, strings.ToLower(os.Getenv("TERM_PROGRAM"))) ||
		os.Getenv("TERM_PROGRAM_WSL") != "" {
		return true
	}
	term := strings.ToLower(os.Getenv("TERM"))
	if runtime.GOOS == "windows" && (os.Getenv("WT_PROFILE_ID") != "" || os.Getenv("ConEmuANSI") == "ON" ||
		strings.Contains(term, "xterm") || strings.Contains(term, "vt")) {
		return true
	}
	if os.Getenv("VTE_VERSION") != "" || os.Getenv("ALACRITTY_LOG") != "" {
		return true
	}
	return term != "" && (slices.Contains(modernTerminals, term) ||
		strings.Contains(term, "xterm") && !strings.Contains(term, "xterm-mono") ||
		strings.Contains(term, "screen") || strings.Contains(term, "tmux"))
}
