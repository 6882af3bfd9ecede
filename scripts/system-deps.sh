#!/usr/bin/env bash
# Install the Debian packages the tool and its tests need (tshark/capinfos/mergecap, tcpdump, libpcap).
# As root it installs what is missing; otherwise it says what to install and carries on.
set -euo pipefail
need=()
command -v tshark >/dev/null 2>&1 || need+=(tshark)
command -v capinfos >/dev/null 2>&1 || need+=(tshark)
command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
ldconfig -p 2>/dev/null | grep -q 'libpcap\.so\.0\.8\|libpcap\.so\.1' || need+=(libpcap0.8)
[ -e /usr/include/pcap/pcap.h ] || need+=(libpcap-dev)
for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
[ ${#need[@]} -eq 0 ] && exit 0
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(uname -s)" = Darwin ]; then
  echo "missing: ${need[*]} — on macOS: brew install wireshark libpcap" >&2; exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]} — run: sudo apt-get install -y ${need[*]} (tests that need them will skip)" >&2
  exit 0
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
