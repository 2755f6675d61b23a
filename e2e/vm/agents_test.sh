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
#   - each side of job vm-1 names the other's certificate identity (peer id);
#   - edu #1 holds edu #0's registers, internal memory and factorial, and
#     works (edu_uapi_check prepare/verify around the migration);
#   - a transfer corrupted on the way fails the job, the destination agent
#     resets its device, and the job reports the cause;
#   - a device state the destination kernel driver rejects (the source
#     driver's fault_corrupt_record: the stream crosses intact, RESUMING ->
#     STOP fails with EBADMSG) fails the job as STATE_REJECTED, and the
#     destination device is back in RUNNING;
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
  name=$1
  shift
  rm -rf "$T/$name.port" "$T/$name.state"
  cert=$TLS/$(cert_of "$name")
  "$BIN/migd" --tls_cert="$cert.pem" --tls_key="$cert.key" \
    --tls_ca="$TLS/ca.pem" --tls_policy="$TLS/policy.conf" \
    --state_dir="$T/$name.state" \
    --listen=127.0.0.1:0 --port_file="$T/$name.port" \
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
"$BIN/migctl" --agent="$DST" devices 2>&1 | indent

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
  say "PASS agents_migrate: migctl migrate edu0 ($EDU0) -> edu1 ($EDU1) through two migd agents: job vm-1 completed (uptime $t0 -> $t1)"
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

# ---- a VMM's device: fd handoff and DMA dirty pages ----

# What edu_vmm maps and writes (e2e/vm/edu_vmm.c).
DIRTY_RANGES=0x200000+1MiB
PARAMS=/sys/module/edu_vfio_pci/parameters

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
