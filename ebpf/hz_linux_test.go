package ebpf

import (
	"strings"
	"testing"
)

func TestConfigHZ(t *testing.T) {
	for _, tt := range []struct {
		config string
		want   uint32
	}{
		{"# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n", 250},
		{"CONFIG_HZ=1000", 1000},
		{"CONFIG_HZ_1000=y\n", 0},
		{"CONFIG_HZ=fast\n", 0},
		{"", 0},
	} {
		if got := configHZ(strings.NewReader(tt.config)); got != tt.want {
			t.Errorf("configHZ(%q) = %d, want %d", tt.config, got, tt.want)
		}
	}
}

func TestHZFromJiffies(t *testing.T) {
	const base = 1 << 32
	for _, tt := range []struct {
		name    string
		jiffies uint64
		uptime  float64
		want    uint32
	}{
		// Read on this machine: jiffies 4295566520 at 2697.12 s of uptime.
		{"250 Hz, long up", 4295566520, 2697.12, 250},
		{"1000 Hz, a minute up", base - 240*1000 + 15, 60.3, 1000},
		{"100 Hz, an hour up", base + 3300*100, 3600.5, 100},
		{"300 Hz, a day up", base + (86400-300)*300, 86399.2, 300},
		{"near 300 s every rate fits", base + 250, 301, 0},
		{"no counter", 0, 100, 0},
		{"no rate fits", base + 7*(1000-300), 1000, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := hzFromJiffies(tt.jiffies, tt.uptime); got != tt.want {
				t.Errorf("hzFromJiffies(%d, %v) = %d, want %d", tt.jiffies, tt.uptime, got, tt.want)
			}
		})
	}
}

func TestTimerListJiffies(t *testing.T) {
	b := []byte("Timer List Version: v0.9\n  .idle_jiffies   : 4295566474\njiffies: 4295566520\n")
	if got := timerListJiffies(b); got != 4295566520 {
		t.Errorf("got %d, want 4295566520", got)
	}
	if got := timerListJiffies([]byte("nothing\n")); got != 0 {
		t.Errorf("got %d without the line", got)
	}
}
