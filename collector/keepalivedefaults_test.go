package collector

import (
	"errors"
	"testing"
)

func TestKeepaliveDefaultsNote(t *testing.T) {
	none := func(string) (uint32, error) { return 0, errors.New("not found") }
	want := "Windows keepalive defaults: KeepAliveTime 2h0m0s (default), KeepAliveInterval 1s (default); " +
		"they apply only to sockets with keepalive on, and a socket's own SIO_KEEPALIVE_VALS cannot be read " +
		"from outside its process: the application must turn keepalive on and set its own timers"
	if got := keepaliveDefaultsNote(none); got != want {
		t.Errorf("unset registry:\n got %s\nwant %s", got, want)
	}
	set := func(name string) (uint32, error) {
		if name == "KeepAliveTime" {
			return 300000, nil
		}
		return 0, errors.New("not found")
	}
	if got, prefix := keepaliveDefaultsNote(set), "Windows keepalive defaults: KeepAliveTime 5m0s (registry), KeepAliveInterval 1s (default);"; got[:len(prefix)] != prefix {
		t.Errorf("KeepAliveTime 300000 ms: %s", got)
	}
	if KeepaliveDefaultsNote() != "" {
		t.Error("a note off Windows")
	}
}
