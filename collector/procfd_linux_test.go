package collector

import (
	"fmt"
	"os"
	"testing"
)

// FuzzParseNofileLimit feeds /proc/PID/limits text, seeded with this
// process's. An accepted limit is never negative, and a file printed as
// the kernel prints it gives back its soft limit.
func FuzzParseNofileLimit(f *testing.F) {
	real, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(real, int64(1024))
	f.Add([]byte("Max open files            unlimited            unlimited            files\n"), int64(0))
	f.Add([]byte("Max open files -1 -1 files\n"), int64(1<<20))
	f.Fuzz(func(t *testing.T, text []byte, soft int64) {
		if n, err := parseNofileLimit(text); err == nil && n < 0 {
			t.Fatalf("parseNofileLimit(%q) = %d", text, n)
		}
		if soft < 0 {
			return
		}
		limits := fmt.Sprintf("Limit                     Soft Limit           Hard Limit           Units     \n"+
			"Max processes             63724                63724                processes \n"+
			"Max open files            %-20d 1048576              files     \n", soft)
		if n, err := parseNofileLimit([]byte(limits)); err != nil || int64(n) != soft {
			t.Fatalf("parseNofileLimit(%q) = %d, %v; want %d", limits, n, err, soft)
		}
	})
}
