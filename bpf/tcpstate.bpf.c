// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * TCP state changes and received resets. The tracker rebuilds per-socket state from these:
 * no event ever carries newstate TIME_WAIT (tcp_time_wait() allocates a separate minisocket and
 * the full socket goes to CLOSE), so TIME_WAIT is inferred from FIN_WAIT2->CLOSE and
 * CLOSING->CLOSE, unless tcp_receive_reset fired first (docs/kernel-rules.md section 5).
 */
#include "common.bpf.h"

/*
 * Both tracepoints lay out their addresses alike; copy them into the event. The verifier forbids
 * loads through an offset ctx pointer, so the arrays are copied with a probe read.
 */
static __always_inline void fill_endpoints(struct pl_event *e, __u16 family, __u16 sport,
					   __u16 dport, const __u8 *saddr, const __u8 *daddr,
					   const __u8 *saddr_v6, const __u8 *daddr_v6)
{
	e->local.port = sport;
	e->remote.port = dport;
	if (family == AF_INET) {
		e->local.family = PL_AF_INET;
		e->remote.family = PL_AF_INET;
		bpf_probe_read_kernel(e->local.addr, 4, saddr);
		bpf_probe_read_kernel(e->remote.addr, 4, daddr);
	} else {
		e->local.family = PL_AF_INET6;
		e->remote.family = PL_AF_INET6;
		bpf_probe_read_kernel(e->local.addr, 16, saddr_v6);
		bpf_probe_read_kernel(e->remote.addr, 16, daddr_v6);
	}
}

/* Reserves and fills the common part of a state or reset event; NULL when filtered or full. */
static __always_inline struct pl_event *reserve_sock_event(struct sock *sk, __u16 type,
							   __u16 family)
{
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	__u32 netns = sock_netns(sk);

	if (targ_netns && targ_netns != netns)
		return NULL;
	struct pl_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count_drop(PL_CNT_RINGBUF_FULL);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->type = type;
	e->sk = (__u64)sk;
	e->fd = -1;
	e->netns = netns;
	e->sock_family = family;
	e->sock_type = 1; /* SOCK_STREAM */
	e->protocol = IPPROTO_TCP;
	/* Often softirq context: pid and comm are whoever the CPU was running, not the owner. */
	fill_task(e);
	return e;
}

SEC("tracepoint/sock/inet_sock_set_state")
int inet_sock_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	struct sock *sk = (struct sock *)ctx->skaddr;
	struct pl_event *e = reserve_sock_event(sk, PL_EV_STATE, ctx->family);

	if (!e)
		return 0;
	e->old_state = ctx->oldstate;
	e->new_state = ctx->newstate;
	fill_endpoints(e, ctx->family, ctx->sport, ctx->dport, ctx->saddr, ctx->daddr,
		       ctx->saddr_v6, ctx->daddr_v6);
	read_sock_opts(sk, e);
	/*
	 * tcp_time_wait() copies ts_recent_stamp into the timewait socket, and tcp_twsk_unique()
	 * lets connect() reuse a TIME_WAIT 4-tuple only when it is set.
	 */
	if (ctx->newstate == TCP_CLOSE &&
	    BPF_CORE_READ((struct tcp_sock *)sk, rx_opt.ts_recent_stamp) != 0)
		e->flags |= PL_F_TS_RECENT;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* A received RST or a freed socket: the same tracepoint layout, different meaning. */
static __always_inline int emit_sk_event(struct trace_event_raw_tcp_event_sk *ctx, __u16 type)
{
	struct sock *sk = (struct sock *)ctx->skaddr;
	struct pl_event *e = reserve_sock_event(sk, type, ctx->family);

	if (!e)
		return 0;
	e->old_state = BPF_CORE_READ(sk, __sk_common.skc_state);
	e->new_state = e->old_state;
	fill_endpoints(e, ctx->family, ctx->sport, ctx->dport, ctx->saddr, ctx->daddr,
		       ctx->saddr_v6, ctx->daddr_v6);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/tcp/tcp_receive_reset")
int tcp_receive_reset(struct trace_event_raw_tcp_event_sk *ctx)
{
	return emit_sk_event(ctx, PL_EV_RESET);
}

/*
 * Closing a socket that never changed state (bound, not listening) fires no
 * inet_sock_set_state; tcp_v4_destroy_sock() and tcp_v6_destroy_sock() fire this one.
 */
SEC("tracepoint/tcp/tcp_destroy_sock")
int tcp_destroy_sock(struct trace_event_raw_tcp_event_sk *ctx)
{
	return emit_sk_event(ctx, PL_EV_DESTROY);
}
