// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The one object file that defines the shared maps and tunables (see common.bpf.h). */
#define PL_DEFINE_SHARED
#include "common.bpf.h"

/* GPL-compatible: bpf_probe_read_user and the tracing helpers require it. */
char LICENSE[] SEC("license") = "Dual BSD/GPL";
