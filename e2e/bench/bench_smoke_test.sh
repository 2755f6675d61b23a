#!/usr/bin/env bash
# Smoke test of the benchmark harness: small runs end to end, plaintext and
# mutual TLS; the table must have a row for each with a positive throughput,
# device pipe, TCP ceiling and gRPC ceiling, the comparison of the two
# transports a row per stream count, and the per-run JSON the per-thread
# readings (named migd threads among them), the agents' CPU wait, over mutual
# TLS only the identity each side saw at the other end, and the device pipe's
# result: the destination's digest checked, the same source state as the
# agent's, TLS 1.3 with the default cipher suite over mutual TLS only. Then a
# tiny host evacuation (4 jobs of 2 x 1 MiB, plaintext, started by EVACUATE):
# its median row, every job succeeded with the destination's digests checked.
#   bench_smoke_test.sh MIGD MIGCTL TCP_CEILING GRPC_CEILING DEVICE_PIPE \
#     BENCH_PY PKI EVACUATE
set -euo pipefail
if (($# != 8)); then
  echo "usage: $0 MIGD MIGCTL TCP_CEILING GRPC_CEILING DEVICE_PIPE BENCH_PY PKI EVACUATE" >&2
  exit 2
fi
json="${TEST_TMPDIR:-$(mktemp -d)}/runs.jsonl"
rm -f "$json"
out="$(python3 "$6" --migd="$1" --migctl="$2" --tcp-ceiling="$3" \
  --grpc-ceiling="$4" --device-pipe="$5" --pki="$7" --sizes=16MiB \
  --streams=1,2 --reps=1 --transport=plain,mtls --json-out="$json")"
echo "$out"
for transport in plain mtls; do
  rows="$(grep -E "^\| +16 MiB \| +[0-9]+ \| +$transport \|" <<<"$out")" || {
    echo "bench_smoke_test: no 16 MiB $transport row in the table" >&2
    exit 1
  }
  if (($(wc -l <<<"$rows") != 2)); then
    echo "bench_smoke_test: $transport: want a row for 1 and for 2 streams" >&2
    exit 1
  fi
  # Columns: state, streams, transport, n, GB/s, pipe GB/s, ratio to pipe,
  # TCP GB/s, ratio, gRPC GB/s, ...
  while IFS= read -r row; do
    streams="$(awk -F'|' '{gsub(/ /, "", $3); print $3}' <<<"$row")"
    gbps="$(awk -F'|' '{gsub(/ /, "", $6); print $6}' <<<"$row")"
    pipe="$(awk -F'|' '{gsub(/ /, "", $7); print $7}' <<<"$row")"
    tcp="$(awk -F'|' '{gsub(/ /, "", $9); print $9}' <<<"$row")"
    grpc="$(awk -F'|' '{gsub(/ /, "", $11); print $11}' <<<"$row")"
    if ! python3 -c "import sys; sys.exit(0 if min(float('$gbps'), float('$pipe'), float('$tcp'), float('$grpc')) > 0 else 1)"; then
      echo "bench_smoke_test: $transport, $streams stream(s): throughput $gbps GB/s, device pipe $pipe GB/s, TCP ceiling $tcp GB/s, gRPC ceiling $grpc GB/s" >&2
      exit 1
    fi
  done <<<"$rows"
done
# The comparison: state, streams, then figures; one row per stream count.
compared="$(sed -n '/^mutual TLS against plaintext/,$p' <<<"$out" |
  grep -cE '^\| +16 MiB \| +[0-9]+ \|')" || true
if ((compared != 2)); then
  echo "bench_smoke_test: want 2 rows comparing mtls with plain, got $compared" >&2
  exit 1
fi
if ! grep -q '^device pipe over TLS 1.3: TLS_AES_128_GCM_SHA256;' <<<"$out"; then
  echo "bench_smoke_test: no line on the device pipe's TLS under the tables" >&2
  exit 1
fi
python3 - "$json" <<'PY'
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1])]
if len(lines) != 4:
    sys.exit(f"bench_smoke_test: want 4 runs in the JSON, got {len(lines)}")
