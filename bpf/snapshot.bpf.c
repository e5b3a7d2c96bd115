// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Socket snapshot: iter/tcp and iter/udp programs that write one struct pl_sock_record per
 * socket of the network namespace the iterator was created in (bpf_iter_init_seq_net() takes
 * the creating thread's netns). The agent setns()es a dedicated thread before bpf_iter_create().
 *
 * iter/tcp walks the listening hash and the established hash (bpf_iter_tcp_batch()): LISTEN,
 * connected and closing sockets, TIME_WAIT minisockets and request minisockets. Sockets that are
 * only bound live in the bind hash alone, which no iterator walks: iter/task_file finds them
 * through the file descriptors that hold them.
 *
 * This object deliberately does not include common.bpf.h: it shares no map with the tracer.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "events.h"

/* The layout of bpf/events.h this object was built with; the agent refuses another. */
const volatile __u32 pl_abi_version = PL_ABI_VERSION;

#define AF_INET 2
#define AF_INET6 10
/* include/net/sock.h */
#define SOCK_BINDPORT_LOCK 8
#define S_IFMT 00170000
#define S_IFSOCK 0140000

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Addresses and ports, as sock_common holds them for every kind of socket. */
static __always_inline void read_endpoints(const struct sock_common *skc, __u16 family,
					   struct pl_sock_record *r)
{
	r->local.port = BPF_CORE_READ(skc, skc_num);
	r->remote.port = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	if (family == AF_INET) {
		__be32 saddr = BPF_CORE_READ(skc, skc_rcv_saddr);
		__be32 daddr = BPF_CORE_READ(skc, skc_daddr);

		r->local.family = PL_AF_INET;
		r->remote.family = PL_AF_INET;
		__builtin_memcpy(r->local.addr, &saddr, sizeof(saddr));
		__builtin_memcpy(r->remote.addr, &daddr, sizeof(daddr));
	} else {
		/*
		 * An AF_INET6 socket keeps an IPv4 receive address too: the mapped address, 0 for
		 * [::], LOOPBACK4_IPV6 (127.0.0.6) for a specific IPv6 address (__inet6_bind(),
		 * tcp_v6_connect(), ip6_datagram_dst_update()). inet_rcv_saddr_equal() compares it
		 * with a new AF_INET socket's address unless the socket is v6only.
		 */
		__be32 v4 = BPF_CORE_READ(skc, skc_rcv_saddr);

		r->local.family = PL_AF_INET6;
		r->remote.family = PL_AF_INET6;
		BPF_CORE_READ_INTO(&r->local.addr, skc, skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&r->remote.addr, skc, skc_v6_daddr);
		__builtin_memcpy(r->v4_rcv_saddr, &v4, sizeof(v4));
		r->flags |= PL_SR_F_V4_RCV_SADDR;
	}
}

/* What every socket kind has in sock_common: identity, netns, reuse flags, device. */
static __always_inline int fill_common(const struct sock_common *skc, __u16 protocol,
				       struct pl_sock_record *r)
{
	__u16 family = BPF_CORE_READ(skc, skc_family);

	if (family != AF_INET && family != AF_INET6)
		return -1;
	r->sk = (__u64)skc;
	r->family = family;
	r->protocol = protocol;
	r->state = BPF_CORE_READ(skc, skc_state);
	r->netns = BPF_CORE_READ(skc, skc_net.net, ns.inum);
	r->bound_dev_if = BPF_CORE_READ(skc, skc_bound_dev_if);
	/* Bitfields: their offsets moved between kernels, the probed read follows them. */
	r->reuse = BPF_CORE_READ_BITFIELD_PROBED(skc, skc_reuse);
	if (BPF_CORE_READ_BITFIELD_PROBED(skc, skc_reuseport))
		r->flags |= PL_SR_F_REUSEPORT;
	if (BPF_CORE_READ_BITFIELD_PROBED(skc, skc_ipv6only))
		r->flags |= PL_SR_F_V6ONLY;
	r->now_jiffies = bpf_jiffies64();
	read_endpoints(skc, family, r);
	return 0;
}

/* Fields only a full struct sock has: never read them from a minisocket. */
static __always_inline void fill_full(struct sock *sk, struct pl_sock_record *r)
{
	/* sk_userlocks was a 4-bit field before 5.x kernels made it a u8. */
	__u8 userlocks = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_userlocks);

	r->flags |= PL_SR_F_FULL;
	r->uid = BPF_CORE_READ(sk, sk_uid.val);
	/* sock_i_ino(): the inode of the struct socket's file, 0 for a sock without one. */
	r->ino = BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);
	/* __inet_bind() and inet_csk_get_port() callers set it for an explicitly chosen port. */
	if (userlocks & SOCK_BINDPORT_LOCK)
		r->flags |= PL_SR_F_BINDPORT_LOCK;
}

