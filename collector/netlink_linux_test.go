package collector

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestRetryDump: a dump the kernel marks interrupted (NLM_F_DUMP_INTR,
// which parseInetDiag turns into errDumpInterrupted) is tried again, up to
// dumpAttempts times; then the error says how many tries failed. Other
// errors and cancellation end it at once.
func TestRetryDump(t *testing.T) {
	other := errors.New("netlink: permission denied")
	tests := []struct {
		name      string
		fails     []error // what each try returns; nil after the list
		wantTries int
		wantErr   string
	}{
		{"clean", nil, 1, ""},
		{"interrupted twice", []error{errDumpInterrupted, errDumpInterrupted}, 3, ""},
		{"always interrupted", []error{errDumpInterrupted, errDumpInterrupted, errDumpInterrupted, errDumpInterrupted, errDumpInterrupted}, dumpAttempts, "dump interrupted (4 attempts)"},
		{"other error", []error{other}, 1, "permission denied"},
		{"interrupted, then other", []error{errDumpInterrupted, other}, 2, "permission denied (2 attempts)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tries := 0
			err := retryDump(context.Background(), func() error {
				tries++
				if tries <= len(tt.fails) {
					return tt.fails[tries-1]
				}
				return nil
			})
			if tries != tt.wantTries {
				t.Errorf("%d tries, want %d", tries, tt.wantTries)
			}
			if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	tries := 0
	err := retryDump(ctx, func() error { tries++; cancel(); return errDumpInterrupted })
	if tries != 1 || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %d tries, error %v; want 1 and context.Canceled", tries, err)
	}
}