agent = "spiffe://migd.local/agent/"
for line in lines:
    r = line["run"]
    where = f"{r['transport']}, {r['streams']} stream(s)"
    if line["transport"] != r["transport"]:
        sys.exit(f"bench_smoke_test: {where}: the line says {line['transport']}")
    if not r["src_threads"] or not r["dst_threads"]:
        sys.exit(f"bench_smoke_test: {where}: no thread readings")
    # The data channel's acceptor lives as long as the agent: the sampler
    # always sees it, by the name migd gave it.
    names = {name for name, _ in r["dst_threads"]}
    if "data-accept" not in names:
        sys.exit(f"bench_smoke_test: {where}: no data-accept thread among "
                 f"the destination's {sorted(names)}")
    if r["agents_run_s"] <= 0 or r["agents_wait_s"] < 0:
        sys.exit(f"bench_smoke_test: {where}: agents ran "
                 f"{r['agents_run_s']} s, waited {r['agents_wait_s']} s")
    # Over mutual TLS each side knows who the other is; in plaintext nobody.
    want = ((agent + "agent-b", agent + "agent-a")
            if r["transport"] == "mtls" else ("", ""))
    got = (r["src_peer_identity"], r["dst_peer_identity"])
    if got != want:
        sys.exit(f"bench_smoke_test: {where}: peer identities (source's, "
                 f"destination's) {got}, want {want}")
    # The device pipe: the agents' device (the agent's emu0 digest), the
    # destination's digest checked, its own connections, and TLS 1.3 with
    # the default suite exactly when the row is mutual TLS.
    p = line["pipe"]
    if not p["digest_ok"] or p["src_digest"] != r["src_digest"]:
        sys.exit(f"bench_smoke_test: {where}: device pipe digests "
                 f"{p['src_digest']} -> {p['dst_digest']}, the source "
                 f"agent's emu0 {r['src_digest']}")
    if (p["connections"], p["state_bytes"]) != (r["streams"],
                                                 r["state_bytes"]):
        sys.exit(f"bench_smoke_test: {where}: device pipe ran "
                 f"{p['state_bytes']} bytes of state on {p['connections']} "
                 f"connection(s)")
    tls = r["transport"] == "mtls"
    cipher = "TLS_AES_128_GCM_SHA256" if tls else ""
    if p["tls"] != tls or p["cipher"] != cipher:
        sys.exit(f"bench_smoke_test: {where}: device pipe tls={p['tls']} "
                 f"cipher {p['cipher']!r}, want tls={tls} cipher {cipher!r}")
    if not line["pipe_ratio"] or line["pipe_ratio"] <= 0:
        sys.exit(f"bench_smoke_test: {where}: pipe_ratio "
                 f"{line['pipe_ratio']}")
PY

# Host evacuation: one job alone, then 4 at once, between one pair of agents.
evac_json="$(dirname "$json")/evac.jsonl"
rm -f "$evac_json"
evac="$(python3 "$6" --migd="$1" --migctl="$2" --tcp-ceiling="$3" \
  --grpc-ceiling="$4" --device-pipe="$5" --pki="$7" --evacuate=4 \
  --evacuate-driver="$8" --sizes=1MiB --reps=1 --transport=plain \
  --json-out="$evac_json")"
echo "$evac"
row="$(grep -E '^\| +1 MiB \| +2 \| +4 \| +1 \| +plain \| +median \|' \
  <<<"$evac")" || {
  echo "bench_smoke_test: no median row for the evacuation" >&2
  exit 1
}
# Columns: state, devices/job, jobs, streams, transport, run, 1-job GB/s,
# aggregate GB/s, ..., succeeded (16th), verified (17th).
agg="$(awk -F'|' '{gsub(/ /, "", $9); print $9}' <<<"$row")"
succeeded="$(awk -F'|' '{gsub(/ /, "", $17); print $17}' <<<"$row")"
verified="$(awk -F'|' '{gsub(/ /, "", $18); print $18}' <<<"$row")"
if [[ "$succeeded" != 4/4 || "$verified" != 4/4 ]]; then
  echo "bench_smoke_test: evacuation: succeeded $succeeded, verified $verified" >&2
  exit 1
fi
if ! python3 -c "import sys; sys.exit(0 if float('$agg') > 0 else 1)"; then
  echo "bench_smoke_test: evacuation: aggregate $agg GB/s" >&2
  exit 1
fi
python3 - "$evac_json" <<'PY'
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1])]
if len(lines) != 1:
    sys.exit(f"bench_smoke_test: want 1 evacuation in the JSON, got {len(lines)}")
r = lines[0]["evacuation"]
jobs = [r["one_job"], *r["batch"]]
if len(r["batch"]) != 4 or len({j["job"] for j in jobs}) != 5:
    sys.exit(f"bench_smoke_test: evacuation jobs {[j['job'] for j in jobs]}")
for j in jobs:
    if (j["phase"], j["dst_phase"]) != ("PHASE_SUCCEEDED",) * 2 or \
            not j["verified"] or j["bytes"] < 2 << 20 or not j["gbps"]:
        sys.exit(f"bench_smoke_test: evacuation job {j}")
if r["window_from"] != "jobs" or not r["aggregate_gbps"] or \
        not r["job_gbps_max_over_min"]:
    sys.exit(f"bench_smoke_test: evacuation window from {r['window_from']}, "
             f"aggregate {r['aggregate_gbps']}, max/min "
             f"{r['job_gbps_max_over_min']}")
PY
echo "bench_smoke_test: OK"
