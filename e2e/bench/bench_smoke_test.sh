#!/usr/bin/env bash
# Smoke test of the benchmark harness: one small run end to end; the table must
# have a row for it with a positive throughput, TCP ceiling and gRPC ceiling.
#   bench_smoke_test.sh MIGD MIGCTL TCP_CEILING GRPC_CEILING BENCH_PY
set -euo pipefail
if (($# != 5)); then
  echo "usage: $0 MIGD MIGCTL TCP_CEILING GRPC_CEILING BENCH_PY" >&2
  exit 2
fi
out="$(python3 "$5" --migd="$1" --migctl="$2" --tcp-ceiling="$3" \
  --grpc-ceiling="$4" --sizes=16MiB --streams=1,2 --reps=1)"
echo "$out"
rows="$(grep -E '^\| +16 MiB \|' <<<"$out")" || {
  echo "bench_smoke_test: no 16 MiB row in the table" >&2
  exit 1
}
if (($(wc -l <<<"$rows") != 2)); then
  echo "bench_smoke_test: want a row for 1 and for 2 streams" >&2
  exit 1
fi
# Columns: state, streams, n, GB/s, TCP GB/s, ratio, gRPC GB/s, ...
while IFS= read -r row; do
  streams="$(awk -F'|' '{gsub(/ /, "", $3); print $3}' <<<"$row")"
  gbps="$(awk -F'|' '{gsub(/ /, "", $5); print $5}' <<<"$row")"
  tcp="$(awk -F'|' '{gsub(/ /, "", $6); print $6}' <<<"$row")"
  grpc="$(awk -F'|' '{gsub(/ /, "", $8); print $8}' <<<"$row")"
  if ! python3 -c "import sys; sys.exit(0 if min(float('$gbps'), float('$tcp'), float('$grpc')) > 0 else 1)"; then
    echo "bench_smoke_test: $streams stream(s): throughput $gbps GB/s, TCP ceiling $tcp GB/s, gRPC ceiling $grpc GB/s" >&2
    exit 1
  fi
done <<<"$rows"
echo "bench_smoke_test: OK"
