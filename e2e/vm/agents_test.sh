#!/bin/sh
# Runs inside the QEMU guest (busybox sh), from guest_test.sh:
#
#   agents_test.sh EDU0 EDU1
#
# A source and a destination migd on 127.0.0.1, each owning one edu device
# (bound to edu_vfio_pci, in its own IOMMU group) through a
# "vfio NAME bdf=..." device line; migctl migrates edu #0 to edu #1. All of it
# over mutual TLS, with the certificates vm_test.sh packed into /etc/migd/tls:
# the source agent serves as agent-a, the destination as agent-b, migctl
# calls them as the operator. Then:
#   - the destination agent killed (kill -9) with edu #1 in RESUMING, its
#     load session held (job vm-0 prepared): a fresh open shows what the
#     driver made of the close (edu_uapi_check state); restarted on its state
#     dir, the agent fails vm-0 as AGENT_RESTARTED with a recovery notice and
#     resets edu #1, never through an arc out of RESUMING (no STOP among the
#     job's state changes); vm-1 below then migrates into it;
#   - each side of job vm-1 names the other's certificate identity (peer id);
#   - edu #1 holds edu #0's registers, internal memory and factorial, and
#     works (edu_uapi_check prepare/verify around the migration);
#   - a transfer corrupted on the way fails the job, the destination agent
#     resets its device, and the job reports the cause;
#   - a device state the destination kernel driver rejects (the source
#     driver's fault_corrupt_record: the stream crosses intact, RESUMING ->
#     STOP fails with EBADMSG) fails the job as STATE_REJECTED, and the
#     destination device is back in RUNNING;
#   - the source agent killed (kill -9) with edu #0 in PRE_COPY (on kernels
#     without PRE_COPY, 6.1: in STOP_COPY, where the decision to commit
#     may be journaled already, COMMIT not sent): the destination
#     agent is frozen (SIGSTOP) once migctl's progress shows the device
#     there, which holds the source in that state; restarted on its state
#     dir, the source agent fails the job as AGENT_RESTARTED with a recovery
#     notice and edu #0 RUNNING, and edu #0 still holds exactly what it held
#     (edu_uapi_check verify ... agents_kill_source) and works;
#   - with the edu plugin loaded (vendor-plugins/edu, --plugin_dir) and
#     edu1's state_version (sysfs edu_migration/) one above edu0's:
#     state_version cannot change while an agent holds edu1 (EBUSY); `migctl
#     check` is blocked (exit 3) naming state_version and both values; job
#     vm-6 is refused as INCOMPATIBLE with edu0 never out of RUNNING and its
#     state intact; the versions equal again, check says MIGRATABLE and job
#     vm-7 migrates;
#   - a VMM's device (e2e/vm/edu_vmm owns edu #0: container, group, a DMA
#     mapping) reaches the source agent as a device fd over a UNIX socket
#     ("vfio edu0 fd_socket=..."), and migrates from there; meanwhile the VMM
#     has the device DMA into RAM while the agent logs it, and `migctl
#     dirty-pages` consumes what the agent serves: on kernels that report
#     (6.1) the union of the bitmaps is exactly the pages the device wrote;
#     where DMA_LOGGING_REPORT cannot work (Debian's 6.12: EOPNOTSUPP) every
#     bitmap is all_dirty and the job's notices say every page is dirty.
# Prints PASS/FAIL/SKIP lines like guest_test.sh.

EDU0=$1
EDU1=$2
T=/tmp/agents
BIN=/opt
TLS=/etc/migd/tls
TRUST_DOMAIN=spiffe://migd.local
export MIGCTL_TLS_CERT=$TLS/operator.pem MIGCTL_TLS_KEY=$TLS/operator.key \
  MIGCTL_TLS_CA=$TLS/ca.pem
START_DEADLINE=90   # seconds; gRPC start-up is slow under software emulation
PRECOPY=no
DMA_REPORT=yes
TLS_VALID_FROM=""
[ -f /etc/vmtest.conf ] && . /etc/vmtest.conf

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

# The certificate each agent serves with (and the source dials with).
cert_of() { if [ "$1" = source ]; then echo agent-a; else echo agent-b; fi; }

# start_agent NAME [extra flags]: starts migd with mutual TLS and a fresh job
# journal, sets SRC or DST (the address) when serving.
start_agent() {
  rm -rf "$T/$1.state"
  : >"$T/$1.log"
  launch_agent "$@"
}

