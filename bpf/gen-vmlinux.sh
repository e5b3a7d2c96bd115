#!/usr/bin/env bash
# Regenerates the pinned bpf/include/<arch>/vmlinux.h from a kernel's BTF.
#
# The header is committed, never generated during a build: CO-RE relocations make one header
# work on every kernel with BTF, and a build must not depend on the build host's kernel.
# Regenerate it only to use kernel types the pinned header lacks, then commit the result.
#
# usage: bpf/gen-vmlinux.sh [BTF_FILE] [ARCH]   (defaults: /sys/kernel/btf/vmlinux, x86)
set -euo pipefail
btf=${1:-/sys/kernel/btf/vmlinux}
arch=${2:-x86}
here=$(cd "$(dirname "$0")" && pwd)
out="$here/include/$arch/vmlinux.h"
if [ ! -r "$btf" ]; then
  echo "gen-vmlinux: cannot read BTF at $btf (needs a kernel built with CONFIG_DEBUG_INFO_BTF)" >&2
  exit 1
fi
command -v bpftool >/dev/null || { echo "gen-vmlinux: bpftool not found (apt-get install bpftool)" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
bpftool btf dump file "$btf" format c >"$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "wrote $out ($(wc -l <"$out") lines) from $btf, kernel $(uname -r)"
