// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * bind(), listen() and connect() capture. At syscall entry we read what was asked (the sockaddr
 * from user memory) and the socket's options (from the fd's struct sock), keep them per thread,
 * and at syscall exit emit one event with the result. A failed bind() leaves the socket's address
 * zeroed, so the requested address must come from the sockaddr, never from the socket afterwards.
 */
#include "common.bpf.h"

/* Calls between their entry and exit, by thread. One syscall at a time per thread. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct pl_event);
} inflight SEC(".maps");

/* A zeroed event to build in: too large for the 512-byte BPF stack alongside the sockaddrs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pl_event);
} scratch SEC(".maps");

/* current->files->fdt->fd[fd]->private_data->sk, or NULL when fd is not a socket. */
static __always_inline struct sock *sock_from_fd(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;

	if (!fdt || fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *sock = BPF_CORE_READ(file, private_data);

	return BPF_CORE_READ(sock, sk);
}

/* The address the caller passed. AF_UNSPEC (connect's "disconnect") leaves the family NONE. */
static __always_inline void read_sockaddr(struct pl_event *e, const void *uaddr, int addrlen)
{
	__u16 family = 0;

	if (!uaddr || addrlen < (int)sizeof(family))
		return;
	if (bpf_probe_read_user(&family, sizeof(family), uaddr)) {
		e->flags |= PL_F_REQ_FAULT;
		return;
	}
	if (family == AF_INET && addrlen >= (int)sizeof(struct sockaddr_in)) {
		struct sockaddr_in sin;

		if (bpf_probe_read_user(&sin, sizeof(sin), uaddr)) {
			e->flags |= PL_F_REQ_FAULT;
			return;
		}
		e->req.family = PL_AF_INET;
		e->req.port = bpf_ntohs(sin.sin_port);
		__builtin_memcpy(e->req.addr, &sin.sin_addr.s_addr, 4);
	} else if (family == AF_INET6 && addrlen >= 24 /* SIN6_LEN_RFC2133, inet6_bind() */) {
		struct sockaddr_in6 sin6 = {};

		/* The scope id is optional: RFC 2133 sockaddrs end before it. */
		int len = addrlen >= (int)sizeof(sin6) ? (int)sizeof(sin6) : 24;

		if (bpf_probe_read_user(&sin6, len & 0x1f, uaddr)) {
			e->flags |= PL_F_REQ_FAULT;
			return;
		}
		e->req.family = PL_AF_INET6;
		e->req.port = bpf_ntohs(sin6.sin6_port);
		e->req.scope_id = sin6.sin6_scope_id;
		__builtin_memcpy(e->req.addr, &sin6.sin6_addr, 16);
	}
	e->flags |= PL_F_REQ_VALID;
}

static __always_inline int on_enter(__u16 type, int fd, const void *uaddr, int addrlen, int backlog)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 zero = 0;

	if (targ_tgid && targ_tgid != (__u32)(id >> 32))
		return 0;
	struct sock *sk = sock_from_fd(fd);

	if (!sk)
		return 0;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family != AF_INET && family != AF_INET6)
		return 0;
	/* sk_protocol was a bitfield before 5.6; the probed read handles both layouts. */
	__u16 protocol = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);

	if (!is_port_protocol(protocol))
		return 0;
	__u32 netns = sock_netns(sk);

	if (targ_netns && targ_netns != netns)
		return 0;

	struct pl_event *e = bpf_map_lookup_elem(&scratch, &zero);

	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->type = type;
	e->sk = (__u64)sk;
	e->fd = fd;
	e->backlog = backlog;
	e->netns = netns;
	e->sock_family = family;
	e->protocol = protocol;
	e->sock_type = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_type);
	e->enter_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	fill_task(e);
	e->flags |= read_sock_opts(sk, &e->opts, &e->sock_uid);
	if (uaddr)
		read_sockaddr(e, uaddr, addrlen);
	if (bpf_map_update_elem(&inflight, &id, e, BPF_ANY))
		count_drop(PL_CNT_INFLIGHT_FULL);
	return 0;
}

static __always_inline int on_exit(__u16 type, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pl_event *pending = bpf_map_lookup_elem(&inflight, &id);

	if (!pending)
		return 0;
	/* An entry left by another call (its exit was never seen) must not pose as this one. */
	if (pending->type != type) {
		bpf_map_delete_elem(&inflight, &id);
		return 0;
	}
	struct pl_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count_drop(PL_CNT_RINGBUF_FULL);
		bpf_map_delete_elem(&inflight, &id);
		return 0;
	}
	__builtin_memcpy(e, pending, sizeof(*e));
	bpf_map_delete_elem(&inflight, &id);
	e->ts_ns = bpf_ktime_get_ns();
	e->ret = (__s32)ret;
	/* What the call left: bind's port (also bind(0)'s pick), connect's chosen source. */
	read_local((const struct sock *)e->sk, e->sock_family, &e->local);
	/* A failed call is diagnosed at once (EINPROGRESS, a non-blocking connect(), is none). */
	bpf_ringbuf_submit(e, submit_flags(ret < 0 && ret != -PL_EINPROGRESS, sizeof(*e)));
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_bind")
int sys_enter_bind(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(PL_EV_BIND, (int)ctx->args[0], (const void *)ctx->args[1],
			(int)ctx->args[2], 0);
}

SEC("tracepoint/syscalls/sys_exit_bind")
int sys_exit_bind(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(PL_EV_BIND, ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_listen")
int sys_enter_listen(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(PL_EV_LISTEN, (int)ctx->args[0], NULL, 0, (int)ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_listen")
int sys_exit_listen(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(PL_EV_LISTEN, ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_connect")
int sys_enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(PL_EV_CONNECT, (int)ctx->args[0], (const void *)ctx->args[1],
			(int)ctx->args[2], 0);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int sys_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(PL_EV_CONNECT, ctx->ret);
}
