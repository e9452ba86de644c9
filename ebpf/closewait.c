//go:build ignore

/* closewait's BPF programs.
 *
 * Snapshot (nothing attached to the kernel; loaded by a listing, or pinned
 * beside the tracer by "closewait tracer install" for listings to share;
 * their settings are in iter_cfg):
 *   dump_task_file  iter/task_file  one full record per fd holding a TCP
 *                                   socket in the requested states (or a
 *                                   listener): the owner and everything
 *                                   the socket holds; an owner record per
 *                                   MPTCP fd; and a count, per network
 *                                   namespace and family, of the hashed
 *                                   TCP sockets that fds hold
 *   dump_tcp        iter/tcp        one full record per socket in the
 *                                   requested states, and every listener,
 *                                   those with a file marked; without
 *                                   emit_filed, not those dump_task_file
 *                                   marked sent (with mark_sent); with
 *                                   count_states, a count of
 *                                   every socket by state
 *   User space walks dump_tcp, after dump_task_file, only in namespaces
 *   where the kernel's count of hashed TCP sockets (sockstat) exceeds
 *   what fds hold (accept queues, orphans, kernel and MPTCP subflow
 *   sockets, files in flight or held by tasks of another pid namespace),
 *   or whose cookies it needs; of a socket both send, it keeps
 *   dump_task_file's record. With listen_only, dump_tcp stops where the
 *   listening hash ends: for when the sockets unaccounted for may all be
 *   listeners.
 *
 * Pointer trust: some kernels mark a pointer reached by walking a struct
 * (sock->sk, file->private_data) untrusted, and refuse it to helpers. Such
 * pointers are only read here, field by field (or copied whole with
 * bpf_probe_read_kernel, which takes any address); other helpers get only
 * what the verifier trusts everywhere: a program's context and what
 * helpers return.
 * Tracer (pinned by "closewait tracer install", or loaded by "closewait trace"):
 *   on_set_state     tp_btf/inet_sock_set_state           stamps CLOSE_WAIT entry
 *                                                          in sk_storage
 *   on_set_state_tp  tracepoint/sock/inet_sock_set_state  fallback without BTF:
 *                                                          stamps in a hash map
 * Owner notes ("closewait trace" with tp_btf only):
 *   on_accept4_exit, on_accept_exit, on_socket_exit  tracepoint/syscalls/sys_exit_*
 *                                   remember which task and fd got each new
 *                                   TCP socket, by inode
 *
 * Records and events are fixed-size little-endian structs; the Go decoder in
 * record.go mirrors them byte for byte.
 */

#include "kernel.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Record flags. */
#define REC_KEEPOPEN (1 << 0) /* SO_KEEPALIVE is set */
#define REC_STAMP (1 << 1)    /* cw_age_ns comes from the tracer's stamp */
#define REC_OWNED (1 << 2)    /* an owner record: tgid, fd and comm are set */
#define REC_LISTENER (1 << 3) /* a listener, emitted for inbound marking */
#define REC_AGES (1 << 4)     /* last_*_recv_ms and keepalive times are set */
#define REC_MPTCP (1 << 5)    /* the fd is an MPTCP socket: owner and inode only */
#define REC_CHILD (1 << 6)    /* made by a listener: keeps its backlog */
#define REC_CONNECTED (1 << 7) /* made by connect(): backlog 0 */

/* Record xflags. */
#define RECX_SHARED (1 << 0) /* the file has other references than one fd:
				* counted in user space, by inode */
#define RECX_COUNT (1 << 1)  /* only counts: inode, netns, family, state */
#define RECX_FILED (1 << 2)  /* dump_tcp: the socket has a file */

/* keepalive_own bits: the socket's own value, not the sysctl default. */
#define KA_OWN_TIME (1 << 0)
#define KA_OWN_INTVL (1 << 1)
#define KA_OWN_PROBES (1 << 2)

/* Event flags. */
#define EV_DURATION (1 << 0) /* cw_ns holds the time spent in CLOSE_WAIT */
#define EV_CLASSIC (1 << 1)  /* from the classic tracepoint: no cookie, inode, netns */

/* One socket as the iterators see it. Naturally aligned, no implicit
 * padding: 152 bytes. */
struct record {
	__u64 cookie;
	__u64 inode;
	__u64 cw_age_ns; /* time since entering CLOSE_WAIT; REC_STAMP */
	__u32 netns;
	__u32 tgid;
	__u32 fd;
	__u32 uid;
	__u32 recv_q;
	__u32 send_q;
	__u32 last_ack_recv_ms;  /* tcp_info.tcpi_last_ack_recv */
	__u32 last_data_recv_ms; /* tcp_info.tcpi_last_data_recv */
	__u32 keepalive_time_ms;
	__u32 keepalive_intvl_ms;
	__u32 user_timeout_ms;
	__u32 timer_left_ms;
	__u16 sport; /* host order */
	__u16 dport; /* host order */
	__u8 family;
	__u8 state;
	__u8 flags;
	__u8 keepalive_probes;
	__u8 timer; /* inet_diag idiag_timer: 1 on, 2 keepalive, 3 timewait, 4 persist */
	__u8 probes_out;
	__u8 retransmits;
	__u8 backoff; /* icsk_backoff */
	__u32 saddr[4]; /* network order; IPv4 in saddr[0] */
	__u32 daddr[4];
	char comm[16];
	__u32 sk_err; /* sk_err, or sk_err_soft when it is 0 */
	__u8 keepalive_own; /* KA_OWN_*: timers the socket sets itself */
	__u8 xflags;        /* RECX_* */
	__u8 pad[6];
	__u64 cgroups; /* REC_OWNED: the task's css_set, as a number; tasks with
			* the same one are in the same cgroups */
};


