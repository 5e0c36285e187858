#!/usr/bin/env bash
# Mesa 26 lavapipe (software Vulkan) for Debian 12 / Ubuntu 22.04, in a private prefix.
#
# Why: Debian 12's newest lavapipe (bookworm-backports, Mesa 25.0.7 on LLVM 15) compiles every
# storage-buffer load into a per-lane checked sequence (docs/lavapipe-loads.md); Debian 13's Mesa
# 26 on LLVM 19 runs our kernels 2-3x faster and the test suite about 4x faster. It needs Debian
# 13's C library, so it cannot be installed on Debian 12, but it runs from a prefix under its own
# dynamic loader.
#
# What it does: downloads (never installs) `mesa-vulkan-drivers` and its dependency closure from
# Debian 13 (trixie + trixie-backports) with apt, through the Debian mirror this machine's apt
# already uses (or --mirror URL), unpacks them into PREFIX (default ~/.cache/cads/mesa-trixie,
# about 300 MB), and writes there:
#   run     a runner: `PREFIX/run PROGRAM ARGS` starts PROGRAM under the prefix's loader with
#           the prefix's lavapipe as the only Vulkan driver. Programs that PROGRAM starts run on
#           the system's loader, so use `env.sh` when a program spawns GPU programs (cargo test).
#   env.sh  `source PREFIX/env.sh` before cargo: every binary cargo links gets the prefix's
#           loader as its interpreter and the prefix as its run path (RUSTFLAGS, RUSTDOCFLAGS),
#           and the Vulkan loader is pointed at the prefix's lavapipe. Such binaries, and the
#           binaries they start, run on Mesa 26 with no runner. It changes RUSTFLAGS, so cargo
#           rebuilds everything once.
#
#   scripts/newer-lavapipe.sh [--prefix DIR] [--mirror URL]   # prints PREFIX/run
#   source "$(dirname "$(scripts/newer-lavapipe.sh)")/env.sh" && cargo test --release
#   CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$(scripts/newer-lavapipe.sh) cargo run --release -- info
#
# Exits non-zero with the reason on stderr when anything fails, so a caller can fall back to the
# system's lavapipe. A finished prefix is reused (the run is then instant).
set -euo pipefail

prefix=${XDG_CACHE_HOME:-$HOME/.cache}/cads/mesa-trixie
mirror=
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "newer-lavapipe: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
fail() { echo "newer-lavapipe: $*" >&2; exit 1; }

[ "$(uname -m)" = x86_64 ] || fail "only x86_64 is supported (this is $(uname -m))"
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || fail "needs apt-get and dpkg-deb"

# Bumped whenever what this script writes into the prefix changes, so old prefixes are redone.
layout=2
if [ "$(cat "$prefix/layout" 2>/dev/null)" = "$layout" ] && "$prefix/run" /bin/true 2>/dev/null; then
  echo "$prefix/run"
  exit 0
fi

# The Debian mirror from the apt configuration: a `deb` source (one-line or deb822) whose suite is
# a Debian release and which is not the security archive. Users keep their own mirrors.
debian_mirror() {
  local suites='^(buster|bullseye|bookworm|trixie|forky|sid|stable|testing|unstable|oldstable)(-updates|-backports)?$'
  # one-line format: deb [options] URI SUITE COMPONENTS...
  sed -e 's/#.*//' -e 's/\[[^]]*\]//' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk -v re="$suites" '$1 == "deb" && $3 ~ re && $2 !~ /security/ { print $2 }'
  # deb822 format: stanzas with Types, URIs and Suites fields
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v re="$suites" '
      function flush() { if (deb && uri != "" && uri !~ /security/ && ok) print uri; deb = 0; uri = ""; ok = 0 }
      /^[ \t]*$/ { flush(); next }
      /^Types:/ { deb = ($0 ~ /[ \t]deb([ \t]|$)/) }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i ~ re) ok = 1 }
      END { flush() }' "$f"
  done
}
[ -n "$mirror" ] || mirror=$(debian_mirror | awk 'NR == 1')
[ -n "$mirror" ] || fail "no Debian mirror in the apt configuration; pass --mirror URL"
echo "newer-lavapipe: Debian 13 packages from $mirror into $prefix" >&2

rm -rf "$prefix.partial"
work=$prefix.partial
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/debs" "$work/root"
printf 'deb %s trixie main\ndeb %s trixie-backports main\n' "$mirror" "$mirror" >"$work/apt/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
  -o "Dir::State::status=/dev/null" -o APT::Default-Release=trixie-backports
  -o APT::Sandbox::User="$(id -un)" -o Debug::NoLocking=1)
