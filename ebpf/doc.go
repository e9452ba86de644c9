// Package ebpf owns closewait's BPF programs (closewait.c), their generated
// bindings and the loaders, and nothing else: callers get decoded records
// and events, never cilium/ebpf types.
//
// The package is named ebpf after its folder, as Go expects; inside it,
// "ebpf." means github.com/cilium/ebpf, as in the generated bindings, and
// callers never import both.
//
// Three uses:
//
//   - Snapshot: [LoadIterators] loads two BPF iterators. iter/task_file
//     emits, for every fd that is a TCP socket in the requested states or
//     listening, a fixed binary record of the whole socket and its owner
//     (pid, fd, comm), and counts per namespace the sockets that fds hold
//     ([Iterators.Held]); iter/tcp, walked after it, emits the other
//     listeners and sockets in those states: those no fd it saw holds
//     (accept queues, orphans, kernel sockets, files in flight). Filtering
//     happens in the kernel.
//   - Tracer: [InstallTracer] attaches tp_btf/inet_sock_set_state, which
//     stamps each socket's entry into CLOSE_WAIT in BPF_MAP_TYPE_SK_STORAGE,
//     and pins the link and the map under a bpffs directory; the iterators
//     then read exact ages from the pinned map. No daemon stays behind.
//   - Trace: [OpenTrace] streams transitions into and out of CLOSE_WAIT (or
//     every TCP transition) through a ring buffer. With tp_btf it also notes,
//     at accept(2), accept4(2) and socket(2) exit, which task and fd got each
//     new TCP socket ([Trace.NotedOwner]): the owner of a socket that closes
//     before an fd snapshot can see it.
//
// The objects are compiled for little-endian machines only (bpfel).
package ebpf

//go:generate go tool bpf2go -tags linux -target bpfel -type record -type event -cflags "-O2 -g -Wall -Werror -mcpu=v3" closewait closewait.c