/* One state transition, sent to "closewait trace". 80 bytes. */
struct event {
	__u64 time_ns; /* CLOCK_MONOTONIC */
	__u64 cookie;
	__u64 inode;
	__u64 cw_ns; /* EV_DURATION */
	__u32 netns;
	__u32 pid; /* current task at the transition: usually not the owner */
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 oldstate;
	__u8 newstate;
	__u8 flags;
	__u32 saddr[4];
	__u32 daddr[4];
};

struct stamp {
	__u64 enter_ns; /* CLOCK_MONOTONIC time of entering CLOSE_WAIT */
};

/* Set by the loader before loading. */
volatile const __u32 target_netns = 0; /* tracer, owner notes: 0 every network namespace */
volatile const __u8 stamp_enter = 1;   /* tracer: write stamps */
volatile const __u8 emit_events = 0;   /* tracer: 0 none, 1 CLOSE_WAIT in/out, 2 all */
volatile const __u8 read_stamps = 0;   /* iterators: 0 no tracer, 1 stamps, 2 stamps_by_sk */
volatile const __u32 config_hz = 0;    /* CONFIG_HZ; 0: unknown, no jiffy ages */
volatile const __u8 full_records = 1;  /* dump_task_file: 0 owner fields only */

/* The iterators' settings, which user space writes before a walk and the
 * programs only read: a map, not constants, so that the programs "closewait
 * tracer install" pins serve every listing (one at a time, under a lock). */
struct iter_cfg {
	__u32 state_mask;  /* states to emit */
	__u32 netns;       /* dump_task_file: 0 every network namespace */
	__u32 gen;         /* this listing's mark in sent; never 0 */
	__u32 sent_mask;   /* slots in sent, less one: a power of two */
	__u8 count_states; /* dump_tcp: fill state_counts */
	__u8 emit_filed;   /* dump_tcp: also what dump_task_file sent */
	__u8 listen_only;  /* dump_tcp: stop at the end of the listening hash */
	__u8 mark_sent;    /* dump_task_file: mark in sent what it sends */
	__u8 pad[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct iter_cfg);
} iter_cfg SEC(".maps");

/* Emit the two structs into BTF, for bpf2go's Go declarations that the
 * layout test compares with the hand-written decoder. */
const struct record *unused_record __attribute__((unused));
const struct event *unused_event __attribute__((unused));

/* Events the ring buffer had no room for. */
__u64 events_lost = 0;

/* With count_states, dump_tcp counts every socket it walks past, by family
 * (0 IPv4, 1 IPv6) and state as sock_diag reports it: time-wait sockets by
 * their substate, request sockets as SYN_RECV. User space zeroes the counts
 * before a walk and reads them after; one walk at a time. */
struct counts {
	__u32 n[2][16];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counts);
} state_counts SEC(".maps");

/* dump_task_file counts, per network namespace and family (0 IPv4, 1
 * IPv6), the sockets in a hashed state (not CLOSE) whose file only the
 * fd and the iterator hold; files with more references come as records
 * with RECX_SHARED, for user space to count once each. Counts gather in
 * held_walk while the walk stays in one namespace, and go into held_counts
 * when it moves on and at its end. User space empties held_counts after
 * reading it; held_walk's overflow says a namespace found no room. */
struct held {
	__u32 n[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, __u32);
	__type(value, struct held);
} held_counts SEC(".maps");

/* The sockets dump_task_file sent, by address, with mark_sent (set when
 * dump_tcp will likely walk after it): dump_tcp leaves them out unless
 * emit_filed. Each mark costs a cache miss or so. An open-addressing table in an
 * array, cheaper than a hash map's insert, whose slots count only when
 * marked with this listing's gen, so that a pinned table needs no
 * clearing. A socket finds no room after SENT_PROBES slots only in a
 * table nearly full, and is then sent twice, which user space handles.
 * User space sizes it (max_entries, a power of two). */
#define SENT_PROBES 8

struct sent_slot {
	__u64 addr;
	__u32 gen;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 16);
	__type(key, __u32);
	__type(value, struct sent_slot);
} sent SEC(".maps");

/* Whether addr is in sent, marked with cfg's gen; with add, when it is
 * not, it takes the first slot not so marked (free or stale). */
static __always_inline int sent_mark(struct iter_cfg *cfg, __u64 addr, int add)
{
	/* Slab objects: the low bits say little. */
	__u32 h = (__u32)(addr >> 6) ^ (__u32)(addr >> 26);

	for (__u32 i = 0; i < SENT_PROBES; i++) {
		__u32 k = (h + i * 7919) & cfg->sent_mask;
		struct sent_slot *v = bpf_map_lookup_elem(&sent, &k);

		if (!v)
			return 0;
		if (v->gen != cfg->gen) {
			if (add) {
				v->addr = addr;
				v->gen = cfg->gen;
			}
			return 0;
		}
		if (v->addr == addr)
			return 1;
	}
	return 0;
}

