#!/usr/bin/env bash
# Baseline (b): the seed's correlation filtering, literally: for each leg and each raw file a
# `tshark -r F -Y FILTER | wc -l` count pass and, when the count is > 10, a `tshark ... -w` pass;
# then mergecap of every filtered file into media_raw.pcap.
# usage: seed_pipeline.sh [--quick] OUT_DIR FILTERS_FILE MEDIA_FILE...
#   FILTERS_FILE: one "leg<TAB>display filter" per line.
#   --quick: only the first leg × the first file (the caller extrapolates: per-pass time × passes).
# Prints one "pass <kind> <leg> <file> <packets> <seconds>" line per tshark pass and "merge <seconds>".
set -euo pipefail
quick=0
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi
out=$1 filters=$2
shift 2
mkdir -p "$out/filtered"
rm -f "$out"/filtered/*.pcap "$out/media_raw.pcap"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
kept=()
while IFS=$'\t' read -r leg filter; do
    for f in "$@"; do
        stem=$(basename "${f%.*}")
        t=$(now)
        count=$(tshark -r "$f" -Y "$filter" 2>/dev/null | wc -l)
        echo "pass count $leg $stem $count $(since "$t")"
        if [ "$count" -gt 10 ]; then
            dst="$out/filtered/$stem-$leg-filtered.pcap"
            t=$(now)
            tshark -r "$f" -Y "$filter" -w "$dst" 2>/dev/null
            echo "pass write $leg $stem $count $(since "$t")"
            kept+=("$dst")
        fi
        [ "$quick" = 1 ] && break
    done
    [ "$quick" = 1 ] && break
done < "$filters"
t=$(now)
if [ "${#kept[@]}" -gt 0 ]; then mergecap -w "$out/media_raw.pcap" "${kept[@]}"; fi
echo "merge $(since "$t")"
