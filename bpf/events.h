/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The kernel/user boundary of portlens: every struct that crosses from the BPF programs to the
 * agent is defined here, once, and included by both sides. Plain C, fixed-width types, explicit
 * padding so that the layout is the same for clang -target bpf and for the host compiler; the
 * C++ side checks the sizes with static_assert (agent/event.hpp).
 *
 * Bump PL_ABI_VERSION on any layout change.
 */
#ifndef PORTLENS_BPF_EVENTS_H
#define PORTLENS_BPF_EVENTS_H

#ifdef __bpf__
/* vmlinux.h provides __u8 .. __u64 */
#else
#include <linux/types.h>
#endif

#define PL_ABI_VERSION 4
#define PL_COMM_LEN 16

/*
 * The calls (bind, listen, connect) travel as struct pl_event; the socket events (state, reset,
 * destroy) as the smaller struct pl_sock_event. Both begin with the same header, so a record's
 * type is read at the same offset whatever its kind.
 */
enum pl_event_type {
	PL_EV_BIND = 1,
	PL_EV_LISTEN = 2,
	PL_EV_CONNECT = 3,
	PL_EV_STATE = 4,   /* sock:inet_sock_set_state, TCP only */
	PL_EV_RESET = 5,   /* tcp:tcp_receive_reset: the peer reset this connection */
	PL_EV_DESTROY = 6, /* tcp:tcp_destroy_sock: a TCP socket is freed (bound-only ones too) */
	PL_EV_RESET_SENT = 7, /* tcp:tcp_send_reset with a full socket: this side sent an RST */
};

/* Indexes of the per-CPU counters map that userspace sums and reads. */
enum pl_counter {
	PL_CNT_RINGBUF_FULL = 0,  /* an event was dropped: the ring buffer had no room */
	PL_CNT_INFLIGHT_FULL = 1, /* a syscall entry could not be remembered until its exit */
	PL_CNT_MAX = 2,
};

/* pl_endpoint.family: the sockaddr family, or PL_AF_NONE when there is no address. */
#define PL_AF_NONE 0
#define PL_AF_INET 2
#define PL_AF_INET6 10

struct pl_endpoint {
	__u8 addr[16];	/* IPv4: first 4 bytes, network order; IPv6: 16 bytes, network order */
	__u16 port;	/* host order */
	__u16 family;	/* PL_AF_* */
	__u32 scope_id; /* IPv6 scope id from the sockaddr, 0 otherwise */
};

/* pl_event.flags and pl_sock_event.flags */
#define PL_F_REQ_VALID (1u << 0)  /* req holds an address read from the syscall's sockaddr */
#define PL_F_REQ_FAULT (1u << 1)  /* the sockaddr could not be read from user memory */
#define PL_F_OPTS_VALID (1u << 2) /* opts and sock_uid were read from the struct sock */
#define PL_F_INET_FLAGS (1u << 3) /* freebind etc. came from inet_flags (6.6+), else bitfields */
/* state events into CLOSE: the connection carried TCP timestamps (tp->rx_opt.ts_recent_stamp) */
#define PL_F_TS_RECENT (1u << 4)

struct pl_sock_opts {
	__s32 bound_dev_if; /* SO_BINDTODEVICE ifindex, 0 when unbound */
	__u8 reuseaddr;	    /* sk->sk_reuse (SK_CAN_REUSE / SK_FORCE_REUSE) */
	__u8 reuseport;
	__u8 v6only;
	__u8 freebind;
	__u8 transparent;
	__u8 bind_address_no_port;
	__u8 _pad[2];
};

/*
 * A bind(), listen() or connect(), from its entry and exit: what was asked, by whom, what the
 * socket's options were and what the call left. Its first 24 bytes are laid out as
 * pl_sock_event's.
 */
struct pl_event {
	__u64 ts_ns;	   /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 sk;	   /* kernel address of the struct sock: identity only, never shown */
	__u32 netns;	   /* inode of the socket's network namespace */
	__u16 type;	   /* enum pl_event_type */
	__u16 sock_family; /* AF_INET or AF_INET6: the socket's own family */
	__u64 cgroup_id;   /* cgroup v2 id of the calling task */
	__u32 pid;	   /* tgid of the current task */
	__u32 tid;
	__u32 uid;	/* uid of the current task */
	__u32 sock_uid; /* sk->sk_uid: the socket's owner, what SO_REUSEPORT compares */
	__s32 ret;	/* syscall return value (0 or -errno) */
	__s32 fd;
	__s32 backlog;	 /* listen() backlog */
	__u16 sock_type; /* SOCK_STREAM, SOCK_DGRAM, ... */
	__u16 protocol;	 /* IPPROTO_TCP, IPPROTO_UDP, ... */
	__u8 old_state;	 /* unused by the calls: 0 */
	__u8 new_state;
	__u16 enter_port; /* connect: the local port the socket already had (0: unbound) */
	__u32 flags;	  /* PL_F_* */
	struct pl_sock_opts opts;
	struct pl_endpoint req;	   /* bind: requested local address; connect: destination */
	struct pl_endpoint local;  /* the socket's local address at syscall exit */
	struct pl_endpoint remote; /* unused by the calls: zero */
	char comm[PL_COMM_LEN];
	__u32 _reserved; /* explicit tail padding to 8-byte alignment */
};

