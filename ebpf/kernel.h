/* Minimal kernel type definitions for closewait's BPF programs.
 *
 * Hand-written instead of a bpftool-generated vmlinux.h so that
 * `make generate` produces the same object on any machine: every struct is
 * marked preserve_access_index, so field offsets are relocated against the
 * running kernel's BTF at load time (CO-RE) and only the fields named here
 * must exist there. Layouts below are therefore not the kernel's; only names
 * and types matter.
 */
#ifndef CLOSEWAIT_KERNEL_H
#define CLOSEWAIT_KERNEL_H

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u32 __wsum;

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;

/* Constants from the UAPI headers, copied so that no system header (whose
 * version differs between machines) is needed. */
enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
	BPF_MAP_TYPE_SK_STORAGE = 24,
};
#define BPF_F_NO_PREALLOC (1U << 0)
#define BPF_ANY 0
#define BPF_NOEXIST 1
#define BPF_LOCAL_STORAGE_GET_F_CREATE 1

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define IPPROTO_TCP 6
#define IPPROTO_MPTCP 262

/* include/net/tcp_states.h */
enum {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT,
	TCP_SYN_RECV,
	TCP_FIN_WAIT1,
	TCP_FIN_WAIT2,
	TCP_TIME_WAIT,
	TCP_CLOSE,
	TCP_CLOSE_WAIT,
	TCP_LAST_ACK,
	TCP_LISTEN,
	TCP_CLOSING,
	TCP_NEW_SYN_RECV,
};

/* include/net/inet_connection_sock.h: icsk_pending values (macros, so not
 * in BTF; stable since 4.x). */
#define ICSK_TIME_RETRANS 1
#define ICSK_TIME_PROBE0 3
#define ICSK_TIME_LOSS_PROBE 5
#define ICSK_TIME_REO_TIMEOUT 6

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct netns_ipv4 {
	int sysctl_tcp_keepalive_time;
	int sysctl_tcp_keepalive_intvl;
	u8 sysctl_tcp_keepalive_probes;
};

struct net {
	struct ns_common ns;
	struct netns_ipv4 ipv4;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4];
	} in6_u;
};

struct hlist_node {
	struct hlist_node *next;
	struct hlist_node **pprev;
};

struct hlist_head {
	struct hlist_node *first;
};

/* A socket's BPF storage: one element per sk_storage map. */
struct bpf_local_storage_data {
	void *smap; /* the map's struct bpf_local_storage_map */
	u8 data[0];
};

struct bpf_local_storage_elem {
	struct hlist_node snode; /* in bpf_local_storage's list */
	struct bpf_local_storage_data sdata;
};

struct bpf_local_storage {
	struct hlist_head list;
};

struct timer_list {
	struct hlist_node entry;
	unsigned long expires;
};

/* Anonymous unions of the kernel's sock_common are flattened here: CO-RE
 * finds a named member inside anonymous members of the target type. */
struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	unsigned long skc_flags; /* sk->sk_flags is a macro for this */
	struct {
		__s64 counter;
	} skc_cookie; /* atomic64_t: the socket cookie, 0 until first asked for */
};

typedef struct {
	unsigned int val;
} kuid_t;

struct inode {
	unsigned long i_ino;
};

struct file {
	struct inode *f_inode;
	void *private_data; /* a socket file's struct socket */
};

/* struct file's reference count, in its two forms: f_count (atomic_long_t)
 * up to Linux 6.12, f_ref (file_ref_t, holding the count less one) since. */
struct file___f_count {
	struct {
		long counter;
	} f_count;
};

struct file___f_ref {
	struct {
		struct {
			long counter;
		} refcnt;
	} f_ref;
};

struct socket {
	struct file *file;
	struct sock *sk;
};

/* A struct socket lives in a socket_alloc, next to its inode: the inode
 * of a kernel socket, which has no file. */
struct socket_alloc {
	struct socket socket;
	struct inode vfs_inode;
};

struct sock {
	struct sock_common __sk_common;
	struct socket *sk_socket;
	struct timer_list sk_timer;
	kuid_t sk_uid;
	u16 sk_protocol;
	u16 sk_type;
	int sk_err;
	int sk_err_soft;
	u32 sk_ack_backlog;
	u32 sk_max_ack_backlog;
	struct bpf_local_storage *sk_bpf_storage;
};

struct inet_sock {
	struct sock sk;
	__be16 inet_sport; /* unlike skc_num, kept when the port is released */
};

struct inet_connection_sock {
	struct inet_sock icsk_inet;
	struct timer_list icsk_retransmit_timer;
	unsigned long icsk_timeout; /* gone in 6.15: checked with bpf_core_field_exists */
	__u8 icsk_pending;
	__u8 icsk_retransmits;
	__u8 icsk_probes_out;
	__u8 icsk_backoff;
	struct {
		__u32 lrcvtime;
	} icsk_ack;
	u32 icsk_user_timeout;
};

struct tcp_sock {
	struct inet_connection_sock inet_conn;
	u32 rcv_nxt;
	u32 copied_seq;
	u32 write_seq;
	u32 snd_una;
	u32 rcv_tstamp;
	unsigned int keepalive_time;
	unsigned int keepalive_intvl;
	u8 keepalive_probes;
};

struct inet_timewait_sock {
	struct sock_common __tw_common;
	unsigned char tw_substate;
	struct timer_list tw_timer;
};

struct request_sock {
	struct sock_common __req_common;
	struct timer_list rsk_timer;
	u8 num_retrans;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct css_set;

struct task_struct {
	int tgid;
	char comm[16];
	struct files_struct *files;
	struct css_set *cgroups;
};

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
};

struct bpf_iter__task_file {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	__u32 fd;
	struct file *file;
};

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
	unsigned int uid;
};

#pragma clang attribute pop

/* include/net/sock.h: enum sock_flags. Read with bpf_core_enum_value so a
 * renumbering kernel still works. */
enum sock_flags {
	SOCK_KEEPOPEN = 3,
};

#endif /* CLOSEWAIT_KERNEL_H */
