#!/usr/bin/env bash
# Anchor (c): one `tcpdump -r` pass per raw file with the OR of the legs' BPF, then mergecap.
# usage: tcpdump_anchor.sh OUT_DIR BPF_FILE MEDIA_FILE...
# tcpdump drops root privileges before writing unless told otherwise: -Z root keeps it able to write OUT_DIR.
set -euo pipefail
out=$1 bpf=$2
shift 2
mkdir -p "$out"
rm -f "$out"/*.pcap
user_args=()
[ "$(id -u)" = 0 ] && user_args=(-Z root)
parts=()
for f in "$@"; do
    part="$out/$(basename "${f%.*}")-legs.pcap"
    tcpdump -q "${user_args[@]}" -r "$f" -w "$part" -F "$bpf" 2>/dev/null
    parts+=("$part")
done
mergecap -w "$out/media_raw.pcap" "${parts[@]}"
