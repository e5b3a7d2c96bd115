#!/bin/sh
# Builds the Debian package from a finished build and checks what is in it.
#   check_package.sh BUILD_DIR
# cpack writes into a temporary directory (the build directory keeps no package), then:
# dpkg-deb -c for the files and their modes, -f for the control fields (Depends must name
# real runtime packages, and cover every library the binary links), -I for conffiles and
# maintainer scripts, and -x to run the packaged binary. Then the Debian side: lintian (no
# error, no warning), hardening-check on the binary (every protection "yes"), the man page
# (man --warnings), the completion scripts (bash -n, zsh -n), the copyright and gzipped
# changelog, and the maintainer scripts run against a scratch root (DPKG_ROOT) for install,
# upgrade, remove and purge.
set -eu

build=$1

fail() {
  echo "check_package: $*" >&2
  exit 1
}

for tool in cpack dpkg-deb readelf ldd; do
  command -v "$tool" >/dev/null || fail "$tool is missing (Debian packages cmake, dpkg, binutils, libc-bin)"
done
for tool in lintian:lintian hardening-check:devscripts man:man-db deb-systemd-helper:init-system-helpers \
  dpkg-parsechangelog:dpkg-dev; do
  command -v "${tool%%:*}" >/dev/null ||
    fail "${tool%%:*} is missing (Debian package ${tool#*:}; scripts/install-deps.sh installs it)"
done
[ -f "$build/CPackConfig.cmake" ] || fail "$build/CPackConfig.cmake missing: configure with cmake first"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cpack -G DEB --config "$build/CPackConfig.cmake" -B "$tmp/out" >"$tmp/cpack.log" 2>&1 ||
  fail "cpack failed:
$(cat "$tmp/cpack.log")"
set -- "$tmp"/out/portlens_*.deb
if [ $# -ne 1 ] || [ ! -f "$1" ]; then
  fail "expected one portlens_*.deb, got: $*"
fi
deb=$1
arch=$(dpkg --print-architecture)
case "$deb" in
  */portlens_*_"$arch".deb) ;;
  *) fail "unexpected file name $(basename "$deb") (want portlens_VERSION_$arch.deb)" ;;
esac

# Files, as "mode owner path".
dpkg-deb -c "$deb" | awk '{ print $1, $2, $6 }' >"$tmp/contents"
has() { # MODE PATH
  grep -qx -- "$1 root/root $2" "$tmp/contents" || fail "the package lacks $2 with mode $1:
$(cat "$tmp/contents")"
}
has -rwxr-xr-x ./usr/sbin/portlens
has -rw-r--r-- ./lib/systemd/system/portlens.service
has -rw-r--r-- ./etc/default/portlens
has -rw-r--r-- ./usr/share/portlens/dashboards/portlens-overview.json
has -rw-r--r-- ./usr/share/portlens/provisioning/dashboards.yaml
has -rw-r--r-- ./usr/share/portlens/provisioning/datasource.yaml
has -rw-r--r-- ./usr/share/portlens/alerts/portlens.rules.yml
has -rw-r--r-- ./usr/share/doc/portlens/README.md
has -rw-r--r-- ./usr/share/doc/portlens/runbook.md
has -rw-r--r-- ./usr/share/doc/portlens/copyright
has -rw-r--r-- ./usr/share/doc/portlens/changelog.gz
has -rw-r--r-- ./usr/share/man/man8/portlens.8.gz
has -rw-r--r-- ./usr/share/bash-completion/completions/portlens
has -rw-r--r-- ./usr/share/zsh/vendor-completions/_portlens
# Nothing else: no test files, no stray directories, everything root's.
unexpected=$(awk '$3 !~ /^\.\/((usr\/sbin|usr\/share\/portlens|usr\/share\/doc\/portlens|lib\/systemd\/system|etc\/default|usr\/share\/man\/man8|usr\/share\/bash-completion\/completions|usr\/share\/zsh\/vendor-completions)(\/.*)?|usr\/share\/(man|bash-completion|zsh|doc)\/|(usr|usr\/share|lib|lib\/systemd|etc)\/)?$/ || $3 ~ /test/ || $2 != "root/root"' "$tmp/contents")
[ -z "$unexpected" ] || fail "unexpected entries:
$unexpected"

