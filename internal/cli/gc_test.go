package cli

import "testing"

func TestGCStep(t *testing.T) {
	tests := []struct {
		name    string
		percent int
		cycles  uint64
		want    int
	}{
		{"rare stays low", gcLow, 1, gcLow},
		{"none at the floor", gcLow, 0, gcLow},
		{"many: the default", gcLow, 3, 100},
		{"none halve", 80, 0, 40},
		{"some keep", 40, 2, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := gcStep(tt.percent, tt.cycles); got != tt.want {
				t.Errorf("gcStep(%d, %d) = %d, want %d", tt.percent, tt.cycles, got, tt.want)
			}
		})
	}
}