# restart_agent NAME [extra flags]: starts it again on the state dir it had
# (after a kill -9): it recovers the journal's unfinished jobs before it
# serves. Its log goes on after the killed agent's.
restart_agent() {
  echo "==== restarted on $T/$1.state" >>"$T/$1.log"
  launch_agent "$@"
}

launch_agent() {
  name=$1
  shift
  rm -f "$T/$name.port"
  cert=$TLS/$(cert_of "$name")
  "$BIN/migd" --tls_cert="$cert.pem" --tls_key="$cert.key" \
    --tls_ca="$TLS/ca.pem" --tls_policy="$TLS/policy.conf" \
    --state_dir="$T/$name.state" \
    --listen=127.0.0.1:0 --port_file="$T/$name.port" \
    --name="$name" --devices_config="$T/$name.conf" "$@" >>"$T/$name.log" 2>&1 &
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

# stop_agent PID...: SIGTERM to all at once (they shut down side by side),
# SIGKILL to any still there after 10 s.
stop_agent() {
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null
  i=0
  while [ $i -lt 100 ]; do
    alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 1 ] || break
    sleep 0.1
    i=$((i + 1))
  done
  kill -KILL "$@" 2>/dev/null
  for pid in "$@"; do wait "$pid" 2>/dev/null; done
}

stop_agents() {
  stop_agent $SRC_PID $DST_PID
  SRC_PID=""
  DST_PID=""
}

# wait_for PRED SECONDS: polls the shell predicate PRED every 0.1 s.
wait_for() {
  i=0
  while ! eval "$1"; do
    [ $i -ge $(($2 * 10)) ] && return 1
    sleep 0.1
    i=$((i + 1))
  done
  return 0
}

# Fields of `migctl --output=json status` (one field a line): json_field
# FILE NAME is the first string NAME holds (phase, reason; state: the first
# device's); recovery_notice FILE the notice recovery left; state_changes
# FILE the job's device state changes in order ("RESUMING RUNNING").
json_field() {
  sed -n "s/^ *\"$2\": \"\([^\"]*\)\".*/\1/p" "$1" | head -n 1
}
recovery_notice() {
  sed -n 's/^ *"\(recovery: [^"]*\)".*/\1/p' "$1" | head -n 1
}
state_changes() {
  awk '/"state_changes": \[\]/ { exit }
    /"state_changes"/ { on = 1; next }
    on && /\]/ { exit }
    on && /"state"/ {
      s = $0; sub(/.*DEVICE_STATE_/, "", s); sub(/".*/, "", s)
      printf "%s%s", sep, s; sep = " "
    }' "$1"
}
# device_use FILE NAME: "STATE JOB" of device NAME in `migctl devices`.
device_use() { awk -v n="$2" '$1 == n { print $3 " " $5 }' "$1"; }

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

# The certificates are valid from TLS_VALID_FROM (the host's clock, an hour
# before minting): a guest clock behind it fails every handshake.
now=$(date +%s)
if [ -n "$TLS_VALID_FROM" ] && [ "$now" -lt "$TLS_VALID_FROM" ]; then
  say "FAIL agents_clock: the guest clock ($(date -u)) is before the certificates' start ($TLS_VALID_FROM, seconds since 1970)"
  exit 0
fi

t0=$(uptime_s)
start_agent source || exit 0
start_agent destination || { stop_agents; exit 0; }
say "  agents serving after $(awk -v a="$t0" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }') s: source $SRC, destination $DST"
"$BIN/migctl" --agent="$SRC" devices 2>&1 | indent

# ---- the destination agent killed with its device in RESUMING ----