/* dump_task_file's running count and overflow flag, see held_counts; one
 * per part of a walk split in two. User space splits a walk by writing
 * the ids of its two reading threads in tid: each instance then takes the
 * fds of one parity, its reader's entry's. With no tid in entry 1, a walk
 * is whole, in entry 0. */
struct held_walk {
	__u32 ns;
	struct held cur;
	__u32 overflow;
	__u32 tid;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct held_walk);
} held_walk SEC(".maps");

/* CLOSE_WAIT entry stamps, freed by the kernel with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct stamp);
} stamps SEC(".maps");

/* The classic tracepoint has only a raw socket address, which sk_storage
 * cannot take: stamps are keyed by that address instead, deleted when the
 * socket reaches CLOSE, and limited in number. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
	__type(key, __u64);
	__type(value, struct stamp);
} stamps_by_sk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* jiffies_to_msecs, as tcp_info computes its ages. */
static __always_inline __u32 jiffies_to_ms(__u64 j)
{
	__u64 hz = config_hz;

	if (hz == 0)
		return 0;
	if (hz <= 1000 && 1000 % hz == 0)
		return j * (1000 / hz);
	return (j * 1000 + hz - 1) / hz;
}

static __always_inline __u32 jiffies_delta_to_ms(__s64 delta)
{
	return delta <= 0 ? 0 : jiffies_to_ms(delta);
}

static __always_inline void fill_addrs(struct record *r, struct sock_common *skc)
{
	r->family = skc->skc_family;
	r->sport = skc->skc_num;
	r->dport = bpf_ntohs(skc->skc_dport);
	if (r->family == AF_INET) {
		r->saddr[0] = skc->skc_rcv_saddr;
		r->daddr[0] = skc->skc_daddr;
	} else {
		r->saddr[0] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[0];
		r->saddr[1] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[1];
		r->saddr[2] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[2];
		r->saddr[3] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[3];
		r->daddr[0] = skc->skc_v6_daddr.in6_u.u6_addr32[0];
		r->daddr[1] = skc->skc_v6_daddr.in6_u.u6_addr32[1];
		r->daddr[2] = skc->skc_v6_daddr.in6_u.u6_addr32[2];
		r->daddr[3] = skc->skc_v6_daddr.in6_u.u6_addr32[3];
	}
}

static __always_inline __u32 netns_of(struct sock_common *skc)
{
	struct net *net = skc->skc_net.net;

	return net ? net->ns.inum : 0;
}

/* A stamp's age, when the stamp is set. */
static __always_inline void set_stamp(struct record *r, struct stamp *st, __u64 now)
{
	if (st && st->enter_ns && now >= st->enter_ns) {
		r->cw_age_ns = now - st->enter_ns;
		r->flags |= REC_STAMP;
	}
}

/* The classic tracepoint's stamp of a socket in CLOSE_WAIT: keyed by its
 * address, which any pointer to the socket gives. */
static __always_inline void fill_stamp_by_sk(struct record *r, void *sk)
{
	__u64 key = (__u64)sk;

	if (read_stamps == 2)
		set_stamp(r, bpf_map_lookup_elem(&stamps_by_sk, &key), bpf_ktime_get_ns());
}

/* The stamp in sk_storage of a socket in CLOSE_WAIT, from a pointer the
 * verifier may not trust, which bpf_sk_storage_get refuses: found in the
 * socket's list of storage elements (one per sk_storage map that holds
 * something for it) by plain reads, as bpf_sk_storage_get would. */
#define STORAGE_PROBES 4

static __always_inline void fill_stamp_untrusted(struct record *r, struct sock *sk)
{
	struct bpf_local_storage *ls;
	struct hlist_node *n;
	struct stamp st;

	if (read_stamps != 1) {
		fill_stamp_by_sk(r, sk);
		return;
	}
	ls = BPF_CORE_READ(sk, sk_bpf_storage);
	if (!ls)
		return;
	n = BPF_CORE_READ(ls, list.first);
	for (int i = 0; i < STORAGE_PROBES && n; i++) {
		struct bpf_local_storage_elem *e =
			(void *)n - bpf_core_field_offset(struct bpf_local_storage_elem, snode);

		if (BPF_CORE_READ(e, sdata.smap) == (void *)&stamps) {
			if (bpf_probe_read_kernel(&st, sizeof(st), &e->sdata.data) == 0)
				set_stamp(r, &st, bpf_ktime_get_ns());
			return;
		}
		n = BPF_CORE_READ(n, next);
	}
}

/* The stamp of a socket in CLOSE_WAIT, from whichever tracer map has it.
 * sk must be a pointer the verifier trusts: sk_storage takes no other. */
static __always_inline void fill_stamp(struct record *r, void *sk)
{
	if (read_stamps == 1)
		set_stamp(r, bpf_sk_storage_get(&stamps, sk, 0, 0), bpf_ktime_get_ns());
	else
		fill_stamp_by_sk(r, sk);
}

static __always_inline unsigned long retransmit_expires(struct inet_connection_sock *icsk)
{
	if (bpf_core_field_exists(icsk->icsk_timeout))
		return icsk->icsk_timeout;
	return icsk->icsk_retransmit_timer.expires;
}

