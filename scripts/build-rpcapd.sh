#!/usr/bin/env bash
# Build a real rpcapd (with TLS) from Debian's libpcap source package into .cache/rpcapd/, once.
# Prints the binary's path on stdout; on failure prints why on stderr and exits non-zero (tests skip with it).
# The extracted source stays in .cache/rpcapd/src/ as the protocol reference (rpcap-protocol.h, pcap-rpcap.c, rpcapd/).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="$repo/.cache/rpcapd"
bin="$cache/rpcapd"
log="$cache/build.log"

if [ -x "$bin" ]; then
  echo "$bin"; exit 0
fi
fail() { echo "build-rpcapd: $*" >&2; exit 1; }
[ "$(uname -s)" = Linux ] || fail "needs Linux with apt (Debian); this is $(uname -s)"
command -v apt-get >/dev/null 2>&1 || fail "needs apt-get (Debian/Ubuntu) to fetch libpcap's source package"
[ "$(id -u)" -eq 0 ] || fail "needs root to add a deb-src entry and install build tools; run: sudo $0"
mkdir -p "$cache"
: >"$log"
export DEBIAN_FRONTEND=noninteractive

# Debian 12 keeps its sources in deb822 form; add a deb-src twin of every Debian "deb" stanza once.
src_list=/etc/apt/sources.list.d/rtp-capture-deb-src.sources
if ! grep -rqs 'deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    awk 'BEGIN{RS=""; ORS="\n\n"} /Types:[^\n]*deb/ {sub(/Types:[^\n]*/, "Types: deb-src"); print}' \
      /etc/apt/sources.list.d/debian.sources >"$src_list"
  elif [ -f /etc/apt/sources.list ]; then
    sed -n 's/^deb \(.*debian.*\)$/deb-src \1/p' /etc/apt/sources.list >/etc/apt/sources.list.d/rtp-capture-deb-src.list
  fi
  grep -rqs 'deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/ || fail "could not add a deb-src entry for apt"
  need_update=1
fi
pkgs=(gcc make flex bison dpkg-dev libssl-dev pkg-config)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${need_update:-0}" = 1 ] || [ ${#missing[@]} -gt 0 ] || ! apt-cache showsrc libpcap >/dev/null 2>&1; then
  apt-get update -qq >>"$log" 2>&1 || fail "apt-get update failed (see $log)"
fi
if [ ${#missing[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1 \
    || fail "apt-get install ${missing[*]} failed (see $log)"
fi

src="$cache/src"
if [ ! -f "$src/rpcapd/daemon.c" ]; then
  rm -rf "$cache/dl" "$src"
  mkdir -p "$cache/dl"
  (cd "$cache/dl" && apt-get source -qq libpcap >>"$log" 2>&1) || fail "apt-get source libpcap failed (see $log)"
  dir="$(find "$cache/dl" -mindepth 1 -maxdepth 1 -type d -name 'libpcap-*' | head -n1)"
  [ -n "$dir" ] || fail "apt-get source libpcap left no libpcap-* folder (see $log)"
  mv "$dir" "$src"
  rm -rf "$cache/dl"
fi

cd "$src"
if [ ! -f Makefile ]; then
  # OpenSSL (libssl-dev) is picked up through pkg-config: that is what gives rpcapd -S (rpcaps://).
  ./configure --enable-remote --disable-dbus --disable-rdma --disable-bluetooth --disable-usb \
    --disable-netmap --without-libnl >>"$log" 2>&1 \
    || fail "libpcap ./configure failed (see $log)"
fi
# rpcapd links against the static libpcap.a of this tree; build only that and the daemon.
make -j"$(nproc)" libpcap.a >>"$log" 2>&1 || fail "make libpcap.a failed (see $log)"
make -j"$(nproc)" -C rpcapd rpcapd >>"$log" 2>&1 || fail "make rpcapd failed (see $log)"
cp rpcapd/rpcapd "$bin.tmp" && mv "$bin.tmp" "$bin"
echo "$bin"
