#!/bin/sh
# Runs inside the QEMU guest (busybox sh), from guest_test.sh:
#
#   agents_test.sh EDU0 EDU1
#
# A source and a destination migd on 127.0.0.1, each owning one edu device
# (bound to edu_vfio_pci, in its own IOMMU group) through a
# "vfio NAME bdf=..." device line; migctl migrates edu #0 to edu #1. Then:
#   - edu #1 holds edu #0's registers, internal memory and factorial, and
#     works (edu_uapi_check prepare/verify around the migration);
#   - a transfer corrupted on the way fails the job, the destination agent
#     resets its device, and the job reports the cause;
#   - a device state the destination kernel driver rejects (the source
#     driver's fault_corrupt_record: the stream crosses intact, RESUMING ->
#     STOP fails with EBADMSG) fails the job as STATE_REJECTED, and the
#     destination device is back in RUNNING.
# Prints PASS/FAIL/SKIP lines like guest_test.sh.

EDU0=$1
EDU1=$2
T=/tmp/agents
BIN=/opt
START_DEADLINE=90   # seconds; gRPC start-up is slow under software emulation

say() { echo "$*"; }
group_of() { basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
indent() { sed 's/^/    /'; }

G0=$(group_of "$EDU0")
G1=$(group_of "$EDU1")
mkdir -p "$T"
printf 'vfio edu0 bdf=%s\n' "$EDU0" >"$T/source.conf"
printf 'vfio edu1 bdf=%s\n' "$EDU1" >"$T/destination.conf"

SRC_PID=""
DST_PID=""

# start_agent NAME [extra flags]: starts migd, sets ${NAME}_ADDR when serving.
start_agent() {
  name=$1
  shift
  rm -f "$T/$name.port"
  "$BIN/migd" --insecure --listen=127.0.0.1:0 --port_file="$T/$name.port" \
    --name="$name" --devices_config="$T/$name.conf" "$@" >"$T/$name.log" 2>&1 &
  pid=$!
  waited=0
  while [ ! -s "$T/$name.port" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "FAIL agents_start: the $name agent exited before serving:"
      indent <"$T/$name.log" | tail -n 20
      return 1
    fi
    if [ $waited -ge $((START_DEADLINE * 10)) ]; then
      say "FAIL agents_start: the $name agent wrote no port in ${START_DEADLINE}s"
      indent <"$T/$name.log" | tail -n 20
      kill "$pid"
      return 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  addr="127.0.0.1:$(cat "$T/$name.port")"
  if [ "$name" = source ]; then SRC_PID=$pid; SRC=$addr; else DST_PID=$pid; DST=$addr; fi
  return 0
}

stop_agent() {
  pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}

stop_agents() {
  stop_agent "$SRC_PID"
  stop_agent "$DST_PID"
  SRC_PID=""
  DST_PID=""
}

show_logs() {
  for name in source destination; do
    say "  -- $name agent log (last lines)"
    tail -n 25 "$T/$name.log" | indent
  done
}

# ---- a migration, verified on the destination device ----

# Deterministic internal memory: the driver's churn off while the agents run.
echo 0 >/sys/module/edu_vfio_pci/parameters/churn_ms
if ! "$BIN/edu_uapi_check" prepare "$G0" "$EDU0" "$T/expect"; then
  say "FAIL agents_prepare: could not give edu #0 its state"
  exit 0
fi

t0=$(uptime_s)
start_agent source || exit 0
start_agent destination || { stop_agents; exit 0; }
say "  agents serving after $(awk -v a="$t0" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }') s: source $SRC, destination $DST"
"$BIN/migctl" --agent="$SRC" devices 2>&1 | indent
"$BIN/migctl" --agent="$DST" devices 2>&1 | indent

t0=$(uptime_s)
"$BIN/migctl" --agent="$SRC" migrate --job=vm-1 --devices=edu0:edu1 \
  --destination="$DST" >"$T/migrate.out" 2>&1
rc=$?
t1=$(uptime_s)
indent <"$T/migrate.out"
"$BIN/migctl" --agent="$SRC" status vm-1 >"$T/status.out" 2>&1
indent <"$T/status.out"
if [ $rc = 0 ]; then
  say "PASS agents_migrate: migctl migrate edu0 ($EDU0) -> edu1 ($EDU1) through two migd agents: job vm-1 completed (uptime $t0 -> $t1)"
else
  say "FAIL agents_migrate: migctl migrate exited with $rc"
  show_logs
fi
grep -iE 'dirty|logging|EOPNOTSUPP' "$T/source.log" | head -n 5 | indent
stop_agents

# The destination agent released edu #1 (closing it resets the migration
# state; the device state stays): check it against edu #0's.
if [ $rc = 0 ]; then
  "$BIN/edu_uapi_check" verify "$G1" "$EDU1" "$T/expect"
fi

# ---- a corrupted transfer ----

start_agent source --test_fault=corrupt_chunk:2 || exit 0
start_agent destination || { stop_agents; exit 0; }
"$BIN/migctl" --agent="$SRC" migrate --job=vm-2 --devices=edu0:edu1 \
  --destination="$DST" >"$T/migrate2.out" 2>&1
rc=$?
"$BIN/migctl" --agent="$DST" status vm-2 >"$T/status2.out" 2>&1
"$BIN/migctl" --agent="$DST" devices >"$T/devices2.out" 2>&1
indent <"$T/migrate2.out"
indent <"$T/status2.out"
indent <"$T/devices2.out"
if [ $rc = 0 ]; then
  say "FAIL agents_corrupt_stream: a migration with a corrupted chunk succeeded"
elif grep -qi 'corrupt' "$T/migrate2.out" "$T/status2.out"; then
  say "PASS agents_corrupt_stream: a chunk corrupted in transit failed job vm-2 with the cause reported ($(grep -hio '[A-Z_]*CORRUPT[A-Z_]*' "$T/migrate2.out" "$T/status2.out" | head -n 1))"
else
  say "FAIL agents_corrupt_stream: job vm-2 failed but no corruption cause was reported"
  show_logs
fi
stop_agents

# ---- a state the destination driver rejects ----

start_agent source || exit 0
start_agent destination || { stop_agents; exit 0; }
echo 3 >/sys/module/edu_vfio_pci/parameters/fault_corrupt_record
"$BIN/migctl" --agent="$SRC" migrate --job=vm-3 --devices=edu0:edu1 \
  --destination="$DST" >"$T/migrate3.out" 2>&1
rc=$?
"$BIN/migctl" --agent="$DST" status vm-3 >"$T/status3.out" 2>&1
"$BIN/migctl" --agent="$DST" devices >"$T/devices3.out" 2>&1
indent <"$T/migrate3.out"
indent <"$T/status3.out"
indent <"$T/devices3.out"
dmesg | grep -E 'fault injection|stream rejected' | tail -n 2 | indent
dst_state=$(awk '$1 == "edu1" { print $3 }' "$T/devices3.out")
if [ $rc = 0 ]; then
  say "FAIL agents_state_rejected: a migration of a corrupted device state succeeded"
elif ! grep -q 'STATE_REJECTED' "$T/migrate3.out" "$T/status3.out"; then
  say "FAIL agents_state_rejected: job vm-3 failed without STATE_REJECTED"
  show_logs
elif [ "$dst_state" != RUNNING ]; then
  say "FAIL agents_state_rejected: destination device edu1 is $dst_state after the failed job, want RUNNING (reset)"
  show_logs
else
  say "PASS agents_state_rejected: the destination driver refused the loaded state (RESUMING -> STOP: EBADMSG); job vm-3 failed with STATE_REJECTED and the destination agent reset edu1 to RUNNING"
fi
echo 0 >/sys/module/edu_vfio_pci/parameters/fault_corrupt_record
stop_agents
echo 20 >/sys/module/edu_vfio_pci/parameters/churn_ms