/* Everything a full TCP socket has: queues, tcp_info ages, timers,
 * keepalive settings. Mirrors inet_diag and tcp_info. tp is only read
 * field by field, and may be a copy: net is the socket's namespace, for
 * the sysctl defaults. */
static __always_inline void fill_tcp(struct record *r, struct tcp_sock *tp, struct net *net)
{
	struct inet_connection_sock *icsk = &tp->inet_conn;
	struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	__u64 jiffies = bpf_jiffies64();
	__u32 now = jiffies; /* tcp_jiffies32 */
	unsigned long expires = 0;
	__u32 v;
	__u8 pending;

	fill_addrs(r, &sk->__sk_common);
	r->state = sk->__sk_common.skc_state;
	if (r->state == TCP_LISTEN) {
		r->recv_q = sk->sk_ack_backlog;
		r->send_q = sk->sk_max_ack_backlog;
	} else {
		__s32 rq = tp->rcv_nxt - tp->copied_seq;

		r->recv_q = rq < 0 ? 0 : rq;
		r->send_q = tp->write_seq - tp->snd_una;
		/* A listener's child is a copy of it (sk_clone_lock); connect()
		 * leaves the backlog 0. */
		r->flags |= sk->sk_max_ack_backlog ? REC_CHILD : REC_CONNECTED;
	}
	if (config_hz) {
		r->last_ack_recv_ms = jiffies_to_ms((__u32)(now - tp->rcv_tstamp));
		r->last_data_recv_ms = jiffies_to_ms((__u32)(now - icsk->icsk_ack.lrcvtime));
		r->flags |= REC_AGES;
	}

	if (sk->__sk_common.skc_flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_KEEPOPEN)))
		r->flags |= REC_KEEPOPEN;
	v = tp->keepalive_time;
	if (v)
		r->keepalive_own |= KA_OWN_TIME;
	else if (net)
		v = net->ipv4.sysctl_tcp_keepalive_time;
	r->keepalive_time_ms = jiffies_to_ms(v);
	v = tp->keepalive_intvl;
	if (v)
		r->keepalive_own |= KA_OWN_INTVL;
	else if (net)
		v = net->ipv4.sysctl_tcp_keepalive_intvl;
	r->keepalive_intvl_ms = jiffies_to_ms(v);
	v = tp->keepalive_probes;
	if (v)
		r->keepalive_own |= KA_OWN_PROBES;
	else if (net)
		v = net->ipv4.sysctl_tcp_keepalive_probes;
	r->keepalive_probes = v;
	r->user_timeout_ms = icsk->icsk_user_timeout;

	pending = icsk->icsk_pending;
	if (pending == ICSK_TIME_RETRANS || pending == ICSK_TIME_REO_TIMEOUT ||
	    pending == ICSK_TIME_LOSS_PROBE) {
		r->timer = 1;
		r->retransmits = icsk->icsk_retransmits;
		expires = retransmit_expires(icsk);
	} else if (pending == ICSK_TIME_PROBE0) {
		r->timer = 4;
		r->retransmits = icsk->icsk_probes_out;
		expires = retransmit_expires(icsk);
	} else if (sk->sk_timer.entry.pprev) {
		r->timer = 2;
		r->retransmits = icsk->icsk_probes_out;
		expires = sk->sk_timer.expires;
	}
	if (r->timer)
		r->timer_left_ms = jiffies_delta_to_ms((__s64)(expires - jiffies));
	r->probes_out = icsk->icsk_probes_out;
	r->backoff = icsk->icsk_backoff;
	r->sk_err = sk->sk_err ? sk->sk_err : sk->sk_err_soft;
}

/* The owner of one fd, and what struct sock holds. sk may be a pointer
 * the verifier does not trust: it is only read, field by field. */
static __always_inline void fill_owner(struct record *r, struct task_struct *task, struct file *file,
				       __u32 fd, struct sock *sk)
{
	fill_addrs(r, &sk->__sk_common);
	r->state = sk->__sk_common.skc_state;
	r->netns = netns_of(&sk->__sk_common);
	r->cookie = sk->__sk_common.skc_cookie.counter; /* 0 until someone asks for it */
	r->inode = file->f_inode ? file->f_inode->i_ino : 0;
	r->uid = sk->sk_uid.val;
	r->sk_err = sk->sk_err ? sk->sk_err : sk->sk_err_soft;
	r->tgid = task->tgid;
	r->fd = fd;
	bpf_probe_read_kernel(&r->cgroups, sizeof(r->cgroups), &task->cgroups);
	bpf_probe_read_kernel_str(r->comm, sizeof(r->comm), task->comm);
	r->flags |= REC_OWNED;
}

/* How many references a file has. */
static __always_inline long file_refs(struct file *file)
{
	if (bpf_core_field_exists(((struct file___f_ref *)file)->f_ref))
		return ((struct file___f_ref *)file)->f_ref.refcnt.counter + 1;
	return ((struct file___f_count *)file)->f_count.counter;
}

