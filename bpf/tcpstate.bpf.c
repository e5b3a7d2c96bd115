// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * TCP state changes and received resets. The tracker rebuilds per-socket state from these:
 * no event ever carries newstate TIME_WAIT (tcp_time_wait() allocates a separate minisocket and
 * the full socket goes to CLOSE), so TIME_WAIT is inferred from FIN_WAIT2->CLOSE and
 * CLOSING->CLOSE, unless tcp_receive_reset fired first (docs/kernel-rules.md section 5).
 *
 * These are the hot programs (about 12 runs per connection), mostly in softirq context: each
 * sends a struct pl_sock_event, the socket, its states and its 4-tuple, and no task.
 */
#include "common.bpf.h"

/*
 * The socket's 4-tuple, read where the tracepoints' own TP_fast_assign reads it (include/trace/
 * events/sock.h and tcp.h): inet_sport, inet_dport, inet_saddr and inet_daddr, or for AF_INET6
 * sk_v6_rcv_saddr and sk_v6_daddr. A tp_btf program reads them with plain loads: no helper.
 */
static __always_inline void copy_tuple(struct pl_sock_event *e, const struct tcp_sock *tp,
				       __u16 family)
{
	const struct inet_sock *inet = &tp->inet_conn.icsk_inet;

	e->sport = bpf_ntohs(inet->inet_sport);
	e->dport = bpf_ntohs(inet->sk.__sk_common.skc_dport);
	if (family == AF_INET) {
		__u32 saddr = inet->inet_saddr;
		__u32 daddr = inet->sk.__sk_common.skc_daddr;

		__builtin_memcpy(e->saddr, &saddr, 4);
		__builtin_memcpy(e->daddr, &daddr, 4);
	} else {
		struct in6_addr saddr = inet->sk.__sk_common.skc_v6_rcv_saddr;
		struct in6_addr daddr = inet->sk.__sk_common.skc_v6_daddr;

		__builtin_memcpy(e->saddr, &saddr, 16);
		__builtin_memcpy(e->daddr, &daddr, 16);
	}
}

/* Reserves and fills the header of a socket event; NULL when filtered or full. */
static __always_inline struct pl_sock_event *reserve_sock_event(const struct sock *sk, __u16 type,
								__u16 family)
{
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	__u32 netns = sk->__sk_common.skc_net.net->ns.inum;

	if (targ_netns && targ_netns != netns)
		return NULL;
	struct pl_sock_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count_drop(PL_CNT_RINGBUF_FULL);
		return NULL;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->sk = (__u64)sk;
	e->netns = netns;
	e->type = type;
	e->sock_family = family;
	e->flags = 0;
	/* The tail is never left as the ring's stale bytes: the IPv4 case fills 4 of 16. */
	__builtin_memset(&e->sock_uid, 0,
			 sizeof(*e) - __builtin_offsetof(struct pl_sock_event, sock_uid));
	return e;
}

/*
 * The transitions the tracker takes the socket's options from (agent/tracker/tracker.cpp):
 * a socket's first change out of CLOSE (connect()'s SYN_SENT, listen()'s LISTEN: it may be seen
 * before the call's own event), inet_csk_clone_lock()'s child (LISTEN->SYN_RECV: the child's
 * first sight, its options copied from the listener), and the change into CLOSE that makes a
 * TIME_WAIT (inet_twsk_alloc() copies sk_reuse, sk_reuseport, ipv6only and sk_bound_dev_if into
 * the minisocket). Every other change keeps what the tracker already has.
 */
static __always_inline int wants_opts(int oldstate, int newstate)
{
	if (oldstate == TCP_CLOSE || (oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV))
		return 1;
	return newstate == TCP_CLOSE && (oldstate == TCP_FIN_WAIT2 || oldstate == TCP_CLOSING);
}

/*
 * tp_btf rather than tracepoint: the raw tracepoint hands over the struct sock itself, so no
 * trace record is filled first and the socket is read with plain loads, not probe reads.
 */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	/* The TCP socket (bpf_skc_to_tcp_sock() checks the protocol), typed for its inet fields. */
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);

	if (!tp)
		return 0;
	__u16 family = sk->__sk_common.skc_family;
	struct pl_sock_event *e = reserve_sock_event(sk, PL_EV_STATE, family);

	if (!e)
		return 0;
	e->old_state = oldstate;
	e->new_state = newstate;
	copy_tuple(e, tp, family);
	if (wants_opts(oldstate, newstate))
		e->flags |= read_sock_opts((struct sock *)sk, &e->opts, &e->sock_uid);
	/*
	 * tcp_time_wait() copies ts_recent_stamp into the timewait socket, and tcp_twsk_unique()
	 * lets connect() reuse a TIME_WAIT 4-tuple only when it is set.
	 */
	if (newstate == TCP_CLOSE && tp->rx_opt.ts_recent_stamp != 0)
		e->flags |= PL_F_TS_RECENT;
	bpf_ringbuf_submit(e, submit_flags(0, sizeof(*e)));
	return 0;
}

/* A received RST or a freed socket: the same arguments, different meaning. */
static __always_inline int emit_sk_event(struct sock *sk, __u16 type)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

	if (!tp)
		return 0;
	__u16 family = sk->__sk_common.skc_family;
	struct pl_sock_event *e = reserve_sock_event(sk, type, family);

	if (!e)
		return 0;
	e->old_state = sk->__sk_common.skc_state;
	e->new_state = e->old_state;
	copy_tuple(e, tp, family);
	bpf_ringbuf_submit(e, submit_flags(0, sizeof(*e)));
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tcp_receive_reset, struct sock *sk)
{
	return emit_sk_event(sk, PL_EV_RESET);
}

/*
 * An RST this side sends for one of its connections: tcp_send_active_reset() (close() with
 * unread data, SO_LINGER 0, tcp_abort()) reports the socket, after tcp_disconnect() has already
 * set it to CLOSE. A reset in reply to a segment that matches no full socket comes with a NULL,
 * request or timewait socket, and is not a close of ours: left out by bpf_skc_to_tcp_sock().
 */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tcp_send_reset, const struct sock *sk)
{
	if (!sk)
		return 0;
	return emit_sk_event((struct sock *)sk, PL_EV_RESET_SENT);
}

/*
 * Closing a socket that never changed state (bound, not listening) fires no
 * inet_sock_set_state; tcp_v4_destroy_sock() and tcp_v6_destroy_sock() fire this one.
 */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tcp_destroy_sock, struct sock *sk)
{
	return emit_sk_event(sk, PL_EV_DESTROY);
}