/*
 * A TCP state change, received reset or destroyed socket (PL_EV_STATE, PL_EV_RESET,
 * PL_EV_DESTROY). These run mostly in softirq context, where the current task is whoever the CPU
 * was running, so they carry no task: the socket, its states and its 4-tuple, and its options
 * only when the tracker takes them from this event (PL_F_OPTS_VALID; bpf/tcpstate.bpf.c says
 * which transitions).
 */
struct pl_sock_event {
	__u64 ts_ns;	   /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 sk;	   /* kernel address of the struct sock: identity only, never shown */
	__u32 netns;	   /* inode of the socket's network namespace */
	__u16 type;	   /* enum pl_event_type: PL_EV_STATE, PL_EV_RESET or PL_EV_DESTROY */
	__u16 sock_family; /* AF_INET or AF_INET6 */
	__u16 sport;	   /* host order */
	__u16 dport;	   /* host order */
	__u8 old_state;	   /* state: TCP_* before the change; reset and destroy: skc_state */
	__u8 new_state;	   /* state: TCP_* after the change; reset and destroy: skc_state */
	__u16 flags;	   /* PL_F_OPTS_VALID, PL_F_INET_FLAGS, PL_F_TS_RECENT */
	__u32 sock_uid;	   /* sk->sk_uid, with PL_F_OPTS_VALID */
	struct pl_sock_opts opts; /* with PL_F_OPTS_VALID */
	__u8 saddr[16];		  /* AF_INET: the first 4 bytes; network order */
	__u8 daddr[16];
};

/* Both compilers check the same layout: clang -target bpf and the host's C++ compiler. */
#ifdef __cplusplus
#define PL_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define PL_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif
PL_STATIC_ASSERT(sizeof(struct pl_endpoint) == 24,
		 "pl_endpoint layout changed: bump PL_ABI_VERSION");
PL_STATIC_ASSERT(sizeof(struct pl_sock_opts) == 12,
		 "pl_sock_opts layout changed: bump PL_ABI_VERSION");
PL_STATIC_ASSERT(sizeof(struct pl_event) == 176, "pl_event layout changed: bump PL_ABI_VERSION");
PL_STATIC_ASSERT(__builtin_offsetof(struct pl_event, opts) == 72, "pl_event layout changed");
PL_STATIC_ASSERT(__builtin_offsetof(struct pl_event, req) == 84, "pl_event layout changed");
PL_STATIC_ASSERT(__builtin_offsetof(struct pl_event, comm) == 156, "pl_event layout changed");
PL_STATIC_ASSERT(sizeof(struct pl_sock_event) == 80,
		 "pl_sock_event layout changed: bump PL_ABI_VERSION");
PL_STATIC_ASSERT(__builtin_offsetof(struct pl_sock_event, opts) == 36,
		 "pl_sock_event layout changed");
PL_STATIC_ASSERT(__builtin_offsetof(struct pl_sock_event, saddr) == 48,
		 "pl_sock_event layout changed");
/* The shared header: a record's type is read before its kind is known. */
PL_STATIC_ASSERT(__builtin_offsetof(struct pl_event, type) == 20 &&
		     __builtin_offsetof(struct pl_sock_event, type) == 20,
		 "the record header changed");
PL_STATIC_ASSERT(__builtin_offsetof(struct pl_event, sock_family) == 22 &&
		     __builtin_offsetof(struct pl_sock_event, sock_family) == 22,
		 "the record header changed");

/*
 * Socket snapshot records: one per socket, written with bpf_seq_write() by the iter/tcp,
 * iter/udp and iter/task_file (bound-only TCP) programs of bpf/snapshot.bpf.c and read from the
 * iterator fds by agent/snapshot.cpp.
 */

/* pl_sock_record.flags */
#define PL_SR_F_FULL (1u << 0)		/* a full struct sock: uid, ino, sk_userlocks are valid */
#define PL_SR_F_TIMEWAIT (1u << 1)	/* a timewait minisocket: tw_* fields are valid */
#define PL_SR_F_REUSEPORT (1u << 2)	/* skc_reuseport */
#define PL_SR_F_V6ONLY (1u << 3)	/* skc_ipv6only */
#define PL_SR_F_BINDPORT_LOCK (1u << 4) /* sk_userlocks & SOCK_BINDPORT_LOCK: port from bind() */
#define PL_SR_F_TW_TIMESTAMPS (1u << 5) /* tcp_timewait_sock.tw_ts_recent_stamp != 0 */
#define PL_SR_F_TW_TIMER (1u << 6)	/* tw_expires holds the armed tw_timer's expiry */
#define PL_SR_F_BUCKET_READ (1u << 7)	/* TCP: the bind bucket was read; BUCKET_BOUND is valid */
/*
 * TCP: the port's bind bucket has fastreuse or fastreuseport >= 0, i.e. bind() or listen() made
 * or joined it, so __inet_hash_connect() never hands the port to connect(). Accepted children
 * share their listener's bucket; connect() makes buckets with both at -1.
 */