/* Moves the running count into held_counts. */
static __always_inline void held_flush(struct held_walk *w)
{
	struct held cur = w->cur;
	__u32 ns = w->ns;
	struct held *h;

	if (!ns)
		return;
	/* Atomic: the two parts of a split walk may add to one count. */
	h = bpf_map_lookup_elem(&held_counts, &ns);
	if (!h && bpf_map_update_elem(&held_counts, &ns, &cur, BPF_NOEXIST) == 0)
		goto done;
	if (!h) /* the other part inserted it meanwhile, or no room */
		h = bpf_map_lookup_elem(&held_counts, &ns);
	if (h) {
		__sync_fetch_and_add(&h->n[0], cur.n[0]);
		__sync_fetch_and_add(&h->n[1], cur.n[1]);
	} else {
		w->overflow = 1;
	}
done:
	w->ns = 0;
	w->cur.n[0] = 0;
	w->cur.n[1] = 0;
}

static __always_inline void held_add(struct held_walk *w, __u32 ns, __u16 family)
{
	if (ns != w->ns) {
		held_flush(w);
		w->ns = ns;
	}
	if (family == AF_INET6)
		w->cur.n[1]++;
	else
		w->cur.n[0]++;
}

/* bpf_rdonly_cast (Linux 6.2 and later) makes a pointer the verifier does
 * not trust into one of another type, to read field by field. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

/* As libbpf 1.2's bpf_helpers.h has it: whether a __weak kfunc exists. */
#ifndef bpf_ksym_exists
#define bpf_ksym_exists(sym) (!!(sym))
#endif

/* Without bpf_rdonly_cast, a pointer to struct sock reaches no further
 * than struct sock: fill_tcp reads a copy of the tcp_sock instead. */
struct tcp_copy {
	__u8 b[4096];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tcp_copy);
} tcp_copies SEC(".maps");

/* fill_tcp from a pointer the verifier does not trust. */
static __always_inline void fill_tcp_untrusted(struct record *r, struct sock *sk)
{
	struct net *net = sk->__sk_common.skc_net.net;
	struct tcp_copy *c;
	__u32 zero = 0, size;

	if (bpf_ksym_exists(bpf_rdonly_cast)) {
		fill_tcp(r, bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock)), net);
		return;
	}
	c = bpf_map_lookup_elem(&tcp_copies, &zero);
	if (!c)
		return;
	size = bpf_core_type_size(struct tcp_sock);
	if (size > sizeof(c->b))
		size = sizeof(c->b);
	if (bpf_probe_read_kernel(c->b, size, sk) == 0)
		fill_tcp(r, (struct tcp_sock *)c->b, net);
}

SEC("iter/task_file")
int dump_task_file(struct bpf_iter__task_file *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct socket *sock;
	struct sock *sk;
	struct record r;
	struct held_walk *w;
	struct iter_cfg *cfg;
	__u16 family, protocol;
	__u32 netns, zero = 0, one = 1, tid;
	__u8 state, held, shared;
	struct held_walk *w1;
	int part = -1; /* a whole walk */

	w = bpf_map_lookup_elem(&held_walk, &zero);
	w1 = bpf_map_lookup_elem(&held_walk, &one);
	if (!w || !w1)
		return 0;
	if (w1->tid) {
		tid = (__u32)bpf_get_current_pid_tgid();
		if (tid == w1->tid) {
			w = w1;
			part = 1;
		} else if (tid == w->tid) {
			part = 0;
		}
	}
	if (!task || !file) {
		held_flush(w); /* the walk's end */
		return 0;
	}
	if (part >= 0 && (ctx->fd & 1) != part)
		return 0; /* the other part's */
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	sk = sock->sk; /* untrusted on some kernels: plain reads only */
	if (!sk)
		return 0;
	/* Cheap tests first: most fds of a busy host are other sockets. */
	family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	protocol = sk->sk_protocol;
	state = sk->__sk_common.skc_state;
	if (state == 0 || state > TCP_NEW_SYN_RECV)
		return 0;
	cfg = bpf_map_lookup_elem(&iter_cfg, &zero);
	if (!cfg)
		return 0;
	netns = netns_of(&sk->__sk_common);
	if (cfg->netns && netns != cfg->netns)
		return 0;
	__builtin_memset(&r, 0, sizeof(r));
	if (protocol == IPPROTO_MPTCP) {
		/* Not a TCP socket: its TCP subflows, which dump_tcp reports,
		 * share this fd's struct socket and so its inode. Every MPTCP
		 * fd is sent, whatever its own state; the subflows' states
		 * decide. */
		r.flags = REC_MPTCP;
		fill_owner(&r, task, file, ctx->fd, sk);
		bpf_seq_write(seq, &r, sizeof(r));
		return 0;
	}
	if (protocol != IPPROTO_TCP || sk->sk_type != SOCK_STREAM)
		return 0;
	/* This fd and the iterator hold the file: 2. More, and another fd
	 * may hold it too (or a syscall, for now). A socket whose record
	 * does not fit comes again in the next read: it is counted once its
	 * record is written. */
	held = shared = 0;
	if (full_records && state != TCP_CLOSE) {
		if (file_refs(file) == 2)
			held = 1;
		else
			shared = 1;
	}
	if (state >= 32 || !((cfg->state_mask | 1U << TCP_LISTEN) & (1U << state))) {
		if (held)
			held_add(w, netns, family);
		if (!shared)
			return 0;
		/* Unwanted, but user space counts it. */
		r.xflags = RECX_SHARED | RECX_COUNT;
		r.family = family;
		r.state = state;
		r.netns = netns;
		r.inode = file->f_inode ? file->f_inode->i_ino : 0;
		bpf_seq_write(seq, &r, sizeof(r));
		return 0;
	}
	if (state == TCP_LISTEN)
		r.flags |= REC_LISTENER;
	if (shared)
		r.xflags = RECX_SHARED;
	if (full_records) {
		fill_tcp_untrusted(&r, sk);
		if (r.state == TCP_CLOSE_WAIT)
			fill_stamp_untrusted(&r, sk);
	}
	fill_owner(&r, task, file, ctx->fd, sk);
	if (bpf_seq_write(seq, &r, sizeof(r)) == 0) {
		if (held)
			held_add(w, netns, family);
		__u64 addr = 0;

		/* The address as a number, which a pointer cannot be. */
		if (full_records && cfg->mark_sent && bpf_probe_read_kernel(&addr, sizeof(addr), &sock->sk) == 0)
			sent_mark(cfg, addr, 1);
	}
	return 0;
}