# Job vm-0 prepared on the destination: edu1 in RESUMING, its load session
# (the data fd) held by the agent. kill -9; a fresh open of edu1 shows what
# the driver made of the close; the agent restarted on its state dir must
# fail vm-0 as AGENT_RESTARTED and reset edu1 (a stale RESUMING is never
# sent through an arc: no STOP among the job's state changes). Job vm-1 then
# migrates into the restarted agent and edu1 is verified as always.
kill_destination() {
  check=agents_kill_destination_resuming
  if ! "$BIN/migctl" --agent="$DST" prepare --job=vm-0 --devices=edu0:edu1 \
    --source_agent="$SRC" >/dev/null 2>"$T/prepare0.err"; then
    say "FAIL $check: prepare vm-0 on the destination failed:"
    indent <"$T/prepare0.err"
    return
  fi
  "$BIN/migctl" --agent="$DST" devices >"$T/devices0.out" 2>&1
  indent <"$T/devices0.out"
  held=$(device_use "$T/devices0.out" edu1)
  if [ "$held" != "RESUMING vm-0" ]; then
    say "FAIL $check: after prepare edu1 is '$held', want RESUMING held by job vm-0"
    "$BIN/migctl" --agent="$DST" cancel vm-0 >/dev/null 2>&1
    return
  fi
  kill -KILL "$DST_PID"
  wait "$DST_PID" 2>/dev/null
  DST_PID=""
  if ! found=$("$BIN/edu_uapi_check" state "$G1" "$EDU1" 2>&1); then
    say "FAIL $check: edu1's state after the kill: $found"
    return
  fi
  say "  kill -9 of the destination agent with edu1 in RESUMING (job vm-0); a fresh open of edu1 finds it $found"
  restart_agent destination || return
  restarted=" (into the destination agent restarted after kill -9)"
  "$BIN/migctl" --agent="$DST" --output=json status vm-0 >"$T/status0.json" 2>&1
  phase=$(json_field "$T/status0.json" phase)
  reason=$(json_field "$T/status0.json" reason)
  notice=$(recovery_notice "$T/status0.json")
  changes=$(state_changes "$T/status0.json")
  now=$(json_field "$T/status0.json" state)
  if [ "$phase" != PHASE_FAILED ] || [ "$reason" != ERROR_REASON_AGENT_RESTARTED ]; then
    say "FAIL $check: after the restart job vm-0 is $phase ($reason), want PHASE_FAILED with ERROR_REASON_AGENT_RESTARTED"
    indent <"$T/status0.json"
  elif [ -z "$notice" ]; then
    say "FAIL $check: job vm-0 has no recovery notice:"
    indent <"$T/status0.json"
  elif [ "${changes##* }" != RUNNING ] || case " $changes " in *" STOP "*) true ;; *) false ;; esac; then
    say "FAIL $check: job vm-0's state changes are [$changes], want the reset to RUNNING last and no STOP (an arc out of RESUMING)"
  elif [ "$now" != DEVICE_STATE_RUNNING ]; then
    say "FAIL $check: job vm-0 left edu1 in $now, want DEVICE_STATE_RUNNING"
  else
    say "PASS $check: job vm-0 prepared on the destination (edu1 RESUMING, its load session held by the agent), then kill -9: a fresh open finds edu1 $found; restarted on its state dir, the agent failed vm-0 with ERROR_REASON_AGENT_RESTARTED and the notice \"$notice\"; edu1 RUNNING, the job's state changes [$changes]: the reset, no STOP"
  fi
}

restarted=""
kill_destination
if [ -z "$DST_PID" ]; then
  # Not restarted: a fresh destination, so that the rest still runs.
  start_agent destination || { stop_agents; exit 0; }
fi

t0=$(uptime_s)
"$BIN/migctl" --agent="$SRC" migrate --job=vm-1 --devices=edu0:edu1 \
  --destination="$DST" >"$T/migrate.out" 2>&1
rc=$?
t1=$(uptime_s)
indent <"$T/migrate.out"
"$BIN/migctl" --agent="$SRC" status vm-1 >"$T/status.out" 2>&1
"$BIN/migctl" --agent="$DST" status vm-1 >"$T/dst-status.out" 2>&1
indent <"$T/status.out"
if [ $rc = 0 ]; then
  say "PASS agents_migrate: migctl migrate edu0 ($EDU0) -> edu1 ($EDU1) through two migd agents$restarted: job vm-1 completed (uptime $t0 -> $t1)"
else
  say "FAIL agents_migrate: migctl migrate exited with $rc"
  show_logs
fi
# Who each side saw at the other end of the transfer: the certificates.
peer_id() { awk '$1 == "peer" && $2 == "id" { print $3 }' "$1"; }
src_peer=$(peer_id "$T/status.out")
dst_peer=$(peer_id "$T/dst-status.out")
if [ $rc = 0 ] && [ "$src_peer" = "$TRUST_DOMAIN/agent/agent-b" ] &&
  [ "$dst_peer" = "$TRUST_DOMAIN/agent/agent-a" ]; then
  say "PASS agents_mtls: job vm-1 ran over mutual TLS: the source agent (agent-a) verified peer id $src_peer, the destination (agent-b) bound the token to peer id $dst_peer; migctl called both as $TRUST_DOMAIN/operator"
elif [ $rc = 0 ]; then
  say "FAIL agents_mtls: job vm-1's peer ids are '$src_peer' (source) and '$dst_peer' (destination), want agent-b's and agent-a's"
  indent <"$T/dst-status.out"
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
# The destination stays for vm-3: vm-2 ended on both sides (above).
stop_agent $SRC_PID
SRC_PID=""

# ---- a state the destination driver rejects ----