#define PL_SR_F_BUCKET_BOUND (1u << 8)
/* AF_INET6: v4_rcv_saddr holds skc_rcv_saddr (LOOPBACK4_IPV6 after an IPv6 connect()) */
#define PL_SR_F_V4_RCV_SADDR (1u << 9)
/*
 * UDP: udp_chain_pos and udp_slot_count are valid: the socket was found in its port's primary
 * hash slot (udptable->hash[udp_hashfn(net, port, mask)]), the chain udp_lib_lport_inuse() walks.
 */
#define PL_SR_F_UDP_CHAIN (1u << 10)
/* TCP LISTEN: ack_backlog, max_ack_backlog and syn_qlen are valid */
#define PL_SR_F_LISTEN_QUEUE (1u << 11)

struct pl_sock_record {
	__u64 sk;	   /* kernel address of the struct sock or timewait sock: identity only */
	__u64 ino;	   /* socket inode (sock_i_ino()), 0 when the sock has no struct socket */
	__u64 tw_expires;  /* TIME_WAIT: tw_timer.expires, in jiffies */
	__u64 now_jiffies; /* bpf_jiffies64() when the record was written */
	struct pl_endpoint local;  /* skc_rcv_saddr / skc_v6_rcv_saddr, skc_num */
	struct pl_endpoint remote; /* skc_daddr / skc_v6_daddr, skc_dport; zero when unconnected */
	__u32 netns;		   /* skc_net->ns.inum */
	__u32 uid;		   /* sk_uid (full sockets) */
	__s32 bound_dev_if;	   /* skc_bound_dev_if */
	__u32 flags;		   /* PL_SR_F_* */
	__u16 family;		   /* skc_family: AF_INET or AF_INET6 */
	__u16 protocol;		   /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 state;		   /* skc_state (TCP_* numbering, also for UDP) */
	__u8 tw_substate;	   /* TIME_WAIT: tw_substate (TCP_TIME_WAIT or TCP_FIN_WAIT2) */
	__u8 reuse;		   /* skc_reuse: SK_NO_REUSE, SK_CAN_REUSE or SK_FORCE_REUSE */
	__u8 _pad;
	/* UDP (PL_SR_F_UDP_CHAIN): 0-based position in the primary slot's chain, from its head */
	__u32 udp_chain_pos;
	__u32 udp_slot_count; /* UDP (PL_SR_F_UDP_CHAIN): that slot's count, all netns included */
	__u8 v4_rcv_saddr[4]; /* AF_INET6 (PL_SR_F_V4_RCV_SADDR): skc_rcv_saddr, network order */
	/*
	 * TCP (PL_SR_F_BUCKET_READ): the port's inet_bind_bucket, the state inet_csk_get_port()'s
	 * fast paths test (inet_csk_update_fastreuse() keeps it).
	 */
	__u32 fastuid;
	__u8 fast_v6_rcv_saddr[16];
	__u8 fast_rcv_saddr[4]; /* network order */
	__s32 bucket_l3mdev;
	__u16 fast_sk_family; /* AF_INET or AF_INET6 */
	__s8 fastreuse;
	__s8 fastreuseport; /* -1, 0, FASTREUSEPORT_ANY (1) or FASTREUSEPORT_STRICT (2) */
	__u8 fast_ipv6_only;
	__u8 _pad2[2];
	/* TCP LISTEN (PL_SR_F_LISTEN_QUEUE): the accept queue and its limit, the SYN queue */
	__u32 ack_backlog;     /* sk_ack_backlog */
	__u32 max_ack_backlog; /* sk_max_ack_backlog */
	__u32 syn_qlen;	       /* inet_csk(sk)->icsk_accept_queue.qlen */
	__u32 _pad3;	       /* explicit tail padding to 8-byte alignment */
};

PL_STATIC_ASSERT(sizeof(struct pl_sock_record) == 168,
		 "pl_sock_record layout changed: bump PL_ABI_VERSION");
PL_STATIC_ASSERT(__builtin_offsetof(struct pl_sock_record, local) == 32,
		 "pl_sock_record layout changed");
PL_STATIC_ASSERT(__builtin_offsetof(struct pl_sock_record, netns) == 80,
		 "pl_sock_record layout changed");
PL_STATIC_ASSERT(__builtin_offsetof(struct pl_sock_record, family) == 96,
		 "pl_sock_record layout changed");
PL_STATIC_ASSERT(__builtin_offsetof(struct pl_sock_record, udp_chain_pos) == 104,
		 "pl_sock_record layout changed");
PL_STATIC_ASSERT(__builtin_offsetof(struct pl_sock_record, fast_v6_rcv_saddr) == 120,
		 "pl_sock_record layout changed");
PL_STATIC_ASSERT(__builtin_offsetof(struct pl_sock_record, ack_backlog) == 152,
		 "pl_sock_record layout changed");
PL_STATIC_ASSERT(__builtin_offsetof(struct pl_sock_record, fast_sk_family) == 144,
		 "pl_sock_record layout changed");

#endif /* PORTLENS_BPF_EVENTS_H */