apt-get "${apt_opts[@]}" update -qq >&2 || fail "apt-get update against $mirror (trixie) failed"

# The dependency closure of mesa-vulkan-drivers, resolved by name against Debian 13 (the first
# alternative of each `a | b` dependency, virtual packages skipped).
todo=(mesa-vulkan-drivers)
seen=" "
while [ ${#todo[@]} -gt 0 ]; do
  pkg=${todo[-1]}
  unset 'todo[-1]'
  case "$seen" in *" $pkg "*) continue ;; esac
  seen="$seen$pkg "
  deps=$(apt-cache "${apt_opts[@]}" depends --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances "$pkg" 2>/dev/null |
    sed -n 's/^ *|\{0,1\}\(Pre\)\{0,1\}Depends: \([^ <>:]*\).*/\2/p')
  for dep in $deps; do
    case "$seen" in *" $dep "*) ;; *) todo+=("$dep") ;; esac
  done
done
count=$(wc -w <<<"$seen")
echo "newer-lavapipe: downloading $count packages" >&2
(cd "$work/debs" && apt-get "${apt_opts[@]}" download -qq $seen >&2) || fail "downloading the packages failed"
for deb in "$work"/debs/*.deb; do
  dpkg-deb -x "$deb" "$work/root" || fail "unpacking $deb failed"
done

lib=$prefix/root/usr/lib/x86_64-linux-gnu
wlib=$work/root/usr/lib/x86_64-linux-gnu
[ -x "$wlib/ld-linux-x86-64.so.2" ] || fail "the unpacked prefix has no dynamic loader"
[ -f "$wlib/libvulkan_lvp.so" ] || fail "the unpacked prefix has no lavapipe (libvulkan_lvp.so)"
[ -f "$wlib/libvulkan.so.1" ] || fail "the unpacked prefix has no Vulkan loader (libvulkan.so.1)"
version=$(dpkg-deb -f "$work"/debs/mesa-vulkan-drivers_*.deb Version)

# The ICD manifest names the driver by file name; point it at the prefix's copy.
sed "s#\"library_path\": *\"[^\"]*\"#\"library_path\": \"$lib/libvulkan_lvp.so\"#" \
  "$work/root/usr/share/vulkan/icd.d/lvp_icd.json" >"$work/lvp_icd.json"
grep -q "$lib/libvulkan_lvp.so" "$work/lvp_icd.json" || fail "cannot rewrite the lavapipe ICD manifest"

cat >"$work/run" <<EOF
#!/usr/bin/env bash
# Runs a program under Debian 13's dynamic loader with Mesa $version's lavapipe as the Vulkan
# driver (written by cads's scripts/newer-lavapipe.sh). A caller's VK_ICD_FILENAMES /
# VK_DRIVER_FILES win, so a test that points them at nothing still sees no adapter.
export VK_ICD_FILENAMES=\${VK_ICD_FILENAMES-$prefix/lvp_icd.json}
export VK_DRIVER_FILES=\${VK_DRIVER_FILES-$prefix/lvp_icd.json}
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "\$@"
EOF
chmod +x "$work/run"

cat >"$work/env.sh" <<EOF
# Source before cargo: binaries cargo links run under Debian 13's loader and libraries (the
# prefix), with Mesa $version's lavapipe as the Vulkan driver (cads's scripts/newer-lavapipe.sh).
# DT_RPATH (--disable-new-dtags), not DT_RUNPATH: only an executable's RPATH is also searched for
# the libraries its libraries need, such as lavapipe's libLLVM, which the Vulkan loader dlopens.
link="-C link-arg=-Wl,--dynamic-linker=$lib/ld-linux-x86-64.so.2 -C link-arg=-Wl,--disable-new-dtags -C link-arg=-Wl,-rpath,$lib"
export RUSTFLAGS="\${RUSTFLAGS:+\$RUSTFLAGS }\$link"
export RUSTDOCFLAGS="\${RUSTDOCFLAGS:+\$RUSTDOCFLAGS }\$link"
unset link
export VK_ICD_FILENAMES=$prefix/lvp_icd.json
export VK_DRIVER_FILES=$prefix/lvp_icd.json
export CADS_MESA_PREFIX=$prefix
EOF
echo "$version" >"$work/mesa-version"
echo "$layout" >"$work/layout"
rm -rf "$work/apt" "$work/debs"

rm -rf "$prefix"
mv "$work" "$prefix"
"$prefix/run" /bin/true || fail "the runner cannot start programs here"
echo "newer-lavapipe: Mesa $version ready in $prefix" >&2
echo "$prefix/run"