start_agent source || { stop_agents; exit 0; }
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

# ---- the source agent killed in pre-copy (6.1: in STOP_COPY) ----

# Job vm-5 migrates edu0 to edu1 with the agents of vm-3 (the churn still
# off: edu0 holds what agents_prepare set). Once edu0 is in PRE_COPY
# (STOP_COPY where the kernel has no PRE_COPY) the destination agent is
# frozen (SIGSTOP): the source can then neither end pre-copy (the initial
# data is never acknowledged) nor commit (the state is never reported
# loaded), and holds edu0 there, uncommitted, for as long as it takes. Then
# kill -9 of the source agent and a restart on its state dir: vm-5 must be
# FAILED AGENT_RESTARTED with edu0 RUNNING. The destination goes on
# (SIGCONT: its job fails on the lost source), and once both agents are
# stopped edu0 must hold what agents_prepare set, and work.
kill_source() {
  if [ "$PRECOPY" = yes ]; then
    held=PRE_COPY check=agents_kill_source_precopy
    why="before it acknowledged the initial data"
  else
    held=STOP_COPY check=agents_kill_source_stop_copy
    why="before it reported the state loaded"
  fi
  rm -f "$T/frozen" "$T/migrate5.json"
  # The destination's threads at the lowest priority: on the guest's one CPU
  # what freezes it (the source agent, migctl, this shell) runs first.
  for tid in /proc/"$DST_PID"/task/*; do
    renice -n 19 -p "${tid##*/}" >/dev/null 2>&1
  done
  # migctl's JSON progress, one event a line as it comes: freeze the
  # destination at the first that shows edu0 in $held.
  (
    "$BIN/migctl" --agent="$SRC" --output=json migrate --job=vm-5 \
      --devices=edu0:edu1 --destination="$DST" 2>"$T/migrate5.err"
    echo "migctl exited $?" >>"$T/migrate5.err"
  ) | while IFS= read -r line; do
    printf '%s\n' "$line" >>"$T/migrate5.json"
    case "$line" in
      *"\"state\":\"DEVICE_STATE_$held\""*)
        [ -e "$T/frozen" ] || { kill -STOP "$DST_PID"; : >"$T/frozen"; } ;;
    esac
  done &
  follow=$!
  wait_for '[ -e "$T/frozen" ] || ! kill -0 $follow 2>/dev/null' 60
  if [ ! -e "$T/frozen" ]; then
    say "FAIL $check: job vm-5 never showed edu0 in $held:"
    tail -n 3 "$T/migrate5.json" | indent
    indent <"$T/migrate5.err"
    kill $follow 2>/dev/null
    return
  fi
  # The source as the destination froze it: in $held, not committed.
  phase="" state=""
  i=0
  while [ $i -lt 20 ]; do
    "$BIN/migctl" --agent="$SRC" --output=json status vm-5 >"$T/status5a.json" 2>&1
    phase=$(json_field "$T/status5a.json" phase)
    state=$(json_field "$T/status5a.json" state)
    if [ "$phase" = "PHASE_$held" ] && [ "$state" = "DEVICE_STATE_$held" ]; then
      break
    fi
    case "$phase" in PHASE_SUCCEEDED | PHASE_FAILED | PHASE_CANCELLED | PHASE_IN_DOUBT) break ;; esac
    sleep 0.2
    i=$((i + 1))
  done
  # In PRE_COPY the job has not decided to commit. In STOP_COPY it may have:
  # the decision is journaled while the rest of the state drains, before
  # COMMIT goes out (which it cannot here: the state is never reported
  # loaded), and a restart then asks the destination before it resumes.
  committed=$(grep -q '"committed": true' "$T/status5a.json" && echo yes || echo no)
  if [ "$phase" != "PHASE_$held" ] || [ "$state" != "DEVICE_STATE_$held" ] ||
    { [ "$held" = PRE_COPY ] && [ "$committed" = yes ]; }; then
    say "FAIL $check: with the destination agent frozen job vm-5 is $phase, edu0 $state (committed: $committed), want both in $held (and not committed in PRE_COPY)"
    kill -CONT "$DST_PID"
    return
  fi
  say "  at the kill -9 of the source agent: job vm-5 $phase, edu0 $state, commit decided: $committed, $(json_field "$T/status5a.json" bytes_done) of $(json_field "$T/status5a.json" bytes_total) bytes moved"
  kill -KILL "$SRC_PID"
  wait "$SRC_PID" 2>/dev/null
  SRC_PID=""
  restart_agent source
  up=$?
  kill -CONT "$DST_PID"
  wait $follow
  [ $up = 0 ] || return
  # A job that had decided to commit is IN_DOUBT after the restart until the
  # destination (running again) answers NOT_RUN: wait for its end.
  i=0
  while [ $i -lt 150 ]; do
    "$BIN/migctl" --agent="$SRC" --output=json status vm-5 >"$T/status5.json" 2>&1
    phase=$(json_field "$T/status5.json" phase)
    case "$phase" in PHASE_SUCCEEDED | PHASE_FAILED | PHASE_CANCELLED) break ;; esac
    sleep 0.2
    i=$((i + 1))
  done
  phase=$(json_field "$T/status5.json" phase)
  reason=$(json_field "$T/status5.json" reason)
  notice=$(recovery_notice "$T/status5.json")
  changes=$(state_changes "$T/status5.json")
  now=$(json_field "$T/status5.json" state)
  if [ "$phase" != PHASE_FAILED ] || [ "$reason" != ERROR_REASON_AGENT_RESTARTED ]; then
    say "FAIL $check: after the restart job vm-5 is $phase ($reason), want PHASE_FAILED with ERROR_REASON_AGENT_RESTARTED"
    indent <"$T/status5.json"
  elif [ -z "$notice" ]; then
    say "FAIL $check: job vm-5 has no recovery notice:"
    indent <"$T/status5.json"
  elif [ "${changes##* }" != RUNNING ] || [ "$now" != DEVICE_STATE_RUNNING ]; then
    say "FAIL $check: job vm-5 left edu0 in $now (state changes [$changes]), want RUNNING"
  else
    say "PASS $check: job vm-5 held with edu0 in $held, commit decided: $committed (the destination agent frozen by SIGSTOP $why), then kill -9 of the source agent; restarted on its state dir, it failed vm-5 with ERROR_REASON_AGENT_RESTARTED and the notice \"$notice\"; edu0 RUNNING (state changes [$changes])"
  fi
}

