#!/usr/bin/env bash
# The migd demo: two agents on 127.0.0.1 migrate three emulated devices, then
# the destination's device state is checked against the source's.
#
#   e2e/demo/demo.sh MIGD MIGCTL
#
# MIGD and MIGCTL are the built binaries (tools/demo builds them and calls this;
# //e2e/demo:demo_test runs it in the test suite). Exits 0 only when the
# migration succeeded and every destination device holds exactly its source's
# state. The agents are stopped on every exit path.
set -euo pipefail

if (($# != 2)); then
  echo "usage: $0 MIGD MIGCTL" >&2
  exit 2
fi

abspath() {
  case "$1" in
    /*) echo "$1" ;;
    *) echo "$PWD/$1" ;;
  esac
}
MIGD="$(abspath "$1")"
MIGCTL="$(abspath "$2")"
for bin in "$MIGD" "$MIGCTL"; do
  if [[ ! -x "$bin" ]]; then
    echo "demo: $bin is not an executable" >&2
    exit 2
  fi
done
if ! command -v python3 >/dev/null 2>&1; then
  echo "demo: python3 is needed to read migctl's JSON output" >&2
  exit 2
fi

readonly JOB="demo-1"
readonly STATE_SIZE="32MiB"  # the same on both sides: states must fit
readonly SRC_DEVICES=(emu0 emu1 emu2)
readonly DST_DEVICES=(dst0 dst1 dst2)
readonly START_DEADLINE_SECONDS=30
readonly STOP_DEADLINE_SECONDS=10

pairs=""
for i in "${!SRC_DEVICES[@]}"; do
  pairs+="${pairs:+,}${SRC_DEVICES[$i]}:${DST_DEVICES[$i]}"
done
readonly PAIRS="$pairs"

tmp="$(mktemp -d "${TEST_TMPDIR:-${TMPDIR:-/tmp}}/migd-demo.XXXXXX")"
declare -A agent_pid=()  # agent name -> pid

# Stops the agents (SIGTERM, then SIGKILL after a deadline), shows their logs
# if the demo failed, removes the temp dir. Runs on every exit.
cleanup() {
  local rc=$? name pid deadline
  set +e
  for name in "${!agent_pid[@]}"; do
    kill -TERM "${agent_pid[$name]}" 2>/dev/null
  done
  for name in "${!agent_pid[@]}"; do
    pid="${agent_pid[$name]}"
    deadline=$((SECONDS + STOP_DEADLINE_SECONDS))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "demo: agent $name (pid $pid) ignored SIGTERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
  if ((rc != 0)); then
    for name in "${!agent_pid[@]}"; do
      echo "---- last lines of the $name agent's log ----" >&2
      tail -n 30 "$tmp/$name.log" >&2
    done
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

section() { printf '\n== %s\n' "$*"; }

# start_agent NAME SEED DEVICES...: starts an agent on a free port.
start_agent() {
  local name="$1" seed="$2"
  shift 2
  local devices
  devices="$(IFS=,; echo "$*")"
  "$MIGD" --listen=127.0.0.1:0 --port_file="$tmp/$name.port" --insecure \
    --name="$name" --emulated_devices="$devices" \
    --emulated_state_size="$STATE_SIZE" --emulated_seed="$seed" \
    >"$tmp/$name.log" 2>&1 &
  agent_pid[$name]=$!
}

# wait_for_port NAME: prints the port the agent wrote to its port file, polling
# until it appears; fails if the agent exits or the deadline passes.
wait_for_port() {
  local name="$1" file="$tmp/$1.port" port=""
  local deadline=$((SECONDS + START_DEADLINE_SECONDS))
  while ((SECONDS < deadline)); do
    if [[ -s "$file" ]]; then
      port="$(tr -d '[:space:]' <"$file")"
      if [[ "$port" =~ ^[1-9][0-9]*$ ]]; then
        echo "$port"
        return 0
      fi
    fi
    if ! kill -0 "${agent_pid[$name]}" 2>/dev/null; then
      echo "demo: the $name agent exited before serving" >&2
      return 1
    fi
    sleep 0.05
  done
  echo "demo: the $name agent wrote no port to $file within" \
    "${START_DEADLINE_SECONDS}s" >&2
  return 1
}

# Different seeds, so the destination devices start with different state.
start_agent source 1 "${SRC_DEVICES[@]}"
start_agent destination 2 "${DST_DEVICES[@]}"
SRC="127.0.0.1:$(wait_for_port source)"
DST="127.0.0.1:$(wait_for_port destination)"

section "Source agent $SRC"
"$MIGCTL" --agent="$SRC" devices
section "Destination agent $DST"
"$MIGCTL" --agent="$DST" devices

# compare_digests WHEN: prints, per device pair, whether the destination's
# state digest equals the source's. With WHEN=after, exits non-zero unless
# every pair matches.
compare_digests() {
  local when="$1"
  "$MIGCTL" --agent="$SRC" --output=json devices >"$tmp/src-devices.json"
  "$MIGCTL" --agent="$DST" --output=json devices >"$tmp/dst-devices.json"
  python3 - "$when" "$PAIRS" "$tmp/src-devices.json" "$tmp/dst-devices.json" \
    <<'PY'
import json
import sys

when, pairs, src_file, dst_file = sys.argv[1:5]


def digests(path):
    with open(path) as f:
        return {d["name"]: d.get("state_digest", "")
                for d in json.load(f).get("devices", [])}


src, dst = digests(src_file), digests(dst_file)
ok = True
for pair in pairs.split(","):
    s, d = pair.split(":")
    a, b = src.get(s, ""), dst.get(d, "")
    same = bool(a) and a == b
    if when == "before":
        print(f"  {s} -> {d}: {'same' if same else 'different'} "
              f"({a or 'no digest'} vs {b or 'no digest'})")
        continue
    verdict = "VERIFIED" if same else "MISMATCH"
    print(f"  {s} -> {d}  {verdict}  source {a or 'no digest'}, "
          f"destination {b or 'no digest'}")
    ok = ok and same
sys.exit(0 if ok else 1)
PY
}

section "Before: destination state vs source state"
compare_digests before

section "Migrating job $JOB: $PAIRS"
migrate_rc=0
"$MIGCTL" --agent="$SRC" migrate --job="$JOB" --devices="$PAIRS" \
  --destination="$DST" || migrate_rc=$?

section "Summary"
"$MIGCTL" --agent="$SRC" --output=json status "$JOB" >"$tmp/src-job.json"
"$MIGCTL" --agent="$DST" --output=json status "$JOB" >"$tmp/dst-job.json"
python3 - "$tmp/src-job.json" "$tmp/dst-job.json" <<'PY'
import json
import sys


def human_bytes(n):
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def seconds(duration):  # proto3 JSON Duration: "1.250s"
    return float(duration[:-1]) if duration else 0.0


def human_seconds(s):
    return f"{s * 1000:.0f}ms" if s < 1 else f"{s:.2f}s"


rows = [("JOB", "SIDE", "PHASE", "BYTES", "THROUGHPUT", "DOWNTIME")]
for path in sys.argv[1:]:
    with open(path) as f:
        m = json.load(f)
    rate = float(m.get("throughput_bytes_per_second", 0))
    if rate <= 0 and seconds(m.get("transfer_time")) > 0:
        rate = int(m.get("bytes_done", 0)) / seconds(m.get("transfer_time"))
    rows.append((
        m["job_id"],
        m.get("role", "").removeprefix("ROLE_").lower(),
        m.get("phase", "").removeprefix("PHASE_"),
        human_bytes(int(m.get("bytes_done", 0))),
        human_bytes(rate) + "/s" if rate > 0 else "-",
        human_seconds(seconds(m.get("downtime"))) if m.get("downtime") else "-",
    ))
widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
for r in rows:
    print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
PY

if ((migrate_rc != 0)); then
  echo "demo: the migration did not succeed (migctl exited $migrate_rc)" >&2
  exit 1
fi

section "Verify: destination state digest == source state digest"
if ! compare_digests after; then
  echo "demo: FAILED: some destination devices do not hold their source's" \
    "state" >&2
  exit 1
fi
echo
echo "demo: OK: all ${#SRC_DEVICES[@]} devices VERIFIED"
