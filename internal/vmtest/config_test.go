package vmtest

import "testing"

func TestStatusScan(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  Status
	}{
		{"nothing", []string{"=== RUN   TestX\r\n", "PASS\r\n"}, Status{}},
		{"pass", []string{KernelLine("6.1.0-57-arm64", "#1 SMP Debian", "aarch64") + "\r\n", "VMTEST-RESULT pass\r\n"},
			Status{Kernel: "6.1.0-57-arm64 #1 SMP Debian aarch64", Result: Pass}},
		{"fail", []string{"VMTEST-RESULT fail\n"}, Status{Result: Fail}},
		{"after a boot loader's unfinished line", []string{"Probing EDD... okVMTEST-KERNEL 6.1.0 #1 x86_64\r\n"},
			Status{Kernel: "6.1.0 #1 x86_64"}},
		{"garbled result is a failure", []string{"VMTEST-RESULT pa[    3.5] reboot\n"}, Status{Result: Fail}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Status
			for _, l := range tt.lines {
				s.Scan(l)
			}
			if s != tt.want {
				t.Errorf("got %+v, want %+v", s, tt.want)
			}
		})
	}
}
