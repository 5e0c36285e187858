#!/usr/bin/env bash
# Prepare .device/ for scripts/device-check.sh, here, before a session's lent GPU machine starts:
#   - .device/cads: a stripped release build of `cads` linked against this machine's system C
#     library and loader. Not the one cargo builds after sourcing scripts/newer-lavapipe.sh's
#     env.sh: that one's ELF interpreter and RPATH point into the Mesa 26 prefix and it needs
#     Debian 13's C library, neither of which a GPU machine has. It builds in target/device/ so
#     target/ keeps its own flags (no full rebuild of either when switching).
#   - .device/gl/libvulkan1_*.deb: the Vulkan loader, unpacked there only if the machine lacks
#     one. Fetched through this machine's own apt sources (no host named here).
# .device/ is ignored by git; the device tool carries it when asked: carry [".device"].
#
#   scripts/prepare-device-check.sh        # about 10 min on 2 cores the first time
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.device
mkdir -p "$dest/gl"

env -u RUSTFLAGS -u RUSTDOCFLAGS CARGO_TARGET_DIR=target/device \
    cargo build --release --bin cads
strip -o "$dest/cads" target/device/release/cads
interp=$(readelf -l "$dest/cads" | sed -n 's/.*interpreter: \(.*\)]/\1/p')
case "$interp" in
    /lib64/*|/lib/*) ;;
    *) echo "error: .device/cads asks for the loader $interp (RUSTFLAGS from env.sh?)" >&2; exit 1 ;;
esac

# The loader's package for amd64 (the GPU machines are x86-64), with package lists of its own
# so the system's apt state is untouched.
lists=/tmp/cads-apt-amd64
mkdir -p "$lists/partial"
apt_opts=(-o APT::Architecture=amd64 -o APT::Architectures=amd64 -o "Dir::State::Lists=$lists")
apt-get "${apt_opts[@]}" -qq update
rm -f "$dest"/gl/*.deb
(cd "$dest/gl" && apt-get "${apt_opts[@]}" -qq download libvulkan1)

ls -l "$dest/cads" "$dest"/gl/*.deb
du -sh "$dest"
echo "ready: device run with carry [\".device\"] and command \"bash scripts/device-check.sh\""