/*
 * The TCP port's bind bucket (icsk_bind_hash, or tw_tb for a timewait sock): whether bind() or
 * listen() made or joined it, the test __inet_hash_connect() applies before reusing a port; and
 * the fast-path state inet_csk_get_port() tests before any conflict check (fastreuse,
 * sk_reuseport_match()), which inet_csk_update_fastreuse() updates on every successful
 * get_port, so it depends on the order the owners came in.
 */
static __always_inline void read_bucket(const struct inet_bind_bucket *tb, struct pl_sock_record *r)
{
	if (!tb)
		return;
	r->flags |= PL_SR_F_BUCKET_READ;
	r->fastreuse = BPF_CORE_READ(tb, fastreuse);
	r->fastreuseport = BPF_CORE_READ(tb, fastreuseport);
	if (r->fastreuse >= 0 || r->fastreuseport >= 0)
		r->flags |= PL_SR_F_BUCKET_BOUND;
	r->fastuid = BPF_CORE_READ(tb, fastuid.val);
	r->bucket_l3mdev = BPF_CORE_READ(tb, l3mdev);
	r->fast_sk_family = BPF_CORE_READ(tb, fast_sk_family);
	r->fast_ipv6_only = BPF_CORE_READ(tb, fast_ipv6_only);
	BPF_CORE_READ_INTO(&r->fast_v6_rcv_saddr, tb, fast_v6_rcv_saddr);
	BPF_CORE_READ_INTO(&r->fast_rcv_saddr, tb, fast_rcv_saddr);
}

/* Chain steps walked to find a UDP socket in its slot; a longer chain leaves it unknown. */
#define PL_UDP_CHAIN_MAX 256

/*
 * The UDP socket's place in its port's primary hash slot: udp_lib_lport_inuse() walks that chain
 * from its head and the first conflicting socket decides (udp_lib_get_port() adds most sockets
 * at the head, IPv6 SO_REUSEPORT ones at the tail), and the slot's count decides whether the
 * kernel walks it at all (more than 10: udp_lib_lport_inuse2() on the hash2 slots). iter/udp
 * walks the hash2 slots, so the primary slot is found here as udp_lib_get_port() finds it:
 * udptable->hash[udp_hashfn(net, port, mask)], udp_hashfn = (port + net_hash_mix(net)) & mask.
 */
static __always_inline void read_udp_chain(struct sock *sk, struct pl_sock_record *r)
{
	struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
	struct udp_table *table;
	struct hlist_node *node;
	struct hlist_node *self = &sk->__sk_common.skc_node;
	struct udp_hslot *slot;
	__u32 index;

	if (!bpf_core_field_exists(net->ipv4.udp_table) || !bpf_core_field_exists(net->hash_mix))
		return;
	table = BPF_CORE_READ(net, ipv4.udp_table);
	if (!table)
		return;
	index = ((__u32)r->local.port + BPF_CORE_READ(net, hash_mix)) & BPF_CORE_READ(table, mask);
	slot = (struct udp_hslot *)((char *)BPF_CORE_READ(table, hash) +
				    (__u64)index * bpf_core_type_size(struct udp_hslot));
	node = BPF_CORE_READ(slot, head.first);
	for (__u32 i = 0; i < PL_UDP_CHAIN_MAX && node; i++) {
		if (node == self) {
			r->udp_chain_pos = i;
			r->udp_slot_count = BPF_CORE_READ(slot, count);
			r->flags |= PL_SR_F_UDP_CHAIN;
			return;
		}
		node = BPF_CORE_READ(node, next);
	}
}

