// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The programs `portlens_bench cost` attaches itself, each to every tracepoint the portlens
 * programs use (the bench attaches them; the sections here name no tracepoint). do_nothing is the
 * floor: what any BPF tracer of these events pays before doing anything. count_event counts the
 * events by tracepoint, as bpftrace's `@[probe] = count()` does; the bench uses it when bpftrace
 * cannot run. The bench gives each attachment its tracepoint's index as the BPF cookie.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define COST_MAX_TRACEPOINTS 32

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COST_MAX_TRACEPOINTS);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

SEC("tracepoint")
int do_nothing(void *ctx)
{
	return 0;
}

SEC("tracepoint")
int count_event(void *ctx)
{
	__u32 key = (__u32)bpf_get_attach_cookie(ctx);
	__u64 *n = bpf_map_lookup_elem(&counts, &key);

	if (n)
		*n += 1;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