/* Counts a socket of dump_tcp's walk in state_counts. */
static __always_inline void count_socket(struct sock_common *skc, __u8 state)
{
	__u32 af = skc->skc_family == AF_INET6;
	__u32 idx, zero = 0;
	struct counts *c;

	if (state == TCP_TIME_WAIT) {
		state = BPF_CORE_READ((struct inet_timewait_sock *)skc, tw_substate);
	} else if (state == TCP_NEW_SYN_RECV) {
		state = TCP_SYN_RECV;
	}
	idx = state;
	barrier_var(idx); /* so that the verifier sees the bound checked */
	c = bpf_map_lookup_elem(&state_counts, &zero);
	if (c && idx < 16)
		c->n[af][idx]++;
}

/* dump_tcp's record of one socket, if it wants it: 0, or the error of a
 * write that did not fit (the socket comes again, in the next read). */
static __always_inline long show_tcp(struct bpf_iter__tcp *ctx, struct iter_cfg *cfg, struct sock_common *skc,
					__u8 state)
{
	__u32 state_mask = cfg->state_mask;
	struct seq_file *seq = ctx->meta->seq;
	struct inet_timewait_sock *tw;
	struct request_sock *req;
	struct tcp_sock *tp;
	struct socket *sock;
	struct file *file;
	struct sock *sk;
	struct record r;

	switch (state) {
	case TCP_TIME_WAIT: /* reported by substate: TIME_WAIT or FIN_WAIT2 */
		if (!(state_mask & (1U << TCP_TIME_WAIT | 1U << TCP_FIN_WAIT2)))
			return 0;
		break;
	case TCP_NEW_SYN_RECV: /* reported as SYN_RECV */
		if (!(state_mask & (1U << TCP_SYN_RECV)))
			return 0;
		break;
	case TCP_LISTEN: /* always, for inbound marking */
		break;
	default:
		if (state >= 32 || !(state_mask & (1U << state)))
			return 0;
	}
	if (skc->skc_family != AF_INET && skc->skc_family != AF_INET6)
		return 0;
	__builtin_memset(&r, 0, sizeof(r));
	r.uid = ctx->uid;

	/* A time-wait or request socket is read through a cast, not
	 * bpf_skc_to_tcp_{timewait,request}_sock: those want the socket's
	 * proto to be tcp_prot, and the children of an MPTCP listener (Go's
	 * default) have MPTCP's copy of it. The state says what it is. */
	if (state == TCP_TIME_WAIT) {
		tw = (struct inet_timewait_sock *)skc;
		/* inet_diag reports the substate (TIME_WAIT or FIN_WAIT2). */
		state = BPF_CORE_READ(tw, tw_substate);
		if (state >= 32 || !(state_mask & (1U << state)))
			return 0;
		fill_addrs(&r, skc);
		r.state = state;
		r.netns = netns_of(skc);
		r.timer = 3;
		r.timer_left_ms = jiffies_delta_to_ms((__s64)(BPF_CORE_READ(tw, tw_timer.expires) - bpf_jiffies64()));
		r.cookie = bpf_get_socket_cookie(skc);
		return bpf_seq_write(seq, &r, sizeof(r));
	}
	if (state == TCP_NEW_SYN_RECV) {
		req = (struct request_sock *)skc;
		fill_addrs(&r, skc);
		r.state = TCP_SYN_RECV;
		r.netns = netns_of(skc);
		r.timer = 1;
		r.retransmits = BPF_CORE_READ(req, num_retrans);
		r.timer_left_ms = jiffies_delta_to_ms((__s64)(BPF_CORE_READ(req, rsk_timer.expires) - bpf_jiffies64()));
		r.cookie = bpf_get_socket_cookie(skc);
		r.uid = 0;
		return bpf_seq_write(seq, &r, sizeof(r));
	}

	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	sk = &tp->inet_conn.icsk_inet.sk;
	/* sock_i_ino(), as sock_diag reports it: the inode that
	 * dump_task_file's owner records name. An MPTCP subflow has its MPTCP
	 * socket's. A kernel socket has no file; its inode sits beside its
	 * struct socket, past what the verifier lets a field read reach. */
	sock = sk->sk_socket;
	file = sock ? sock->file : 0;
	/* What dump_task_file sent too, if an fd holds it: the struct
	 * socket of a file that points back at this socket (an MPTCP
	 * subflow's points at the MPTCP socket). */
	if (file && sock->sk == sk) {
		__u64 addr = 0;

		if (!cfg->emit_filed && cfg->mark_sent &&
		    bpf_probe_read_kernel(&addr, sizeof(addr), &ctx->sk_common) == 0 &&
		    sent_mark(cfg, addr, 0))
			return 0;
		r.xflags = RECX_FILED;
	}
	r.cookie = bpf_get_socket_cookie(tp);
	if (file && file->f_inode)
		r.inode = file->f_inode->i_ino;
	else if (sock)
		r.inode = BPF_CORE_READ((struct socket_alloc *)sock, vfs_inode.i_ino);
	if (state == TCP_LISTEN)
		r.flags |= REC_LISTENER;
	r.netns = netns_of(&sk->__sk_common);
	fill_tcp(&r, tp, sk->__sk_common.skc_net.net);
	if (r.state == TCP_CLOSE_WAIT)
		fill_stamp(&r, tp);
	return bpf_seq_write(seq, &r, sizeof(r));
}