field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = portlens ] || fail "Package: $(field Package)"
[ "$(field Architecture)" = "$arch" ] || fail "Architecture: $(field Architecture)"
[ "$(field Section)" = net ] || fail "Section: $(field Section)"
[ -n "$(field Maintainer)" ] || fail "no Maintainer"
case "$(field Maintainer)" in
  *@localhost* | *@localdomain* | *'<>'*) fail "Maintainer is not a real address: $(field Maintainer)" ;;
esac
[ -n "$(field Description)" ] || fail "no Description"
version=$(field Version)
depends=$(field Depends)
names=$(echo "$depends" | tr ',' '\n' | sed 's/(.*//; s/|.*//; s/ //g')
# Each dependency is a package installed here (the binary was built and runs here), or provided
# by one (libspdlog1.10-fmt9 is), and none is a -dev package.
dpkg-query -W -f='${Package} ${Provides}\n' | tr -d ',' >"$tmp/installed"
for pkg in $names; do
  case "$pkg" in *-dev) fail "Depends names a -dev package: $pkg" ;; esac
  awk -v p="$pkg" '{ for (i = 1; i <= NF; i++) if ($i == p) found = 1 } END { exit !found }' \
    "$tmp/installed" || fail "Depends names $pkg, which no installed package is or provides"
done
for lib in libc6 libstdc++6 libbpf1 libmicrohttpd12 libgnutls30 libcrypt1 libyaml-cpp0.7 zlib1g \
  libfmt9 libmnl0 libprometheus-cpp-core1.0; do
  echo "$names" | grep -qx "$lib" || fail "Depends lacks $lib: $depends"
done

# Control archive: the conffile, and the maintainer scripts, executable.
dpkg-deb -I "$deb" conffiles | grep -qx /etc/default/portlens || fail "/etc/default/portlens is not a conffile"
dpkg-deb --ctrl-tarfile "$deb" | tar -tvf - >"$tmp/control"
for script in postinst prerm postrm; do
  grep -q -- "^-rwxr-xr-x .* \./$script$" "$tmp/control" || fail "no executable $script:
$(cat "$tmp/control")"
done

# The packaged binary runs, and is the one this build made (stripped of debug information).
dpkg-deb -x "$deb" "$tmp/root"
bin=$tmp/root/usr/sbin/portlens
if readelf -S "$bin" | grep -q '\.debug_info'; then
  fail "the packaged binary carries debug information (not stripped)"
fi
# Every library the binary links directly comes from a package that Depends names (or that
# provides a name in Depends).
for soname in $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
  path=$(ldd "$bin" | awk -v s="$soname" '$1 == s { print $3 }')
  [ -n "$path" ] || fail "$soname, needed by portlens, is not found here"
  owner=$(dpkg -S "$path" 2>/dev/null || dpkg -S "/usr$path" 2>/dev/null ||
    dpkg -S "${path#/usr}" 2>/dev/null) || fail "no package owns $path ($soname)"
  owner=${owner%%:*}
  provided=$(awk -v p="$owner" '$1 == p' "$tmp/installed")
  ok=no
  for name in $provided; do
    if echo "$names" | grep -qx "$name"; then ok=yes; fi
  done
  [ "$ok" = yes ] || fail "portlens needs $soname from $owner, which Depends does not name: $depends"
done
out=$("$tmp/root/usr/sbin/portlens" --version) || fail "the packaged portlens --version failed"
[ "$out" = "portlens $version" ] || fail "portlens --version says '$out', the package is $version"
grep -q '^ExecStart=/usr/sbin/portlens agent ' "$tmp/root/lib/systemd/system/portlens.service" ||
  fail "the unit's ExecStart does not run /usr/sbin/portlens agent"

