package check

import (
	"errors"
	"strings"
	"testing"
)

func TestReadStateBad(t *testing.T) {
	tests := []struct {
		name, data string
		want       error
	}{
		{"empty", "", ErrCorruptState},
		{"truncated", `{"schema":"closewait/check-state/v1","host":"web-1","ti`, ErrCorruptState},
		{"not json", "root:x:0:0:root:/root:/bin/bash\n", ErrCorruptState},
		{"array", `[1,2,3]`, ErrCorruptState},
		{"bad time", `{"schema":"closewait/check-state/v1","time":"yesterday"}`, ErrCorruptState},
		{"no time", `{"schema":"closewait/check-state/v1","host":"web-1"}`, ErrCorruptState},
		{"bad address", `{"schema":"closewait/check-state/v1","time":"2026-03-14T09:00:00Z","sockets":[{"local":"nope","first_seen":"2026-03-14T09:00:00Z"}]}`, ErrCorruptState},
		{"other program", `{"name":"something else"}`, ErrForeignState},
		{"newer schema", `{"schema":"closewait/check-state/v2","time":"2026-03-14T09:00:00Z"}`, ErrForeignState},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadState(strings.NewReader(tt.data))
			if !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
		})
	}
}