SEC("iter/tcp")
int dump_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct iter_cfg *cfg;
	__u32 zero = 0;
	__u8 state;

	cfg = bpf_map_lookup_elem(&iter_cfg, &zero);
	if (!skc || !cfg)
		return 0;
	/* Filter before any other work: most of a busy table is not wanted. */
	state = skc->skc_state;
	/* The walk goes through the listening hash first: a socket in
	 * another state (but a listener closing) is past it. Returning 1
	 * ends the read, with EAGAIN once nothing came before it. */
	if (cfg->listen_only && state != TCP_LISTEN && state != TCP_CLOSE)
		return 1;
	/* A socket whose record did not fit comes again: count it then. */
	if (show_tcp(ctx, cfg, skc, state) == 0 && cfg->count_states)
		count_socket(skc, state);
	return 0;
}


static __always_inline int want_event(int oldstate, int newstate)
{
	if (emit_events == 0)
		return 0;
	if (emit_events == 1 && oldstate != TCP_CLOSE_WAIT && newstate != TCP_CLOSE_WAIT)
		return 0;
	return 1;
}

/* Whether the tracer has anything to do for a transition: a stamp on
 * entering CLOSE_WAIT, or an event. Most transitions (9 of the 10 of a
 * loopback connection) neither enter nor leave CLOSE_WAIT: checked first,
 * from the context alone, so that they cost no socket read and no clock. */
static __always_inline int acts_on(int oldstate, int newstate)
{
	if (stamp_enter && newstate == TCP_CLOSE_WAIT)
		return 1;
	return want_event(oldstate, newstate);
}

/* The local port of an event. At TCP_CLOSE the kernel has already
 * released the port (inet_put_port zeroes skc_num) but inet_sport, which
 * the classic tracepoint reports, keeps it. Both are still 0 on entering
 * SYN_SENT in connect() without bind(): the port is picked after that. */
static __always_inline __u16 event_sport(struct sock *sk)
{
	__u16 port = sk->__sk_common.skc_num;

	if (!port)
		port = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	return port;
}

