package main

import (
	"strings"
	"testing"
	"time"
)

func TestSoakGrowth(t *testing.T) {
	series := func(rss func(minute int) int64, fds func(minute int) int) []soakSample {
		var out []soakSample
		for m := 1; m <= 30; m++ {
			s := soakSample{at: time.Duration(m) * time.Minute, goroutines: 10}
			s.serve = procStats{rss: rss(m), fds: fds(m), threads: 9}
			for i := range s.watch {
				s.watch[i] = procStats{rss: 20000, fds: 10, threads: 9}
			}
			out = append(out, s)
		}
		return out
	}
	flatFDs := func(int) int { return 11 }
	// A collector's sawtooth: low at minute 5, back to its warm-up top later.
	saw := func(m int) int64 { return 24000 + int64(m%4)*2000 }
	if fails := soakGrowth(series(saw, flatFDs), 5*time.Minute); len(fails) != 0 {
		t.Errorf("sawtooth judged as growth: %v", fails)
	}
	leak := func(m int) int64 { return 24000 + int64(m)*300 }
	fails := soakGrowth(series(leak, flatFDs), 5*time.Minute)
	if len(fails) == 0 || !strings.Contains(fails[len(fails)-1], "serve RSS") {
		t.Errorf("RSS growing 300 KiB a minute passed: %v", fails)
	}
	fdLeak := func(m int) int { return 11 + m/3 }
	fails = soakGrowth(series(saw, fdLeak), 5*time.Minute)
	if len(fails) == 0 || !strings.Contains(fails[len(fails)-1], "serve fds") {
		t.Errorf("an fd every 3 minutes passed: %v", fails)
	}
	if fails := soakGrowth(series(saw, flatFDs)[:4], 5*time.Minute); len(fails) != 1 || !strings.Contains(fails[0], "too short") {
		t.Errorf("4 minutes judged: %v", fails)
	}
}
