package cli

import "testing"

func TestGCStep(t *testing.T) {
	tests := []struct {
		name         string
		percent      int
		prev, cycles uint64
		want         int
	}{
		{"rare stays low", gcLow, 0, 1, gcLow},
		{"none at the floor", gcLow, 1, 0, gcLow},
		{"one burst stays low", gcLow, 0, 5, gcLow},
		{"many twice: the default", gcLow, 3, 3, 100},
		{"none halve", 80, 3, 0, 40},
		{"some keep", 40, 3, 2, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := gcStep(tt.percent, tt.prev, tt.cycles); got != tt.want {
				t.Errorf("gcStep(%d, %d, %d) = %d, want %d", tt.percent, tt.prev, tt.cycles, got, tt.want)
			}
		})
	}
}
