/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Maps, tunables and helpers shared by every portlens BPF program. */
#ifndef PORTLENS_COMMON_BPF_H
#define PORTLENS_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "core_fixes.bpf.h"
#include "events.h"

#define AF_INET 2
#define AF_INET6 10
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define PL_EINPROGRESS 115 /* include/uapi/asm-generic/errno.h */

/*
 * Shared maps. Each type is spelled once, here; maps.bpf.c defines them and every other object
 * file sees them as extern, resolved when bpftool links the objects into portlens.bpf.o.
 */
#define PL_EVENTS_MAP_TYPE                                                                         \
	struct {                                                                                   \
		__uint(type, BPF_MAP_TYPE_RINGBUF);                                                \
		__uint(max_entries, 4 * 1024 * 1024); /* overridden at load time */                \
	}
#define PL_COUNTERS_MAP_TYPE                                                                       \
	struct {                                                                                   \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                                           \
		__uint(max_entries, PL_CNT_MAX);                                                   \
		__type(key, __u32);                                                                \
		__type(value, __u64);                                                              \
	}

/*
 * Tunables, set by the agent between open and load; 0 means "no filter". The filters exist so
 * that `portlens trace --pid/--netns` costs nothing for the rest of the host.
 */
#ifdef PL_DEFINE_SHARED
PL_EVENTS_MAP_TYPE events SEC(".maps");
PL_COUNTERS_MAP_TYPE counters SEC(".maps");
const volatile __u32 targ_tgid = 0;
const volatile __u32 targ_netns = 0;
const volatile __u64 wakeup_bytes = 0;
/* The layout of bpf/events.h this object was built with; the agent refuses another. */
const volatile __u32 pl_abi_version = PL_ABI_VERSION;
#else
extern PL_EVENTS_MAP_TYPE events SEC(".maps");
extern PL_COUNTERS_MAP_TYPE counters SEC(".maps");
extern const volatile __u32 targ_tgid;
extern const volatile __u32 targ_netns;
extern const volatile __u64 wakeup_bytes;
extern const volatile __u32 pl_abi_version;
#endif

/* Past wakeup_bytes, the agent is woken once per this many bytes, not for every record. */
#define PL_WAKEUP_STEP (64 * 1024)

/*
 * How a record of size bytes is submitted. The agent drains the ring on a bounded interval
 * (BpfTracer::poll), so waking it for a record only costs: bpf_ringbuf_commit() queues an
 * irq_work, a self-IPI (a VM exit under a hypervisor), and the agent switches in. It is woken
 * for anything urgent (a failed call, to be diagnosed at once) and when the ring holds more than
 * wakeup_bytes, which the agent sets to half the ring so that a burst never fills it unseen: then
 * once per PL_WAKEUP_STEP bytes, as the records cross each step (two CPUs may both miss one
 * crossing; the next catches it). FORCE_WAKEUP, as the default wakes only a consumer that has
 * caught up, and one that sleeps while records wait has not. wakeup_bytes 0 keeps the default.
 */
static __always_inline __u64 submit_flags(int urgent, __u64 size)
{
	if (!wakeup_bytes)
		return 0;
	if (urgent)
		return BPF_RB_FORCE_WAKEUP;
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	if (avail > wakeup_bytes && avail >= size &&
	    (avail - size) / PL_WAKEUP_STEP != avail / PL_WAKEUP_STEP)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/* Never lose an event silently: every drop is counted where userspace can read it. */
static __always_inline void count_drop(enum pl_counter which)
{
	__u32 key = which;
	__u64 *v = bpf_map_lookup_elem(&counters, &key);

	if (v)
		*v += 1;
}

static __always_inline int is_port_protocol(__u16 protocol)
{
	return protocol == IPPROTO_TCP || protocol == IPPROTO_UDP || protocol == IPPROTO_UDPLITE ||
	       protocol == IPPROTO_MPTCP || protocol == IPPROTO_SCTP;
}

static __always_inline __u32 sock_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

static __always_inline void fill_task(struct pl_event *e)
{
	__u64 id = bpf_get_current_pid_tgid();

	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

/* The socket's bound local address and port, as the kernel holds them now. */
static __always_inline void read_local(const struct sock *sk, __u16 family, struct pl_endpoint *ep)
{
	ep->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (family == AF_INET) {
		__be32 a = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);

		ep->family = PL_AF_INET;
		__builtin_memcpy(ep->addr, &a, sizeof(a));
	} else {
		ep->family = PL_AF_INET6;
		BPF_CORE_READ_INTO(&ep->addr, sk, __sk_common.skc_v6_rcv_saddr);
	}
}

/*
 * Everything the kernel's port rules look at on a socket (docs/kernel-rules.md section 1), and
 * sk_uid; returns the PL_F_* flags to add.
 */
static __always_inline __u32 read_sock_opts(struct sock *sk, struct pl_sock_opts *opts,
					    __u32 *sock_uid)
{
	struct sock_common *skc = &sk->__sk_common;
	__u8 state = BPF_CORE_READ(skc, skc_state);
	__u32 flags = PL_F_OPTS_VALID;

	opts->reuseaddr = BPF_CORE_READ_BITFIELD_PROBED(skc, skc_reuse);
	opts->reuseport = BPF_CORE_READ_BITFIELD_PROBED(skc, skc_reuseport);
	opts->v6only = BPF_CORE_READ_BITFIELD_PROBED(skc, skc_ipv6only);
	opts->bound_dev_if = BPF_CORE_READ(skc, skc_bound_dev_if);
	if (read_inet_options(sk, &opts->freebind, &opts->transparent, &opts->bind_address_no_port))
		flags |= PL_F_INET_FLAGS;
	/* sk_uid lives in struct sock: only full sockets have it (not TIME_WAIT/NEW_SYN_RECV). */
	if (state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV)
		*sock_uid = BPF_CORE_READ(sk, sk_uid.val);
	return flags;
}

#endif /* PORTLENS_COMMON_BPF_H */