SEC("iter/tcp")
int snapshot_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct pl_sock_record r = {};

	if (!skc)
		return 0;
	if (fill_common(skc, IPPROTO_TCP, &r))
		return 0;
	/* Request minisockets (SYN_RECV) own no port: the listener does (inet_csk_get_port). */
	if (r.state == TCP_NEW_SYN_RECV)
		return 0;
	if (r.state == TCP_TIME_WAIT) {
		struct tcp_timewait_sock *tw = bpf_skc_to_tcp_timewait_sock(skc);

		if (!tw)
			return 0;
		r.flags |= PL_SR_F_TIMEWAIT;
		r.tw_substate = BPF_CORE_READ(tw, tw_sk.tw_substate);
		/*
		 * inet_twsk_schedule() arms tw_timer for the rest of the lifetime;
		 * inet_twsk_diag_fill() reports expires - jiffies, as we do (userspace converts
		 * with the measured HZ).
		 */
		r.tw_expires = BPF_CORE_READ(tw, tw_sk.tw_timer.expires);
		r.flags |= PL_SR_F_TW_TIMER;
		/* tcp_twsk_unique() allows reuse only when the connection carried timestamps. */
		if (BPF_CORE_READ(tw, tw_ts_recent_stamp))
			r.flags |= PL_SR_F_TW_TIMESTAMPS;
		read_bucket(BPF_CORE_READ(tw, tw_sk.tw_tb), &r);
	} else {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);

		if (!tp)
			return 0;
		fill_full((struct sock *)tp, &r);
		read_bucket(BPF_CORE_READ(tp, inet_conn.icsk_bind_hash), &r);
		if (r.state == TCP_LISTEN) {
			/* What ss -ltn shows as Recv-Q and Send-Q (tcp_diag_get_info()). */
			r.ack_backlog = BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_ack_backlog);
			r.max_ack_backlog =
			    BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_max_ack_backlog);
			r.syn_qlen = BPF_CORE_READ(tp, inet_conn.icsk_accept_queue.qlen.counter);
			r.flags |= PL_SR_F_LISTEN_QUEUE;
		}
	}
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

SEC("iter/udp")
int snapshot_udp(struct bpf_iter__udp *ctx)
{
	struct udp_sock *udp = ctx->udp_sk;
	struct pl_sock_record r = {};

	if (!udp)
		return 0;
	struct sock *sk = (struct sock *)udp;

	if (fill_common(&sk->__sk_common, IPPROTO_UDP, &r))
		return 0;
	fill_full(sk, &r);
	if (r.local.port)
		read_udp_chain(sk, &r);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

/*
 * Bound-only TCP sockets: in state CLOSE and holding a bind bucket (icsk_bind_hash, set by
 * inet_bind_hash() and cleared by __inet_put_port()), which is what makes them port owners for
 * inet_csk_bind_conflict(). Every file of every process is visited, so only sockets of the
 * reading thread's netns are written; a socket shared by several descriptors is written once per
 * descriptor and userspace keeps one.
 */
SEC("iter/task_file")
int snapshot_bound(struct bpf_iter__task_file *ctx)
{
	struct file *file = ctx->file;
	struct pl_sock_record r = {};

	if (!file)
		return 0;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return 0;
	/* sock_from_file(): a socket file's private_data is its struct socket, which points back.
	 */
	struct socket *sock = BPF_CORE_READ(file, private_data);

	if (!sock || BPF_CORE_READ(sock, file) != file)
		return 0;
	struct sock *sk = BPF_CORE_READ(sock, sk);

	if (!sk || BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_CLOSE)
		return 0;
	struct inet_bind_bucket *tb =
	    BPF_CORE_READ((struct inet_connection_sock *)sk, icsk_bind_hash);

	if (!tb)
		return 0;
	struct task_struct *reader = (struct task_struct *)bpf_get_current_task();

	if (BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) !=
	    BPF_CORE_READ(reader, nsproxy, net_ns, ns.inum))
		return 0;
	if (fill_common(&sk->__sk_common, IPPROTO_TCP, &r))
		return 0;
	fill_full(sk, &r);
	read_bucket(tb, &r);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

/*
 * HZ, the jiffies per second that TIME_WAIT timers count in, is a build option. Two sysctls of
 * the caller's netns are kept in jiffies and shown in whole seconds (proc_dointvec_jiffies():
 * a write stores seconds * HZ), so each nonzero one gives HZ exactly: userspace divides what
 * this program reads by what /proc/sys shows. Run with BPF_PROG_TEST_RUN; the context is
 * __u64[3]: jiffies now, tcp_fin_timeout and tcp_keepalive_time in jiffies.
 */
SEC("syscall")
int clock_sample(__u64 *out)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct net *net = BPF_CORE_READ(task, nsproxy, net_ns);

	out[0] = bpf_jiffies64();
	out[1] = BPF_CORE_READ(net, ipv4.sysctl_tcp_fin_timeout);
	out[2] = BPF_CORE_READ(net, ipv4.sysctl_tcp_keepalive_time);
	return 0;
}