# --- Debian policy and tools ----------------------------------------------------------------
# gzip -9n: no file name and no time stamp in the header (reproducible, and lintian checks it).
gz_plain() { # FILE
  gzip -t "$1" || fail "$1 is not a valid gzip file"
  header=$(od -An -tx1 -N8 "$1" | tr -d ' \n')
  flags=$(printf '%d' "0x$(echo "$header" | cut -c7-8)")
  [ $((flags & 8)) -eq 0 ] || fail "$1 keeps the file name in its gzip header (use gzip -n)"
  [ "$(echo "$header" | cut -c9-16)" = 00000000 ] || fail "$1 keeps a time stamp (use gzip -n)"
}
doc=$tmp/root/usr/share/doc/portlens
man=$tmp/root/usr/share/man/man8/portlens.8.gz
gz_plain "$doc/changelog.gz"
gz_plain "$man"
zcat "$doc/changelog.gz" >"$tmp/changelog"
[ "$(dpkg-parsechangelog -l "$tmp/changelog" -S Version)" = "$version" ] ||
  fail "the changelog's latest entry is $(dpkg-parsechangelog -l "$tmp/changelog" -S Version), the package $version"
grep -q '^Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' "$doc/copyright" ||
  fail "copyright is not in the machine-readable format (DEP-5)"
grep -q '^Files: bpf/' "$doc/copyright" || fail "copyright has no Files: stanza for the BPF programs"

# The man page: groff finds nothing to warn about, and it covers every command of the CLI.
warnings=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$man" 2>&1 >/dev/null) ||
  fail "man cannot render portlens.8: $warnings"
[ -z "$warnings" ] || fail "groff warns about portlens.8:
$warnings"
commands=$("$bin" --help | sed -n '/^Subcommands:/,$ s/^  \([a-z][a-z-]*\) .*/\1/p')
[ -n "$commands" ] || fail "portlens --help lists no commands"
page=$(zcat "$man")
bash_completion=$tmp/root/usr/share/bash-completion/completions/portlens
zsh_completion=$tmp/root/usr/share/zsh/vendor-completions/_portlens
bash -n "$bash_completion" || fail "the bash completion does not parse"
if command -v zsh >/dev/null; then
  zsh -n "$zsh_completion" || fail "the zsh completion does not parse"
fi
for c in $commands; do
  echo "$page" | grep -q "^\.SS \"portlens $c" || fail "the man page has no section for 'portlens $c'"
  grep -q "[|( ]${c}[|)]" "$bash_completion" || fail "the bash completion does not know '$c'"
  grep -q "^    '$c:" "$zsh_completion" || fail "the zsh completion does not know '$c'"
  # every flag of the command, in both completions (CLI11 lists them as "  -x,--long ...")
  for flag in $("$bin" "$c" --help | sed -n '/^Options:/,$ s/^  \(-[^ ]*\).*/\1/p' | tr ',' ' '); do
    grep -q -- "[ ']${flag}[ ']" "$bash_completion" || fail "the bash completion lacks $c $flag"
    grep -q -- "[{,]${flag}[,}]\|^ *${flag}'" "$zsh_completion" || fail "the zsh completion lacks $c $flag"
  done
done
# The bash completion completes.
got=$(bash -c '. "$1"; COMP_WORDS=(portlens agent --log.level ""); COMP_CWORD=3; _portlens; echo "${COMPREPLY[*]}"' _ "$bash_completion")
[ "$got" = "debug info warn error" ] || fail "bash completion of 'portlens agent --log.level ': '$got'"

# Maintainer scripts: deb-systemd-helper and deb-systemd-invoke, never systemctl (but for
# daemon-reload), as lintian's maintainer-script-calls-systemctl wants.
dpkg-deb -e "$deb" "$tmp/control.d"
for script in postinst prerm postrm; do
  # lintian's own test: a line whose command (or a command after a ;) is systemctl
  if grep -E '^(.+;)?[[:space:]]*systemctl\b' "$tmp/control.d/$script" | grep -qv 'daemon-reload'; then
    fail "$script calls systemctl for more than daemon-reload"
  fi
done
grep -q 'deb-systemd-invoke try-restart' "$tmp/control.d/postinst" || fail "postinst does not restart on upgrade"
grep -q 'deb-systemd-invoke stop' "$tmp/control.d/prerm" || fail "prerm does not stop the agent"

