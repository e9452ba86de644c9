package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestPickKernel(t *testing.T) {
	names := []string{
		"linux-image-6.1.0-9-amd64",
		"linux-image-6.1.0-10-amd64",
		"linux-image-6.1.0-10-amd64-unsigned",
		"linux-image-6.1.0-10-amd64-dbg",
		"linux-image-6.1.0-11-cloud-amd64",
		"linux-image-6.1.0-11-rt-amd64-unsigned",
		"linux-image-6.1.0-12-arm64",
	}
	tests := []struct {
		names  []string
		arch   string
		want   string
		wantOK bool
	}{
		{names, "amd64", "linux-image-6.1.0-10-amd64-unsigned", true},
		{names[:2], "amd64", "linux-image-6.1.0-10-amd64", true}, // 10 > 9 as numbers
		{names, "arm64", "linux-image-6.1.0-12-arm64", true},
		{names[3:6], "amd64", "", false},
		{nil, "amd64", "", false},
	}
	for _, tt := range tests {
		got, ok := pickKernel(tt.names, "6.1.0", tt.arch)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("pickKernel(%q, %s) = %q, %v; want %q, %v", tt.names, tt.arch, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestCachedDebs(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{
		"linux-image-6.1.0-57-arm64-unsigned_6.1.192-3_arm64.deb",
		"linux-image-6.1.0-57-amd64-unsigned_6.1.192-3_amd64.deb",
		"linux-image-6.1.0-57-amd64-unsigned_6.1.192-10_amd64.deb",
		"notes.txt",
	} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := cachedDebs(dir, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["linux-image-6.1.0-57-amd64-unsigned"] != "6.1.192-10" {
		t.Errorf("got %v, want the one amd64 package at 6.1.192-10", got)
	}
}

func TestModuleName(t *testing.T) {
	for file, want := range map[string]string{
		"tcp_diag.ko":     "tcp_diag",
		"inet_diag.ko.xz": "inet_diag",
		"nf-nat.ko.zst":   "nf_nat",
		"modules.dep":     "",
	} {
		if got, _ := moduleName(file); got != want {
			t.Errorf("moduleName(%q) = %q, want %q", file, got, want)
		}
	}
}

func TestLddPaths(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffd)\n" +
		"\tlibbpf.so.1 => /lib/x86_64-linux-gnu/libbpf.so.1 (0x00007f6a)\n" +
		"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f69)\n" +
		"\t/lib64/ld-linux-x86-64.so.2 (0x00007f6b)\n"
	want := []string{"/lib/x86_64-linux-gnu/libbpf.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if got := lddPaths(out); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