SEC("tp_btf/inet_sock_set_state")
int on_set_state(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	int oldstate = ctx[1];
	int newstate = ctx[2];
	struct socket *sock;
	struct event *e;
	struct stamp *st;
	__u64 now;

	if (!acts_on(oldstate, newstate))
		return 0;
	if (!sk || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	now = bpf_ktime_get_ns();
	if (stamp_enter && newstate == TCP_CLOSE_WAIT) {
		st = bpf_sk_storage_get(&stamps, sk, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (st)
			st->enter_ns = now;
	}
	if (!want_event(oldstate, newstate))
		return 0;
	if (target_netns && netns_of(&sk->__sk_common) != target_netns)
		return 0;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&events_lost, 1);
		return 0;
	}
	e->time_ns = now;
	e->cookie = bpf_get_socket_cookie(sk);
	e->inode = 0;
	sock = sk->sk_socket;
	if (sock) {
		struct file *file = sock->file;

		if (file && file->f_inode)
			e->inode = file->f_inode->i_ino;
	}
	e->cw_ns = 0;
	e->netns = netns_of(&sk->__sk_common);
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->oldstate = oldstate;
	e->newstate = newstate;
	e->flags = 0;
	{
		struct record a;

		__builtin_memset(&a, 0, sizeof(a));
		fill_addrs(&a, &sk->__sk_common);
		e->family = a.family;
		e->sport = event_sport(sk);
		e->dport = a.dport;
		__builtin_memcpy(e->saddr, a.saddr, sizeof(e->saddr));
		__builtin_memcpy(e->daddr, a.daddr, sizeof(e->daddr));
	}
	if (oldstate == TCP_CLOSE_WAIT) {
		st = bpf_sk_storage_get(&stamps, sk, 0, 0);
		if (st && st->enter_ns && now >= st->enter_ns) {
			e->cw_ns = now - st->enter_ns;
			e->flags |= EV_DURATION;
		}
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* The classic tracepoint's record (include/trace/events/sock.h, stable
 * since 4.16). Read without CO-RE: this path is for kernels without BTF. */
struct tp_inet_sock_set_state {
	__u64 common;
	__u64 skaddr;
	int oldstate;
	int newstate;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 protocol;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
};

/* Whether the classic tracepoint's program deletes a stamp: when a socket
 * that may have one reaches CLOSE. A socket leaves CLOSE_WAIT only for
 * LAST_ACK (close) or CLOSE (reset, abort), and LAST_ACK only for CLOSE, so
 * every stamped socket reaches CLOSE from one of those two. The other ways
 * into CLOSE (a failed connect, FIN_WAIT2 or CLOSING handing over to a
 * time-wait socket) then cost no hash delete, which takes a bucket lock
 * even for a missing key. */
static __always_inline int forgets(int oldstate, int newstate)
{
	return stamp_enter && newstate == TCP_CLOSE &&
	       (oldstate == TCP_CLOSE_WAIT || oldstate == TCP_LAST_ACK);
}

SEC("tracepoint/sock/inet_sock_set_state")
int on_set_state_tp(struct tp_inet_sock_set_state *ctx)
{
	__u64 key = ctx->skaddr;
	int oldstate = ctx->oldstate;
	int newstate = ctx->newstate;
	struct stamp *st = 0;
	struct event *e;
	__u64 now;

	if (!acts_on(oldstate, newstate) && !forgets(oldstate, newstate))
		return 0;
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	now = bpf_ktime_get_ns();
	if (stamp_enter && newstate == TCP_CLOSE_WAIT) {
		struct stamp s = {.enter_ns = now};

		bpf_map_update_elem(&stamps_by_sk, &key, &s, BPF_ANY);
	}
	if (want_event(oldstate, newstate)) {
		e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
		if (!e) {
			__sync_fetch_and_add(&events_lost, 1);
		} else {
			__builtin_memset(e, 0, sizeof(*e));
			e->time_ns = now;
			e->pid = bpf_get_current_pid_tgid() >> 32;
			e->oldstate = oldstate;
			e->newstate = newstate;
			e->flags = EV_CLASSIC;
			e->family = ctx->family;
			e->sport = ctx->sport;
			e->dport = ctx->dport;
			if (ctx->family == AF_INET) {
				__builtin_memcpy(e->saddr, ctx->saddr, 4);
				__builtin_memcpy(e->daddr, ctx->daddr, 4);
			} else {
				__builtin_memcpy(e->saddr, ctx->saddr_v6, 16);
				__builtin_memcpy(e->daddr, ctx->daddr_v6, 16);
			}
			if (oldstate == TCP_CLOSE_WAIT) {
				st = bpf_map_lookup_elem(&stamps_by_sk, &key);
				if (st && st->enter_ns && now >= st->enter_ns) {
					e->cw_ns = now - st->enter_ns;
					e->flags |= EV_DURATION;
				}
			}
			bpf_ringbuf_submit(e, 0);
		}
	}
	/* The socket is finished; its address may be reused. */
	if (forgets(oldstate, newstate))
		bpf_map_delete_elem(&stamps_by_sk, &key);
	return 0;
}

/* Who got each new TCP socket's fd: the task and fd an accept(2),
 * accept4(2) or socket(2) returned, keyed by the socket's inode. "closewait
 * trace" reads it for a socket that closed before an fd snapshot could see
 * it: a socket that enters and leaves CLOSE_WAIT within microseconds. An
 * LRU map, since nothing reliably deletes entries (a socket is orphaned,
 * its inode gone from it, before it reaches TCP_CLOSE); by the time an
 * entry is evicted, the socket's owner is in the snapshots or long gone. */
struct fd_owner {
	__u32 tgid;
	__u32 fd;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, __u64); /* inode */
	__type(value, struct fd_owner);
} fd_owners SEC(".maps");

/* The syscalls:sys_exit_* tracepoints' record. */
struct tp_sys_exit {
	__u64 common;
	int nr;
	long ret;
};

/* note_fd_owner runs in the task that the syscall returned fd to. The fd
 * table is read with probe reads: another thread may close the fd at any
 * moment, so the file is trusted only if it is a socket's file (its
 * socket points back at it) holding a TCP or MPTCP socket. */
static __always_inline void note_fd_owner(long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt;
	struct file **fds;
	struct file *file = 0;
	struct socket *sock;
	struct sock *sk;
	struct fd_owner o;
	__u64 ino;
	__u16 proto, family;

	if (fd < 0)
		return;
	fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return;
	fds = BPF_CORE_READ(fdt, fd);
	if (!fds || bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return;
	sock = BPF_CORE_READ(file, private_data);
	if (!sock || BPF_CORE_READ(sock, file) != file)
		return;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return;
	proto = BPF_CORE_READ(sk, sk_protocol);
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if ((proto != IPPROTO_TCP && proto != IPPROTO_MPTCP) || (family != AF_INET && family != AF_INET6))
		return;
	if (target_netns && BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) != target_netns)
		return;
	ino = BPF_CORE_READ(file, f_inode, i_ino);
	if (!ino)
		return;
	o.tgid = bpf_get_current_pid_tgid() >> 32;
	o.fd = fd;
	bpf_get_current_comm(o.comm, sizeof(o.comm));
	bpf_map_update_elem(&fd_owners, &ino, &o, BPF_ANY);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int on_accept4_exit(struct tp_sys_exit *ctx)
{
	note_fd_owner(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int on_accept_exit(struct tp_sys_exit *ctx)
{
	note_fd_owner(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_socket")
int on_socket_exit(struct tp_sys_exit *ctx)
{
	note_fd_owner(ctx->ret);
	return 0;
}
