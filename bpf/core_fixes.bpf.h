/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Kernel-version differences, isolated here. Each flavour struct (type___name) lets CO-RE
 * relocate against older layouts; bpf_core_field_exists() picks the layout at load time.
 */
#ifndef PORTLENS_CORE_FIXES_BPF_H
#define PORTLENS_CORE_FIXES_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/*
 * Before 6.6, inet_sock kept these options as bitfields; commit 4bd0623f04ee ("inet: move
 * inet->freebind to inet->inet_flags") and its siblings folded them into inet_flags.
 */
struct inet_sock___pre_inet_flags {
	__u8 freebind : 1;
	__u8 transparent : 1;
	__u8 bind_address_no_port : 1;
} __attribute__((preserve_access_index));

/* include/net/inet_sock.h, enum INET_FLAGS_* (an anonymous enum, so not relocatable). */
#define PL_INET_FLAGS_FREEBIND 11
#define PL_INET_FLAGS_TRANSPARENT 15
#define PL_INET_FLAGS_BIND_ADDRESS_NO_PORT 18

/* Returns 1 when the options came from inet_flags, 0 when from the older bitfields. */
static __always_inline int read_inet_options(struct sock *sk, __u8 *freebind, __u8 *transparent,
					     __u8 *bind_address_no_port)
{
	struct inet_sock *inet = (struct inet_sock *)sk;

	if (bpf_core_field_exists(inet->inet_flags)) {
		unsigned long f = BPF_CORE_READ(inet, inet_flags);

		*freebind = (f >> PL_INET_FLAGS_FREEBIND) & 1;
		*transparent = (f >> PL_INET_FLAGS_TRANSPARENT) & 1;
		*bind_address_no_port = (f >> PL_INET_FLAGS_BIND_ADDRESS_NO_PORT) & 1;
		return 1;
	}
	struct inet_sock___pre_inet_flags *old = (void *)sk;

	*freebind = BPF_CORE_READ_BITFIELD_PROBED(old, freebind);
	*transparent = BPF_CORE_READ_BITFIELD_PROBED(old, transparent);
	*bind_address_no_port = BPF_CORE_READ_BITFIELD_PROBED(old, bind_address_no_port);
	return 0;
}

#endif /* PORTLENS_CORE_FIXES_BPF_H */
