#!/usr/bin/env bash
# The migd demo: two agents on 127.0.0.1 live-migrate three emulated devices
# whose state keeps changing while they run (a dirtying workload), with
# pre-copy: the state moves while the devices run, iteration after iteration,
# until what is left fits the downtime limit; then the devices stop, the rest
# moves, and the destination devices run. The destination's device state is
# then checked against the source's.
#
#   e2e/demo/demo.sh MIGD MIGCTL [PKI [PLUGIN]]
#
# MIGD and MIGCTL are the built binaries (tools/demo builds them and calls this;
# //e2e/demo:demo_test runs it in the test suite). PKI is tools/pki (default:
# the one in this script's repository). PLUGIN is the emulated devices' vendor
# plugin (vendor-plugins/emulated): both agents load it, and the demo checks
# the devices' compatibility (migctl check) before it migrates them. Everything runs with mutual TLS: the
# demo mints a development PKI in its temp dir, the source agent serves as
# agent-a, the destination as agent-b, and migctl calls them with the
# operator's certificate, from a migctl config file that names both agents.
# Exits 0 only when the migration succeeded with pre-copy and every
# destination device holds exactly its source's state. The agents are stopped
# on every exit path.
set -euo pipefail

if (($# < 2 || $# > 4)); then
  echo "usage: $0 MIGD MIGCTL [PKI [PLUGIN]]" >&2
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
PKI="$(abspath "${3:-$(dirname "${BASH_SOURCE[0]}")/../../tools/pki}")"
PLUGIN="${4:+$(abspath "$4")}"
if [[ -n "$PLUGIN" && ! -f "$PLUGIN" ]]; then
  echo "demo: plugin $PLUGIN does not exist" >&2
  exit 2
fi
for bin in "$MIGD" "$MIGCTL" "$PKI"; do
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
# The same on both sides too: the destination must offer what the source has.
readonly FLAGS="STOP_COPY|P2P|PRE_COPY"
# Bytes of its own state each source device changes per second while it runs.
readonly DIRTY_RATE="4MiB"
# Switch over once the state left to move fits in this much downtime.
readonly DOWNTIME_LIMIT="300ms"
readonly SRC_DEVICES=(emu0 emu1 emu2)
readonly DST_DEVICES=(dst0 dst1 dst2)
# Who is who: the certificates tools/pki mints for the agents, and their
# identities (URI SANs).
readonly TRUST_DOMAIN="spiffe://migd.local"
declare -A CERT=([source]=agent-a [destination]=agent-b)
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

# write_config NAME FIRST_SEED EXTRA DEVICES...: writes the agent's devices
# config, one emulated device per line; seeds count up from FIRST_SEED, EXTRA
# goes at the end of each line.
write_config() {
  local name="$1" seed="$2" extra="$3" device
  shift 3
  {
    echo "# $name agent: ${#@} emulated devices"
    for device in "$@"; do
      echo "emulated $device size=$STATE_SIZE seed=$seed flags=$FLAGS$extra"
      seed=$((seed + 1))
    done
  } >"$tmp/$name.conf"
}

# start_agent NAME: starts an agent on a free port with its devices config,
# serving with mutual TLS as ${CERT[NAME]}, under the PKI's policy, with a job
# journal of its own in the temp dir.
start_agent() {
  local name="$1" cert="$tmp/pki/${CERT[$1]}"
  "$MIGD" --listen=127.0.0.1:0 --port_file="$tmp/$name.port" \
    --tls_cert="$cert.pem" --tls_key="$cert.key" --tls_ca="$tmp/pki/ca.pem" \
    --tls_policy="$tmp/pki/policy.conf" --state_dir="$tmp/$name.state" \
    --name="$name" --devices_config="$tmp/$name.conf" \
    --plugin_dir="${PLUGIN:+$tmp/plugins}" \
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

# The source devices run a workload that changes their state; the destination
# devices have different seeds (so they start with different state) and no
# workload (so, once running, they keep exactly the state they received).
write_config source 1 " dirty_rate=$DIRTY_RATE" "${SRC_DEVICES[@]}"
write_config destination 101 "" "${DST_DEVICES[@]}"
if ! "$PKI" "$tmp/pki" >/dev/null; then
  echo "demo: $PKI could not mint the certificates (it needs openssl)" >&2
  exit 1
fi
if [[ -n "$PLUGIN" ]]; then
  mkdir -p "$tmp/plugins"
  cp "$PLUGIN" "$tmp/plugins/"
fi
start_agent source
start_agent destination
SRC_ADDR="127.0.0.1:$(wait_for_port source)"
DST_ADDR="127.0.0.1:$(wait_for_port destination)"
SRC_ID="$TRUST_DOMAIN/agent/${CERT[source]}"
DST_ID="$TRUST_DOMAIN/agent/${CERT[destination]}"
# migctl's config file: the operator's certificate, and the two agents by
# name with the identity each must prove (paths relative to the file).
cat >"$tmp/migctl.conf" <<EOF
tls_cert = pki/operator.pem
tls_key  = pki/operator.key
tls_ca   = pki/ca.pem
[agent src]
address  = $SRC_ADDR
identity = $SRC_ID
[agent dst]
address  = $DST_ADDR
identity = $DST_ID
EOF
export MIGCTL_CONFIG="$tmp/migctl.conf"
# The caller's migctl settings would override the file's.
unset MIGCTL_TLS_CERT MIGCTL_TLS_KEY MIGCTL_TLS_CA MIGCTL_INSECURE
readonly SRC=src DST=dst  # migctl --agent=src, --destination=dst

echo "Mutual TLS: source agent $SRC_ID, destination agent $DST_ID," \
  "migctl $TRUST_DOMAIN/operator"

section "Source agent $SRC_ADDR (--devices_config)"
sed 's/^/  /' "$tmp/source.conf"
echo
"$MIGCTL" --agent="$SRC" devices
section "Destination agent $DST_ADDR (--devices_config)"
sed 's/^/  /' "$tmp/destination.conf"
echo
"$MIGCTL" --agent="$DST" devices

# compare_digests WHEN: prints, per device pair, whether the destination's
# state digest equals the source's. With WHEN=after, exits non-zero unless
# every pair matches and every source device is stopped: a running source
# device keeps changing its state, so only a stopped one has a final digest.
compare_digests() {
  local when="$1"
  "$MIGCTL" --agent="$SRC" --output=json devices >"$tmp/src-devices.json"
  "$MIGCTL" --agent="$DST" --output=json devices >"$tmp/dst-devices.json"
  python3 - "$when" "$PAIRS" "$tmp/src-devices.json" "$tmp/dst-devices.json" \
    <<'PY'
import json
import sys

when, pairs, src_file, dst_file = sys.argv[1:5]


def devices(path):
    with open(path) as f:
        return {d["name"]: d for d in json.load(f).get("devices", [])}


src, dst = devices(src_file), devices(dst_file)
ok = True
for pair in pairs.split(","):
    s, d = pair.split(":")
    a = src.get(s, {}).get("state_digest", "")
    b = dst.get(d, {}).get("state_digest", "")
    state = src.get(s, {}).get("state", "").removeprefix("DEVICE_STATE_")
    same = bool(a) and a == b
    if when == "before":
        print(f"  {s} -> {d}: {'same' if same else 'different'} "
              f"({a or 'no digest'} vs {b or 'no digest'})")
        continue
    if state != "STOP":
        verdict = f"UNSETTLED (source device is {state or 'unknown'}, " \
            "not STOP: its state may still change)"
        same = False
    else:
        verdict = "VERIFIED" if same else "MISMATCH"
    print(f"  {s} -> {d}  {verdict}  source {a or 'no digest'}, "
          f"destination {b or 'no digest'}")
    ok = ok and same
sys.exit(0 if ok else 1)
PY
}

section "Before: destination state vs source state (the source keeps changing)"
compare_digests before

if [[ -n "$PLUGIN" ]]; then
  section "Vendor plugins on the source agent"
  "$MIGCTL" --agent="$SRC" plugins
  section "Dry run: can $PAIRS migrate? (nothing changes)"
  "$MIGCTL" --agent="$SRC" check --devices="$PAIRS" --destination="$DST"
fi

section "Migrating job $JOB: $PAIRS (downtime limit $DOWNTIME_LIMIT)"
migrate_rc=0
"$MIGCTL" --agent="$SRC" migrate --job="$JOB" --devices="$PAIRS" \
  --destination="$DST" --downtime_limit="$DOWNTIME_LIMIT" || migrate_rc=$?

section "Summary"
"$MIGCTL" --agent="$SRC" --output=json status "$JOB" >"$tmp/src-job.json"
"$MIGCTL" --agent="$DST" --output=json status "$JOB" >"$tmp/dst-job.json"
summary_rc=0
python3 - "$DOWNTIME_LIMIT" "$tmp/src-job.json" "$tmp/dst-job.json" <<'PY' ||
import json
import sys


def human_bytes(n):
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def nanos(duration):  # proto3 JSON Duration: "1.250s", exactly
    if not duration:
        return 0
    whole, _, frac = duration[:-1].partition(".")
    return int(whole) * 10**9 + int((frac + "000000000")[:9])


def human_duration(ns):  # as migctl prints durations
    if ns == 0:
        return "0s"
    if ns < 1000:
        return "<1us"
    if ns < 10**6:
        return f"{ns // 1000}us"
    if ns < 10**7:
        return f"{ns / 10**6:.1f}ms"
    if ns < 10**9:
        return f"{ns // 10**6}ms"
    return f"{ns / 10**9:.2f}s" if ns < 10 * 10**9 else f"{ns / 10**9:.1f}s"


limit = sys.argv[1]
jobs = []
for path in sys.argv[2:]:
    with open(path) as f:
        jobs.append(json.load(f))

rows = [("SIDE", "PHASE", "PRE-COPY", "PRE-COPY BYTES", "STOP-COPY BYTES",
         "THROUGHPUT", "DOWNTIME")]
for m in jobs:
    rate = float(m.get("throughput_bytes_per_second", 0))
    if rate <= 0 and nanos(m.get("transfer_time")) > 0:
        rate = int(m.get("bytes_done", 0)) * 1e9 / nanos(m.get("transfer_time"))
    precopy = "-"
    if m.get("precopy"):
        p = m["precopy"]
        n = int(p.get("iteration", 0))
        precopy = (f"{n} iteration{'' if n == 1 else 's'}, "
                   + ("converged" if p.get("converged") else "not converged"))
    rows.append((
        m.get("role", "").removeprefix("ROLE_").lower(),
        m.get("phase", "").removeprefix("PHASE_"),
        precopy,
        human_bytes(int(m.get("precopy_bytes", 0))),
        human_bytes(int(m.get("stop_copy_bytes", 0))),
        human_bytes(rate) + "/s" if rate > 0 else "-",
        human_duration(nanos(m.get("downtime"))) if m.get("downtime") else "-",
    ))
print(f"  job {jobs[0]['job_id']}")
widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
for r in rows:
    print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())

source = jobs[0]
b = source.get("downtime_breakdown") or {}
if source.get("downtime"):
    parts = [f"{name} {human_duration(nanos(b[key]))}"
             for name, key in (("stop-copy transfer", "stop_copy_transfer"),
                               ("destination load", "load"),
                               ("resume", "resume")) if b.get(key)]
    print(f"\n  downtime {human_duration(nanos(source['downtime']))} "
          f"(limit {limit}): " + (", ".join(parts) or "no breakdown"))
for notice in source.get("notices", []):
    print(f"  notice: {notice}")

if source.get("phase") == "PHASE_SUCCEEDED":
    p = source.get("precopy") or {}
    if int(p.get("iteration", 0)) < 1 or int(source.get("precopy_bytes", 0)) == 0:
        print("demo: the migration succeeded without pre-copy", file=sys.stderr)
        sys.exit(1)
PY
  summary_rc=$?

if ((migrate_rc != 0)); then
  echo "demo: the migration did not succeed (migctl exited $migrate_rc)" >&2
  exit 1
fi
if ((summary_rc != 0)); then
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
