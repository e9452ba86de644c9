package check

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"testing"
)

// FuzzReadCheckState feeds state files, seeded with one a check run wrote
// on this machine. A file is either refused as corrupt or foreign, or
// holds what the run relies on, and writing it back reads back the same.
func FuzzReadState(f *testing.F) {
	real, err := os.ReadFile("testdata/checkstate.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(real)
	f.Add(bytes.Replace(real, []byte(`"count":2`), []byte(`"count":-1`), 1))
	f.Add(bytes.Replace(real, []byte("127.0.0.1:43671"), []byte("[::1]:0"), 1))
	f.Add(real[:len(real)/2])
	f.Add([]byte(`{"schema":"closewait/check-state/v1","time":"2026-12-03T07:59:15Z","sockets":[{"local":"1.2.3.4:5","first_seen":"9999-12-31T23:59:59+23:59"}]}`))
	f.Add([]byte("null"))
	f.Fuzz(func(t *testing.T, file []byte) {
		st, err := ReadState(bytes.NewReader(file))
		if err != nil {
			if !errors.Is(err, ErrCorruptState) && !errors.Is(err, ErrForeignState) {
				t.Fatalf("in-memory file: error %v neither corrupt nor foreign", err)
			}
			return
		}
		if st.Schema != StateSchema || st.Time.IsZero() || st.Count < 0 {
			t.Fatalf("accepted %+v", st)
		}
		for _, s := range st.Sockets {
			if _, err := netip.ParseAddrPort(s.Local); err != nil || s.FirstSeen.IsZero() {
				t.Fatalf("accepted socket %+v", s)
			}
		}
		var once, twice bytes.Buffer
		if err := st.Write(&once); err != nil {
			t.Fatalf("writing back %+v: %v", st, err)
		}
		again, err := ReadState(bytes.NewReader(once.Bytes()))
		if err != nil {
			t.Fatalf("reading back %s: %v", once.Bytes(), err)
		}
		if err := again.Write(&twice); err != nil || !bytes.Equal(once.Bytes(), twice.Bytes()) {
			t.Fatalf("round trip changed the file:\n%s\n%s (%v)", once.Bytes(), twice.Bytes(), err)
		}
	})
}
