// Package vmtest runs the project's Go tests inside other kernels under qemu,
// so that the BPF programs meet other verifiers and other architectures than
// the host's. It holds what both sides share: the guest's configuration and
// the lines the guest prints for the host.
//
// The host side (internal/vmtest/run, `make test-kernels`) fetches a Debian
// kernel package with apt-get download and caches it, cross-compiles the
// test binaries and a static Go init (internal/vmtest/init), packs them with
// the kernel modules the tests need into a newc initramfs, boots qemu in TCG
// mode with the serial console on its stdout, and passes only when the guest
// prints "VMTEST-RESULT pass".
//
// The guest has no root file system and no shell: the init mounts the kernel
// file systems, brings up loopback, loads the modules, runs each test binary
// in a directory that holds a copy of its package's testdata, and powers the
// machine off. It also answers to the name sleep, because the tests' fd
// holders run sleep(1).
package vmtest