kill_source
stop_agents
# Checked once no agent holds it: what agents_prepare set, and works.
"$BIN/edu_uapi_check" verify "$G0" "$EDU0" "$T/expect" agents_kill_source

# ---- the edu plugin: a destination whose state version differs ----

# The agents load vendor-plugins/edu (--plugin_dir), which compares the
# driver's per-device edu_migration/state_version and mem_kib. edu1's
# state_version set one above edu0's (possible only while no one has edu1
# open): `migctl check` reports the pair blocked (exit 3) naming the field
# and both values, and job vm-6 is refused as INCOMPATIBLE before any state
# moves: edu0 never leaves RUNNING and keeps the state edu_uapi_check
# prepare gave it just before. With
# the versions equal again, check says MIGRATABLE and job vm-7 migrates.
PLUGIN_DIR=$BIN/plugins
ATTR0=/sys/bus/pci/devices/$EDU0/edu_migration
ATTR1=/sys/bus/pci/devices/$EDU1/edu_migration

# True when `migctl devices` of FILE shows device NAME RUNNING, held by no job.
device_free_running() { [ "$(device_use "$1" "$2")" = "RUNNING -" ]; }

plugin_phase() {
  check=agents_plugin_blocked
  v0=$(cat "$ATTR0/state_version" 2>/dev/null)
  v1=$(cat "$ATTR1/state_version" 2>/dev/null)
  m0=$(cat "$ATTR0/mem_kib" 2>/dev/null)
  m1=$(cat "$ATTR1/mem_kib" 2>/dev/null)
  if [ -z "$v0" ] || [ -z "$v1" ] || [ -z "$m0" ] || [ "$m0" != "$m1" ]; then
    say "FAIL $check: edu_migration attributes: edu0 state_version '$v0' mem_kib '$m0', edu1 state_version '$v1' mem_kib '$m1'"
    return
  fi
  if [ ! -e "$PLUGIN_DIR/edu.so" ]; then
    say "FAIL $check: $PLUGIN_DIR/edu.so missing from the initramfs"
    return
  fi
  # Registers afresh (the checks above ran the device): what vm-6 must keep.
  if ! "$BIN/edu_uapi_check" prepare "$G0" "$EDU0" "$T/expect"; then
    say "FAIL $check: could not give edu #0 its state"
    return
  fi
  other=$((v0 + 1))
  if ! echo "$other" 2>"$T/sv.err" >"$ATTR1/state_version"; then
    say "FAIL $check: setting edu1's state_version to $other with no one holding it failed: $(cat "$T/sv.err")"
    return
  fi
  start_agent source --plugin_dir="$PLUGIN_DIR" || return
  start_agent destination --plugin_dir="$PLUGIN_DIR" || return
  "$BIN/migctl" --agent="$DST" plugins 2>&1 | indent

  # The destination agent holds edu1 open: its state_version is fixed.
  if echo "$v0" 2>"$T/sv.err" >"$ATTR1/state_version"; then
    say "FAIL agents_plugin_state_version_busy: edu1's state_version changed while the destination agent holds edu1"
  elif ! grep -qi 'busy' "$T/sv.err"; then
    say "FAIL agents_plugin_state_version_busy: writing edu1's state_version while open failed, but not with EBUSY: $(cat "$T/sv.err")"
  else
    say "PASS agents_plugin_state_version_busy: edu1's state_version cannot change while the destination agent holds edu1 ($(cat "$T/sv.err"))"
  fi

  "$BIN/migctl" --agent="$SRC" check --devices=edu0:edu1 \
    --destination="$DST" >"$T/check6.out" 2>&1
  rc=$?
  indent <"$T/check6.out"
  if [ $rc != 3 ]; then
    say "FAIL $check: migctl check exited $rc with edu1's state_version $other and edu0's $v0, want 3 (blocked)"
    show_logs
  elif ! grep -q 'state_version' "$T/check6.out" ||
    ! grep -q "source $v0, destination $other" "$T/check6.out"; then
    say "FAIL $check: migctl check is blocked but does not name state_version with source $v0, destination $other"
  else
    say "PASS $check: with edu1's state_version $other and edu0's $v0, migctl check exits 3: $(grep -m 1 'blocker' "$T/check6.out" | sed 's/^ *//')"
  fi

  check=agents_plugin_refused
  "$BIN/migctl" --agent="$SRC" migrate --job=vm-6 --devices=edu0:edu1 \
    --destination="$DST" >"$T/migrate6.out" 2>&1
  rc=$?
  "$BIN/migctl" --agent="$SRC" --output=json status vm-6 >"$T/status6.json" 2>&1
  "$BIN/migctl" --agent="$SRC" devices >"$T/devices6.out" 2>&1
  indent <"$T/migrate6.out"
  indent <"$T/devices6.out"
  changes=$(state_changes "$T/status6.json")
  if [ $rc = 0 ]; then
    say "FAIL $check: job vm-6 into a device of another state_version succeeded"
  elif ! grep -q 'INCOMPATIBLE' "$T/migrate6.out" "$T/status6.json"; then
    say "FAIL $check: job vm-6 failed (exit $rc) but not as INCOMPATIBLE"
    show_logs
  elif [ -n "$(echo "$changes" | tr ' ' '\n' | grep -v '^RUNNING$')" ]; then
    say "FAIL $check: job vm-6 moved edu0 through [$changes] before it was refused"
  elif ! device_free_running "$T/devices6.out" edu0; then
    say "FAIL $check: after the refused job edu0 is '$(device_use "$T/devices6.out" edu0)', want RUNNING held by no job"
  else
    say "PASS $check: StartMigration of job vm-6 refused before any state moved ($(grep -m 1 -o '[A-Z_]*INCOMPATIBLE[A-Z_]*' "$T/migrate6.out" "$T/status6.json" | head -n 1 | sed 's/.*://')); edu0 RUNNING, held by no job, its state changes [${changes}]"
  fi
  stop_agents
  # Its state, once no agent holds it: what agents_prepare set.
  "$BIN/edu_uapi_check" verify "$G0" "$EDU0" "$T/expect" agents_plugin_refused

  check=agents_plugin_migratable
  if ! echo "$v0" 2>"$T/sv.err" >"$ATTR1/state_version"; then
    say "FAIL $check: setting edu1's state_version back to $v0 failed: $(cat "$T/sv.err")"
    return
  fi
  start_agent source --plugin_dir="$PLUGIN_DIR" || return
  start_agent destination --plugin_dir="$PLUGIN_DIR" || return
  "$BIN/migctl" --agent="$SRC" check --devices=edu0:edu1 \
    --destination="$DST" >"$T/check7.out" 2>&1
  rc=$?
  indent <"$T/check7.out"
  if [ $rc != 0 ] || ! grep -q '^MIGRATABLE' "$T/check7.out"; then
    say "FAIL $check: with equal state_versions ($v0) migctl check exited $rc, want 0 and MIGRATABLE"
    show_logs
    return
  elif ! grep -q 'edu: edu state version' "$T/check7.out"; then
    say "FAIL $check: migctl check's report does not show the edu plugin's summary"
    return
  fi
  say "PASS $check: with equal state_versions ($v0) and $m0 KiB on both, migctl check exits 0: $(head -n 1 "$T/check7.out")"
  "$BIN/migctl" --agent="$SRC" migrate --job=vm-7 --devices=edu0:edu1 \
    --destination="$DST" >"$T/migrate7.out" 2>&1
  rc=$?
  indent <"$T/migrate7.out"
  if [ $rc = 0 ]; then
    say "PASS agents_plugin_migrate: job vm-7 edu0 -> edu1 with the edu plugin on both agents completed"
  else
    say "FAIL agents_plugin_migrate: job vm-7 with equal state_versions: migctl migrate exited $rc"
    show_logs
  fi
}

