package cli

import (
	"slices"
	"testing"
)

func TestPortRanges(t *testing.T) {
	var ports []uint16
	v := portsValue{&ports}
	for _, s := range []string{"443,80", "8000-8003", "81", "8002-8004"} {
		if err := v.Set(s); err != nil {
			t.Fatal(err)
		}
	}
	if want := []uint16{80, 81, 443, 8000, 8001, 8002, 8003, 8004}; !slices.Equal(ports, want) {
		t.Errorf("ports %v, want %v", ports, want)
	}
	if got := v.String(); got != "80-81,443,8000-8004" {
		t.Errorf("String %q", got)
	}
}
