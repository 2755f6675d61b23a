#!/usr/bin/env bash
# Smoke test of the benchmark harness: one small run end to end; the table must
# have a row for it with a positive throughput, TCP ceiling and gRPC ceiling,
# and the per-run JSON the per-thread readings (named migd threads among them)
# and the agents' CPU wait.
#   bench_smoke_test.sh MIGD MIGCTL TCP_CEILING GRPC_CEILING BENCH_PY
set -euo pipefail
if (($# != 5)); then
  echo "usage: $0 MIGD MIGCTL TCP_CEILING GRPC_CEILING BENCH_PY" >&2
  exit 2
fi
json="${TEST_TMPDIR:-$(mktemp -d)}/runs.jsonl"
rm -f "$json"
out="$(python3 "$5" --migd="$1" --migctl="$2" --tcp-ceiling="$3" \
  --grpc-ceiling="$4" --sizes=16MiB --streams=1,2 --reps=1 \
  --json-out="$json")"
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
python3 - "$json" <<'PY'
import json, sys
runs = [json.loads(line)["run"] for line in open(sys.argv[1])]
if len(runs) != 2:
    sys.exit(f"bench_smoke_test: want 2 runs in the JSON, got {len(runs)}")
for r in runs:
    where = f"{r['streams']} stream(s)"
    if not r["src_threads"] or not r["dst_threads"]:
        sys.exit(f"bench_smoke_test: {where}: no thread readings")
    # The data streams' acceptor lives as long as the agent: the sampler
    # always sees it, by the name migd gave it.
    names = {name for name, _ in r["dst_threads"]}
    if "calls-accept" not in names:
        sys.exit(f"bench_smoke_test: {where}: no calls-accept thread among "
                 f"the destination's {sorted(names)}")
    if r["agents_run_s"] <= 0 or r["agents_wait_s"] < 0:
        sys.exit(f"bench_smoke_test: {where}: agents ran "
                 f"{r['agents_run_s']} s, waited {r['agents_wait_s']} s")
PY
echo "bench_smoke_test: OK"