plugin_phase
stop_agents
# Whatever happened above, the next phases want the versions equal.
[ -n "$v0" ] && echo "$v0" >"$ATTR1/state_version" 2>/dev/null
echo 20 >/sys/module/edu_vfio_pci/parameters/churn_ms

# ---- a VMM's device: fd handoff and DMA dirty pages ----

# What edu_vmm maps and writes (e2e/vm/edu_vmm.c).
DIRTY_RANGES=0x200000+1MiB
PARAMS=/sys/module/edu_vfio_pci/parameters

vmm_phase() {
  rm -f "$T/vmm.sock" "$T/truth" "$T/truth.error"
  "$BIN/edu_vmm" "$G0" "$EDU0" "$T/vmm.sock" "$T/truth" >"$T/vmm.log" 2>&1 &
  VMM_PID=$!
  if ! wait_for '[ -S "$T/vmm.sock" ] || ! kill -0 $VMM_PID 2>/dev/null' 30 ||
    [ ! -S "$T/vmm.sock" ]; then
    say "FAIL agents_fd_handoff: edu_vmm did not serve edu #0 on $T/vmm.sock"
    indent <"$T/vmm.log"
    return
  fi
  printf 'vfio edu0 fd_socket=%s\n' "$T/vmm.sock" >"$T/source.conf"
  start_agent source || return
  start_agent destination || return
  "$BIN/migctl" --agent="$SRC" devices >"$T/devices4.out" 2>&1
  indent <"$T/devices4.out"

  # Without PRE_COPY (6.1) the agent stops the device right after starting
  # DMA logging: the driver's testing knob holds DMA_LOGGING_START for 3 s
  # with logging on and the device running, the window a VMM's own RAM
  # pre-copy would give, so edu_vmm's DMA lands while the agent logs.
  if [ "$PRECOPY" = no ]; then
    echo 3000 >"$PARAMS/log_start_delay_ms"
  fi
  token=$("$BIN/migctl" --agent="$DST" prepare --job=vm-4 --devices=edu0:edu1 \
    --source_agent="$SRC" 2>"$T/prepare4.err")
  if [ -z "$token" ]; then
    say "FAIL agents_fd_handoff: prepare on the destination failed:"
    indent <"$T/prepare4.err"
    return
  fi
  # dirty-pages runs alongside migrate: --wait covers the moment before
  # StartMigration, and the agent keeps what is not taken yet.
  "$BIN/migctl" --agent="$SRC" migrate --job=vm-4 --devices=edu0:edu1 \
    --destination="$DST" --token="$token" --dirty_ranges="$DIRTY_RANGES" \
    >"$T/migrate4.out" 2>&1 &
  mig_pid=$!
  "$BIN/migctl" --agent="$SRC" --timeout=120s dirty-pages --wait vm-4 \
    >"$T/dirty4.out" 2>"$T/dirty4.err"
  dirty_rc=$?
  wait $mig_pid
  rc=$?
  echo 0 >"$PARAMS/log_start_delay_ms" 2>/dev/null
  "$BIN/migctl" --agent="$SRC" --output=json status vm-4 >"$T/status4.json" 2>&1
  wait_for '[ -e "$T/truth" ] || [ -e "$T/truth.error" ]' 10
  indent <"$T/migrate4.out"
  indent <"$T/vmm.log"
  say "  migctl dirty-pages vm-4 (exit $dirty_rc):"
  indent <"$T/dirty4.out"
  indent <"$T/dirty4.err"
  grep -i 'fd handoff\|fd_socket\|vmm.sock' "$T/source.log" | head -n 3 | indent

  # The device fd came from the VMM, which holds the group (exclusive): the
  # agent could not have opened edu #0 any other way.
  if [ $rc = 0 ] && grep -q 'sent the device fd' "$T/vmm.log" &&
    grep -q '^edu0 *vfio' "$T/devices4.out"; then
    say "PASS agents_fd_handoff: the source agent took edu #0's device fd from edu_vmm (which owns group $G0, its container and a DMA mapping) over $T/vmm.sock (SCM_RIGHTS, \"vfio edu0 fd_socket=...\") and job vm-4 migrated it to edu1"
  else
    say "FAIL agents_fd_handoff: job vm-4 through the VMM's device fd: migrate exited $rc"
    show_logs
  fi

  lines=$(grep -c '^device=' "$T/dirty4.out")
  finals=$(grep -c ' final=true ' "$T/dirty4.out")
  alls=$(grep -c ' all_dirty=true ' "$T/dirty4.out")
  first=$(sed -n 's/.* iteration=\([0-9]*\) .*/\1/p' "$T/dirty4.out" | sort -n | head -n 1)
  last=$(sed -n 's/.* iteration=\([0-9]*\) .*/\1/p' "$T/dirty4.out" | sort -n | tail -n 1)
  if [ "$first" = "$last" ]; then iters="iteration $first"; else iters="iterations $first..$last"; fi
  if [ $dirty_rc != 0 ] || [ "$lines" = 0 ] || [ "$finals" = 0 ]; then
    say "FAIL agents_dirty_pages: migctl dirty-pages exited $dirty_rc with $lines bitmaps ($finals final)"
    return
  fi
  if [ -e "$T/truth.error" ] || [ ! -e "$T/truth" ]; then
    say "FAIL agents_dirty_pages: edu_vmm has no ground truth: $(cat "$T/truth.error" 2>/dev/null)"
    return
  fi
  sort -u "$T/truth" >"$T/want"
  want=$(tr '\n' ',' <"$T/want" | sed 's/,$//')
  nwant=$(grep -c . "$T/want")
  notice=$(grep -c 'every page is reported dirty' "$T/status4.json")
  if [ "$DMA_REPORT" = yes ]; then
    sed -n 's/.* all_dirty=false .* pages=//p' "$T/dirty4.out" | tr ',' '\n' |
      grep '^0x' | sort -u >"$T/got"
    got=$(tr '\n' ',' <"$T/got" | sed 's/,$//')
    if [ "$alls" != 0 ]; then
      say "FAIL agents_dirty_pages: $alls of $lines bitmaps are all_dirty on a kernel that reports"
      indent <"$T/status4.json" | grep -A3 notices
    elif [ "$nwant" = 0 ]; then
      say "FAIL agents_dirty_pages: edu_vmm had the device write no page while the agent logged"
    elif ! cmp -s "$T/got" "$T/want"; then
      say "FAIL agents_dirty_pages: the bitmaps' union is [$got], the device wrote [$want]"
    elif [ "$notice" != 0 ]; then
      say "FAIL agents_dirty_pages: the bitmaps are exact but the job's notices say every page is dirty"
    else
      say "PASS agents_dirty_pages: $lines bitmap(s) served ($iters, $finals final) over $DIRTY_RANGES; their union is exactly the $nwant pages edu_vmm had edu #0 write by DMA while the agent logged [$want] (a RAM -> device read not among them)"
    fi
  else
    if [ "$alls" != "$lines" ]; then
      say "FAIL agents_dirty_all_dirty: $alls of $lines bitmaps are all_dirty where DMA_LOGGING_REPORT cannot work"
    else
      say "PASS agents_dirty_all_dirty: DMA_LOGGING_REPORT fails (EOPNOTSUPP) on this kernel; all $lines bitmaps served ($iters, $finals final) say all_dirty=true over $DIRTY_RANGES, which covers the $nwant pages edu_vmm had edu #0 write [$want]"
    fi
    if [ "$notice" != 0 ]; then
      say "PASS agents_dirty_notice: job vm-4's notices say so: $(grep -o '"[^"]*every page is reported dirty[^"]*"' "$T/status4.json" | head -n 1)"
    else
      say "FAIL agents_dirty_notice: job vm-4's notices (migctl status --output=json) do not say every page is reported dirty:"
      grep -A4 '"notices"' "$T/status4.json" | indent
    fi
  fi
}

if [ ! -x "$BIN/edu_vmm" ]; then
  say "SKIP agents_fd_handoff: /opt/edu_vmm missing from the initramfs"
else
  VMM_PID=""
  vmm_phase
  stop_agents
  if [ -n "$VMM_PID" ]; then
    kill -TERM "$VMM_PID" 2>/dev/null
    wait "$VMM_PID"
    vmm_rc=$?
    [ $vmm_rc = 0 ] || { say "  edu_vmm exited with $vmm_rc:"; tail -n 3 "$T/vmm.log" | indent; }
  fi
fi
