// Package collector reads TCP socket tables and says who holds each socket,
// for how long it has been in its state and why. It never prints.
//
// On Linux the sources are, best first: BPF iterators, which filter by
// state and map fds to sockets in the kernel and, with the tracer
// installed, give exact CLOSE_WAIT ages ("ebpf"); sock_diag netlink with
// the state filter applied in the kernel ("netlink"); and /proc/net/tcp{,6}
// ("procfs"). For the last two, owners come from a parallel scan of
// /proc/PID/fd.
package collector