# ... and what they do, run as dpkg would against a scratch root (deb-systemd-helper works under
# DPKG_ROOT). systemctl and deb-systemd-invoke are stubs that log their calls.
sroot=$tmp/sroot
mkdir -p "$sroot/lib/systemd/system" "$sroot/var/log/portlens" "$tmp/stubs"
cp "$tmp/root/lib/systemd/system/portlens.service" "$sroot/lib/systemd/system/"
for stub in systemctl deb-systemd-invoke; do
  printf '#!/bin/sh\necho "%s $*" >>"%s"\n' "$stub" "$tmp/calls" >"$tmp/stubs/$stub"
  chmod +x "$tmp/stubs/$stub"
done
: >"$tmp/calls"
maint() { # SCRIPT ARGS...
  script=$1
  shift
  DPKG_ROOT=$sroot DPKG_MAINTSCRIPT_PACKAGE=portlens DPKG_MAINTSCRIPT_NAME=$script \
    PATH="$tmp/stubs:$PATH" sh "$tmp/control.d/$script" "$@" >"$tmp/maint.out" 2>&1 ||
    fail "$script $* failed: $(cat "$tmp/maint.out")"
}
link=$sroot/etc/systemd/system/multi-user.target.wants/portlens.service
state=$sroot/var/lib/systemd/deb-systemd-helper-enabled/portlens.service.dsh-also
maint postinst configure
if [ -e "$link" ] || [ -L "$link" ]; then fail "a fresh install enabled the agent"; fi
grep -q 'systemctl enable --now portlens' "$tmp/maint.out" || fail "a fresh install does not say how to start the agent"
[ -f "$state" ] || fail "postinst did not record the unit's state (deb-systemd-helper update-state)"
if grep -q 'deb-systemd-invoke' "$tmp/calls"; then
  fail "a fresh install started or restarted the agent: $(cat "$tmp/calls")"
fi
# The administrator enables it (systemctl enable makes this link); an upgrade keeps it so.
mkdir -p "$(dirname "$link")"
ln -s /lib/systemd/system/portlens.service "$link"
maint postinst configure 0.0.1
[ -L "$link" ] || fail "an upgrade disabled the agent"
# Removal disables it; purge forgets deb-systemd-helper's state and deletes the logs.
maint prerm remove
[ ! -L "$link" ] || fail "removing the package left the agent enabled"
rm "$sroot/lib/systemd/system/portlens.service"
maint postrm remove
maint postrm purge
[ ! -e "$state" ] || fail "purge left deb-systemd-helper's state: $state"
[ ! -e "$sroot/var/log/portlens" ] || fail "purge left /var/log/portlens"

# lintian: no error and no warning, and no overrides to get there. Informational tags are
# printed, not failed.
lintian_status=0
lintian --fail-on error,warning --display-info "$deb" >"$tmp/lintian.out" 2>&1 || lintian_status=$?
# (as root it says "running with root privileges is not recommended!": true, and beside the point)
grep -v 'running with root privileges is not recommended' "$tmp/lintian.out" >"$tmp/lintian" || true
if [ "$lintian_status" -ne 0 ]; then
  fail "lintian (exit $lintian_status):
$(cat "$tmp/lintian")"
fi
[ ! -s "$tmp/lintian" ] || sed 's/^/check_package: lintian: /' "$tmp/lintian"

# hardening-check (devscripts): PIE, stack protector, fortified functions, RELRO, BIND_NOW, stack
# clash protection: every one "yes". Not control-flow integrity (x86 CET): the binary is built
# with -fcf-protection, but the linker marks an executable IBT/SHSTK only when every object in
# it is, and Debian 12's own startup files (Scrt1.o, crti.o, crtn.o from libc6-dev) are not, so
# no program linked on Debian 12 gets the mark (bookworm's dpkg-buildflags does not ask for it
# either). Forcing it (-z ibt -z shstk) would claim what those files do not do.
hardening=$(hardening-check --nocfprotection "$bin" 2>&1) || fail "hardening-check:
$hardening"
if echo "$hardening" | sed 1d | grep -v '^ Control flow integrity:' | grep -qv ': yes'; then
  fail "hardening-check is not all yes:
$hardening"
fi
echo "$hardening" | sed 's/^/check_package: /'

echo "check_package: ok: $(basename "$deb"), $(wc -l <"$tmp/contents") entries, Depends: $depends"
