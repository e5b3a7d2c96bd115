#!/usr/bin/env bash
# Installs what portlens needs to build, run and test, from Debian 12 packages only.
# Idempotent and quiet when everything is already there. Run as root.
set -euo pipefail

packages=(
  # toolchain; libclang-rt-14-dev holds clang's sanitizer and libFuzzer runtimes
  # (scripts/sanitize.sh)
  g++ cmake make pkg-config clang libclang-rt-14-dev
  # BPF: libbpf (CO-RE loader), bpftool (skeletons), libelf/zlib (libbpf's own needs)
  libbpf-dev bpftool libelf-dev zlib1g-dev
  # C++ libraries
  libcli11-dev nlohmann-json3-dev libfmt-dev libspdlog-dev libmnl-dev prometheus-cpp-dev
  # the agent tells systemd it is ready and feeds its watchdog (sd_notify, Type=notify);
  # `portlens top` draws with ncurses
  libsystemd-dev libncurses-dev
  # the HTTP server (exporters/http): libmicrohttpd (built with GnuTLS), GnuTLS itself for the
  # certificate checks, yaml-cpp for --web.config.file, libcrypt for bcrypt (crypt_r)
  libmicrohttpd-dev libgnutls28-dev libyaml-cpp-dev libcrypt-dev
  # its tests: openssl makes the throwaway CA and certificates, htpasswd (apache2-utils) the
  # bcrypt hashes
  openssl apache2-utils
  # tests: GoogleTest; iproute2 for `ip netns`; util-linux for setpriv
  googletest libgtest-dev libgmock-dev iproute2 util-linux
  # the `portlens top` kernel test drives it in a private tmux server
  tmux
  # tests of the exporter: promtool (Prometheus) and curl
  prometheus curl
  # deployment checks (tests/deploy): PyYAML for the Kubernetes manifests, systemd-analyze for
  # the unit, dpkg-shlibdeps (dpkg-dev, which needs file) for the .deb's Depends
  python3-yaml systemd dpkg-dev file
  # the Debian package (cmake/ManPage.cmake, tests/deploy/check_package.sh): help2man makes the
  # man page from --help; lintian checks the .deb; hardening-check (devscripts, installed
  # without its recommends like everything here) checks the binary; zsh checks the completion
  help2man lintian devscripts zsh
  # the monitoring mixin (dashboards/mixin): jsonnet renders the rules and the dashboard, and
  # the mixin.rendered and deploy.kustomize tests render them again. deploy.kustomize also needs
  # kubectl 1.21 or later for `kubectl kustomize` (kustomize v4+), which the project's machines
  # have (package kubectl). Debian 12's kubernetes-client is not added: it is kubectl 1.20, whose
  # kustomize v2.0.3 cannot build the overlays (no directories in `resources:`, no `patches:`,
  # no components), and its /usr/bin/kubectl would clash with the kubectl package.
  jsonnet
  # benchmarks: bpftrace, the counting tracer `portlens_bench cost` compares the agent with
  # (without it, the bench counts with its own BPF programs and says so)
  bpftrace
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run this script as root (sudo $0)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
