#!/usr/bin/env bash
# Smoke test of the benchmark harness: one small run end to end; the table must
# have a row for it with a positive throughput and a TCP ceiling.
#   bench_smoke_test.sh MIGD MIGCTL TCP_CEILING BENCH_PY
set -euo pipefail
if (($# != 4)); then
  echo "usage: $0 MIGD MIGCTL TCP_CEILING BENCH_PY" >&2
  exit 2
fi
out="$(python3 "$4" --migd="$1" --migctl="$2" --tcp-ceiling="$3" \
  --sizes=16MiB --reps=1)"
echo "$out"
row="$(grep -E '^\| +16 MiB \|' <<<"$out")" || {
  echo "bench_smoke_test: no 16 MiB row in the table" >&2
  exit 1
}
# Columns: state, streams, n, GB/s, TCP GB/s, ...
gbps="$(awk -F'|' '{gsub(/ /, "", $5); print $5}' <<<"$row")"
tcp="$(awk -F'|' '{gsub(/ /, "", $6); print $6}' <<<"$row")"
if ! python3 -c "import sys; sys.exit(0 if float('$gbps') > 0 and float('$tcp') > 0 else 1)"; then
  echo "bench_smoke_test: throughput $gbps GB/s, ceiling $tcp GB/s" >&2
  exit 1
fi
echo "bench_smoke_test: OK"
