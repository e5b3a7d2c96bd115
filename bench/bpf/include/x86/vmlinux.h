/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The project's pinned kernel types, bpf/include/x86/vmlinux.h: portlens_bpf_object() puts
 * include/<arch> of the calling directory on the include path, so this directory forwards there.
 */
#include "../../../../bpf/include/x86/vmlinux.h"
