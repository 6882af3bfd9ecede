#!/usr/bin/env bash
# Install the Debian packages the tool needs: `system-deps.sh` for running it (libpcap),
# `system-deps.sh test` for the test suite too (tshark/capinfos/mergecap, tcpdump, chromium).
# As root it installs what is missing; otherwise it says what to install and carries on.
set -euo pipefail
need=()
ldconfig -p 2>/dev/null | grep -q 'libpcap\.so' || need+=(libpcap0.8)
if [ "${1:-}" = test ]; then
  command -v tshark >/dev/null 2>&1 || need+=(tshark)
  command -v capinfos >/dev/null 2>&1 || need+=(tshark)
  command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
  [ -e /usr/include/pcap/pcap.h ] || need+=(libpcap-dev)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)   # the UI test looks at Prefect's pages headless
  command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)     # the independent G.722 decoder the WAV export is checked against
fi
[ ${#need[@]} -eq 0 ] && exit 0
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(uname -s)" = Darwin ]; then
  echo "missing: ${need[*]} — on macOS: brew install wireshark libpcap (libpcap also ships with the OS)" >&2; exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]} — run: sudo apt-get install -y ${need[*]} (tests that need them will skip)" >&2
  exit 0
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
