#!/bin/sh
# Runs inside the QEMU guest (busybox sh), from guest_test.sh, before anything
# loads edu_vfio_pci or binds an edu device:
#
#   host_test.sh EDU0 EDU1
#
# migd's host integration (docs/host.md) on a real kernel: one agent, over
# mutual TLS (agent-a's certificate, its own --state_dir, no plugins, no
# devices), and `migctl host ...` as the operator for every change to the
# host; sysfs is read here only to verify what the agent did. Then:
#   - edu #0 (on no driver: nothing claims 1234:11e8): modules.alias lists
#     edu_vfio_pci's vfio_pci alias (PCI_DRIVER_OVERRIDE_DEVICE_VFIO) next to
#     vfio_pci's catch-all; `host status` chooses edu_vfio_pci by that alias
#     (the most specific); `host bind` has the agent modprobe edu_vfio_pci
#     (not loaded before) and bind edu #0 through driver_override, recorded
#     in <state_dir>/host-bindings; the agent restarted (SIGTERM, started
#     again on that state dir), `host unbind` returns edu #0 to no driver
#     with driver_override (null), the record gone;
#   - a migration between a device migd bound and one it allocated: `host
#     bind` edu #0 (edu_vfio_pci again), edu_uapi_check gives it its state,
#     the host agent restarted serving it ("vfio edu0 bdf=EDU0"); a second
#     agent (agent-b, no devices) is the destination; `migctl migrate
#     --devices=edu0:pci:1234:11e8` has it pick edu #1 (on no driver), bind
#     it to edu_vfio_pci by its alias (host-allocations records it for job
#     vm-h), open it and name it; the job succeeds; with that agent stopped,
#     edu_uapi_check verifies edu #1 holds edu #0's state and works; the
#     agent restarted keeps the allocation and `host release vm-h` returns
#     edu #1 to no driver; the host agent restarted without edu0 unbinds
#     edu #0: both back on no driver, as QEMU left them;
#   - QEMU's NVMe controller (the PF, on Debian's nvme): `host status` shows
#     its 2 SR-IOV VFs; `host vfs PF 2` creates them (virtfn0/1), each in its
#     own IOMMU group; `host status VF` chooses vfio_pci (only vfio_pci's
#     catch-all alias matches); `host bind VF` loads vfio_pci and binds the
#     VF; a process holding the VF's group (/dev/vfio/N open, as a VMM would)
#     shows as in_use and makes an unbind refuse (DEVICE_BUSY); an agent
#     given the VF as a device ("vfio nvf0 bdf=VF") opens it and serves:
#     the VF has no migration (vfio-pci: GET MIGRATION fails with ENOTTY),
#     so it is listed without migration flags and a prepare of it is
#     refused, naming the device and its driver; `host unbind VF`,
#     `host vfs PF 0`;
#   - refusals that change nothing: more VFs than sriov_totalvfs (naming
#     both numbers), VFs on a device without SR-IOV, a malformed address,
#     a device that does not exist, a module that does not exist (modprobe
#     fails, the device untouched);
#   - a bind that fails after the first sysfs write: vfio-pci refuses a
#     bridge (vfio_pci_core_register_device: header type not normal,
#     EINVAL), so binding the empty pcie-root-port QEMU has for this to
#     vfio_pci writes driver_override, unbinds pcieport, probes (vfio-pci's
#     probe fails), and the agent's verify sees no driver: it rolls back and
#     the port is on pcieport again with driver_override (null);
#   - mdev, with mbochs (samples/vfio-mdev, built by vm_test.sh): `host
#     mdev-types mbochs` lists mbochs-small/medium/large and their available
#     instances as sysfs has them; `host mdev-create` prints a UUID whose
#     /sys/bus/mdev/devices/<uuid> exists with that type; `host mdev-remove`
#     removes it; an unknown type fails naming the types there are, an
#     unknown parent fails as not found.
#
#   - the VF token of a PF on vfio-pci (vfio_pci enable_sriov=1, from
#     vm_test.sh's /etc/modprobe.d): the NVMe PF bound to vfio_pci by the
#     agent, `host vf-token PF` (the token file 0600 in a 0700 directory,
#     the token in no log), `host vfs PF 1` (autoprobe on for it: vfio-pci
#     gives its VFs driver_override vfio-pci), the agent restarted with
#     "vfio nvf0 bdf=VF" sets the stored token again and opens the VF with
#     it; an agent without the token fails to open the VF, saying the PF
#     owner's token is needed; then 0 VFs and `host unbind PF` (back on
#     nvme, the token file gone).
#
# Host set-up done here without the agent, because it is not what the
# agent does: modprobe vfio_iommu_type1 (the agent opening the VF needs an
# IOMMU backend), nvme and mbochs (a PF's own driver, an mdev parent), and
# sriov_drivers_autoprobe := 0 on the PF: QEMU's NVMe VFs stay offline
# until the PF's driver brings them online with NVMe virtualization
# management commands (QEMU refuses to enable an offline VF's controller),
# which Linux's nvme never sends, so nvme would probe each new VF only to
# fail, racing the agent's bind; an operator handing VFs to VFIO turns
# autoprobe off the same way (the kernel's pds_vfio_pci documentation does:
# "Prevent non-vfio VF driver from probing the VF device"), and migd has no
# call for it.
#
# Leaves the host as it found it: edu #0 and edu #1 on no driver with no
# driver_override, the PF with 0 VFs, no mdev instance; edu_vfio_pci,
# vfio_pci, nvme and mbochs stay loaded (edu_vfio_pci with /etc/modprobe.d's
# mem_kib, for guest_test.sh).
#
# Settings from /etc/vmtest.conf: SERIES, MBOCHS=yes|no (whether the host
# built mbochs), TLS_VALID_FROM, MEM_KIB.
# Prints PASS/FAIL/SKIP lines like guest_test.sh.

EDU=$1
EDU1=$2
T=/tmp/host
BIN=/opt
TLS=/etc/migd/tls
STATE=$T/state
export MIGCTL_TLS_CERT=$TLS/operator.pem MIGCTL_TLS_KEY=$TLS/operator.key \
  MIGCTL_TLS_CA=$TLS/ca.pem
START_DEADLINE=90   # seconds; gRPC start-up is slow under software emulation
MBOCHS=no
MEM_KIB=4096
TLS_VALID_FROM=""
[ -f /etc/vmtest.conf ] && . /etc/vmtest.conf

say() { echo "$*"; }
pass() { say "PASS $*"; }
fail() { say "FAIL $*"; }
skip() { say "SKIP $*"; }
indent() { sed 's/^/    /'; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

SYS=/sys/bus/pci/devices
# Where a device is, as sysfs says: its driver ("(none)") and its
# driver_override as the kernel prints it ("(null)": none).
driver_of() {
  if [ -e "$SYS/$1/driver" ]; then
    basename "$(readlink "$SYS/$1/driver")"
  else
    echo "(none)"
  fi
}
override_of() { cat "$SYS/$1/driver_override" 2>/dev/null; }
where() { echo "$(driver_of "$1") $(override_of "$1")"; }
group_of() { basename "$(readlink "$SYS/$1/iommu_group")"; }
loaded() { [ -d "/sys/module/$1" ]; }

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

mkdir -p "$T"
rm -rf "$STATE"

# ---- the agent ----

AGENT_PID=""
AGENT=""

# launch NAME CERT [flags]: starts migd NAME with mutual TLS, its log in
# $T/NAME.log; sets PID and ADDR when it serves. Fails, with EXIT its exit
# status (or "timeout": killed, no port in START_DEADLINE seconds), when it
# does not serve.
launch() {
  name=$1
  cert=$TLS/$2
  shift 2
  rm -f "$T/$name.port"
  "$BIN/migd" --tls_cert="$cert.pem" --tls_key="$cert.key" \
    --tls_ca="$TLS/ca.pem" --tls_policy="$TLS/policy.conf" \
    --listen=127.0.0.1:0 --port_file="$T/$name.port" --plugin_dir= \
    --name="$name" "$@" >>"$T/$name.log" 2>&1 &
  PID=$!
  waited=0
  while [ ! -s "$T/$name.port" ]; do
    if ! kill -0 "$PID" 2>/dev/null; then
      wait "$PID"
      EXIT=$?
      PID=""
      return 1
    fi
    if [ $waited -ge $((START_DEADLINE * 10)) ]; then
      kill -KILL "$PID"
      wait "$PID"
      EXIT=timeout
      PID=""
      return 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  ADDR="127.0.0.1:$(cat "$T/$name.port")"
  return 0
}

# The host agent: its own state dir, no devices.
start_host_agent() {
  if ! launch host agent-a --state_dir="$STATE"; then
    fail "host_agent: the agent did not serve (exit $EXIT):"
    tail -n 20 "$T/host.log" | indent
    return 1
  fi
  AGENT_PID=$PID
  AGENT=$ADDR
}

# stop PID: SIGTERM, SIGKILL after 10 s.
stop() {
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null
  wait_for "! kill -0 $1 2>/dev/null" 10 || kill -KILL "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}

# mc NAME ARGS...: migctl ARGS on the host agent; its stdout in $T/NAME.out,
# stderr in $T/NAME.err, exit status in RC.
mc() {
  out=$1
  shift
  "$BIN/migctl" --agent="$AGENT" "$@" >"$T/$out.out" 2>"$T/$out.err"
  RC=$?
}
# field NAME KEY: the value of "KEY: value" in $T/NAME.out (host status).
field() { sed -n "s/^$2: //p" "$T/$1.out" | head -n 1; }
# said NAME: what migctl printed, on one line.
said() { cat "$T/$1.out" "$T/$1.err" | tr '\n' ' ' | sed 's/  */ /g; s/ $//'; }
show() {
  say "  migctl $1 (exit $RC):"
  cat "$T/$1.out" "$T/$1.err" | indent
}
# The agent's record of what it bound (empty when it has none).
record_of() { grep "^pci $1 " "$STATE/host-bindings" 2>/dev/null; }

now=$(date +%s)
if [ -n "$TLS_VALID_FROM" ] && [ "$now" -lt "$TLS_VALID_FROM" ]; then
  fail "host_agent: the guest clock ($(date -u)) is before the certificates' start ($TLS_VALID_FROM, seconds since 1970)"
  exit 0
fi
# The IOMMU backend for VFIO containers (the agent opening the VF below).
modprobe vfio_iommu_type1 || fail "host_setup: modprobe vfio_iommu_type1 failed"

t0=$(uptime_s)
start_host_agent || exit 0
say "  host agent serving after $(awk -v a="$t0" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }') s at $AGENT (state dir $STATE)"

# ---- edu #0: the variant driver by its alias, modprobe, bind, unbind ----

KVER=$(uname -r)
ALIASES=/lib/modules/$KVER/modules.alias
GE=$(group_of "$EDU")

edu_phase() {
  check=host_edu_alias
  edu_alias=$(grep -i '^alias vfio_pci:v00001234d000011E8' "$ALIASES")
  any_alias=$(grep '^alias vfio_pci:v\*d\*sv\*sd\*bc\*sc\*i\* ' "$ALIASES")
  case "$edu_alias" in
    *" edu_vfio_pci") pass "$check: the initramfs's modules.alias (depmod) has \"$edu_alias\" and vfio_pci's catch-all \"$any_alias\"" ;;
    *) fail "$check: no vfio_pci:v00001234d000011E8 alias of edu_vfio_pci in $ALIASES (found: ${edu_alias:-nothing})"; return ;;
  esac

  check=host_edu_status
  before=$(where "$EDU")
  if loaded edu_vfio_pci; then
    fail "$check: edu_vfio_pci is loaded before the agent's bind (the check needs the agent to load it)"
    return
  fi
  if [ "$before" != "(none) (null)" ]; then
    fail "$check: $EDU is on $before before the host phase, want no driver and driver_override (null)"
    return
  fi
  mc status_edu host status "$EDU"
  module=$(field status_edu vfio_module)
  reason=$(field status_edu vfio_choice)
  if [ $RC != 0 ]; then
    fail "$check: migctl host status $EDU exited $RC"
    show status_edu
    return
  elif [ "$module" != edu_vfio_pci ] || [ "$(field status_edu driver)" != "(none)" ] ||
    [ "$(field status_edu vfio_driver)" != "(not loaded)" ] ||
    [ "$(field status_edu iommu_group)" != "$GE" ]; then
    fail "$check: migctl host status $EDU does not say: on no driver, vfio_module edu_vfio_pci (not loaded), iommu_group $GE"
    show status_edu
    return
  fi
  case "$reason" in
    *vfio_pci:v00001234d000011E8*edu_vfio_pci*) ;;
    *) fail "$check: the choice of edu_vfio_pci is not by its alias: \"$reason\""; return ;;
  esac
  pass "$check: edu_vfio_pci not loaded, $EDU on no driver; migctl host status $EDU: vfio_module edu_vfio_pci (not loaded), \"$reason\" (vfio_pci's catch-all alias loses), iommu_group $GE, group_viable $(field status_edu group_viable)"

  check=host_edu_bind
  mc bind_edu host bind "$EDU"
  after=$(where "$EDU")
  rec=$(record_of "$EDU")
  mode=$(stat -c %a "$STATE/host-bindings" 2>/dev/null)
  if [ $RC != 0 ]; then
    fail "$check: migctl host bind $EDU exited $RC"
    show bind_edu
    tail -n 5 "$T/host.log" | indent
    return
  elif ! loaded edu_vfio_pci; then
    fail "$check: the bind succeeded but edu_vfio_pci is not loaded"
  elif [ "$after" != "edu_vfio_pci edu_vfio_pci" ] || [ ! -e "/dev/vfio/$GE" ]; then
    fail "$check: after the bind sysfs says $EDU is on $after (want edu_vfio_pci with driver_override edu_vfio_pci), /dev/vfio/$GE $([ -e "/dev/vfio/$GE" ] && echo exists || echo missing)"
  elif [ "$rec" != "pci $EDU driver=edu_vfio_pci original_driver= original_override=" ] ||
    [ "$mode" != 600 ]; then
    fail "$check: $STATE/host-bindings (mode '$mode', want 600) has \"$rec\" for $EDU"
    indent <"$STATE/host-bindings"
  elif [ "$(field bind_edu bound_by_migd)" != "yes: to edu_vfio_pci; unbind returns it to (none) with driver_override (none)" ]; then
    fail "$check: migctl host bind's answer does not show migd's binding"
    show bind_edu
  elif [ "$(cat /sys/module/edu_vfio_pci/parameters/mem_kib)" != "$MEM_KIB" ]; then
    fail "$check: the agent's modprobe loaded edu_vfio_pci with mem_kib $(cat /sys/module/edu_vfio_pci/parameters/mem_kib), not /etc/modprobe.d's $MEM_KIB"
  elif ! grep -q "operator: pci device $EDU: bound to edu_vfio_pci" "$T/host.log"; then
    fail "$check: the agent's log does not name the operator's bind"
    tail -n 5 "$T/host.log" | indent
  else
    pass "$check: migctl host bind $EDU: \"$(head -n 1 "$T/bind_edu.out")\"; the agent loaded edu_vfio_pci (modprobe, mem_kib $MEM_KIB from /etc/modprobe.d) and sysfs says driver -> edu_vfio_pci, driver_override edu_vfio_pci, /dev/vfio/$GE; host-bindings (mode 600): \"$rec\"; logged: \"$(grep -o "host: .*operator: pci device $EDU: bound to [^ ]*" "$T/host.log" | head -n 1)\""
  fi

  check=host_edu_restart_unbind
  stop "$AGENT_PID"
  echo "==== restarted on $STATE" >>"$T/host.log"
  if ! start_host_agent; then
    AGENT_PID=""
    return
  fi
  # An unbind needs migd's record (a device migd did not bind is refused):
  # the restarted agent read it from the state dir.
  mc unbind_edu host unbind "$EDU"
  after=$(where "$EDU")
  if [ $RC != 0 ]; then
    fail "$check: migctl host unbind $EDU after the restart exited $RC"
    show unbind_edu
  elif [ "$after" != "(none) (null)" ]; then
    fail "$check: after the unbind sysfs says $EDU is on $after, want no driver and driver_override (null)"
  elif [ -n "$(record_of "$EDU")" ]; then
    fail "$check: the unbind left migd's record: $(record_of "$EDU")"
  else
    pass "$check: agent stopped (SIGTERM) and started again on $STATE; migctl host unbind $EDU (which needs migd's record): \"$(head -n 1 "$T/unbind_edu.out")\"; sysfs: no driver, driver_override (null); the record is gone"
  fi
}
edu_phase

# ---- a migration between a device migd bound and one it allocated ----

# Source: edu #0, bound by `host bind` (the agent's choice: edu_vfio_pci),
# then served from a config line by the host agent, restarted with it.
# Destination: a second agent (agent-b, its own state dir, no devices) that
# migctl migrate prepares by class, pci:1234:11e8: it picks edu #1 (on no
# driver), binds it to the variant driver its alias names, opens it and
# names it. After the migration edu #1 holds edu #0's state
# (edu_uapi_check verify, once the destination agent has closed it), the
# allocation survives the destination agent's restart, `host release`
# returns edu #1 to no driver, and edu #0 unbinds once no agent serves it.
DST_PID=""
DST=""
DSTATE=$T/dst-state

host_migrate_phase() {
  G1E=$(group_of "$EDU1")
  check=host_migrate_bind
  if [ "$(where "$EDU")" != "(none) (null)" ] || [ "$(where "$EDU1")" != "(none) (null)" ]; then
    fail "$check: edu #0 is on $(where "$EDU") and edu #1 on $(where "$EDU1"), want both on no driver"
    return
  fi
  mc bind_src host bind "$EDU"
  if [ $RC != 0 ] || [ "$(where "$EDU")" != "edu_vfio_pci edu_vfio_pci" ]; then
    fail "$check: migctl host bind $EDU exited $RC; sysfs says $(where "$EDU")"
    show bind_src
    return
  fi
  # Deterministic internal memory while the agents run (the driver's
  # churn off; put back after the phase: guest_test.sh's pre-copy checks
  # need it), and the state edu_uapi_check verifies on the destination.
  CHURN_MS=$(cat /sys/module/edu_vfio_pci/parameters/churn_ms)
  echo 0 >/sys/module/edu_vfio_pci/parameters/churn_ms
  if ! "$BIN/edu_uapi_check" prepare "$GE" "$EDU" "$T/expect" >"$T/prepare.out" 2>&1; then
    fail "$check: edu_uapi_check could not give edu #0 its state:"
    indent <"$T/prepare.out"
    return
  fi
  printf 'vfio edu0 bdf=%s\n' "$EDU" >"$T/source.conf"
  stop "$AGENT_PID"
  AGENT_PID=""
  echo "==== restarted on $STATE serving edu0" >>"$T/host.log"
  if ! launch host agent-a --state_dir="$STATE" --devices_config="$T/source.conf"; then
    fail "$check: the host agent with \"vfio edu0 bdf=$EDU\" did not serve (exit $EXIT):"
    tail -n 20 "$T/host.log" | indent
    return
  fi
  AGENT_PID=$PID
  AGENT=$ADDR
  SERVING_EDU=yes
  if ! launch dst agent-b --state_dir="$DSTATE"; then
    fail "$check: the destination agent did not serve (exit $EXIT):"
    tail -n 20 "$T/dst.log" | indent
    return
  fi
  DST_PID=$PID
  DST=$ADDR
  pass "$check: migctl host bind $EDU: \"$(head -n 1 "$T/bind_src.out")\"; edu_uapi_check gave it its state; the host agent serves it from \"vfio edu0 bdf=$EDU\"; a destination agent (agent-b, state dir $DSTATE) serves no device, edu #1 ($EDU1) on no driver"

  check=host_migrate_by_class
  "$BIN/migctl" --agent="$AGENT" migrate --job=vm-h --devices=edu0:pci:1234:11e8 \
    --destination="$DST" >"$T/migrate.out" 2>&1
  rc=$?
  picked=$(sed -n 's/^Prepared job vm-h on destination [^ ]*: picked //p' "$T/migrate.out")
  alloc=$(grep "^pci owner=vm-h " "$DSTATE/host-allocations" 2>/dev/null)
  if [ $rc != 0 ]; then
    fail "$check: migctl migrate --devices=edu0:pci:1234:11e8 exited $rc:"
    indent <"$T/migrate.out"
    tail -n 15 "$T/dst.log" | indent
    return
  elif [ "$picked" != "edu0 -> alloc-vm-h-0 ($EDU1)" ]; then
    fail "$check: migctl migrate says it picked '$picked', want edu0 -> alloc-vm-h-0 ($EDU1)"
    indent <"$T/migrate.out"
    return
  elif [ "$(where "$EDU1")" != "edu_vfio_pci edu_vfio_pci" ]; then
    fail "$check: the job succeeded but sysfs says edu #1 is on $(where "$EDU1"), want edu_vfio_pci with driver_override edu_vfio_pci"
    return
  elif [ "$alloc" != "pci owner=vm-h key=edu0 address=$EDU1 driver=edu_vfio_pci bound=yes" ]; then
    fail "$check: the destination's host-allocations has '$alloc' for job vm-h"
    indent <"$DSTATE/host-allocations"
    return
  fi
  pass "$check: migctl migrate --job=vm-h --devices=edu0:pci:1234:11e8: \"Prepared job vm-h ...: picked $picked\", job vm-h SUCCEEDED ($(grep -o 'transferred .*' "$T/migrate.out" | head -n 1)); the destination agent bound edu #1 to edu_vfio_pci (sysfs: driver and driver_override), host-allocations: \"$alloc\"; logged: \"$(grep -o 'job vm-h: .*allocated [^ ]*' "$T/dst.log" | head -n 1)\""

  # The destination agent closes edu #1 when it stops (the allocation is
  # kept); edu_uapi_check then opens it and checks what the job loaded.
  stop "$DST_PID"
  DST_PID=""
  "$BIN/edu_uapi_check" verify "$G1E" "$EDU1" "$T/expect" host_migrate migrated

  check=host_migrate_release
  echo "==== restarted on $DSTATE" >>"$T/dst.log"
  if ! launch dst agent-b --state_dir="$DSTATE"; then
    fail "$check: the destination agent did not serve again (exit $EXIT):"
    tail -n 20 "$T/dst.log" | indent
    return
  fi
  DST_PID=$PID
  DST=$ADDR
  AGENT_SAVED=$AGENT
  AGENT=$DST
  mc release host release vm-h
  AGENT=$AGENT_SAVED
  if [ $RC != 0 ] || [ "$(where "$EDU1")" != "(none) (null)" ] ||
    grep -q "owner=vm-h " "$DSTATE/host-allocations" 2>/dev/null; then
    fail "$check: migctl host release vm-h exited $RC; edu #1 is on $(where "$EDU1"); host-allocations: $(grep "owner=vm-h " "$DSTATE/host-allocations" 2>/dev/null)"
    show release
  else
    pass "$check: the destination agent restarted on $DSTATE kept job vm-h's allocation; migctl host release vm-h: \"$(said release)\"; sysfs: edu #1 on no driver, driver_override (null); host-allocations holds nothing of vm-h"
  fi
  stop "$DST_PID"
  DST_PID=""

  check=host_migrate_unbind
  stop "$AGENT_PID"
  AGENT_PID=""
  echo "==== restarted on $STATE without devices" >>"$T/host.log"
  start_host_agent || return
  SERVING_EDU=no
  mc unbind_src host unbind "$EDU"
  if [ $RC != 0 ] || [ "$(where "$EDU")" != "(none) (null)" ] || [ -n "$(record_of "$EDU")" ]; then
    fail "$check: migctl host unbind $EDU exited $RC; sysfs says $(where "$EDU"); record: $(record_of "$EDU")"
    show unbind_src
  else
    pass "$check: the host agent restarted without edu0; migctl host unbind $EDU: \"$(head -n 1 "$T/unbind_src.out")\"; sysfs: edu #0 and edu #1 both back on no driver with driver_override (null), as QEMU left them"
  fi
}
SERVING_EDU=no
CHURN_MS=""
if [ -n "$AGENT_PID" ]; then
  host_migrate_phase
  stop "$DST_PID"
  [ -z "$CHURN_MS" ] || echo "$CHURN_MS" >/sys/module/edu_vfio_pci/parameters/churn_ms
  # The phases below need the host agent without devices.
  if [ -z "$AGENT_PID" ] || [ "$SERVING_EDU" = yes ]; then
    stop "$AGENT_PID"
    start_host_agent || exit 0
  fi
fi

# ---- QEMU's NVMe: SR-IOV, a VF on vfio-pci ----

NVME_PF=""
for dev in "$SYS"/*; do
  if [ "$(cat "$dev/vendor")" = 0x1b36 ] && [ "$(cat "$dev/device")" = 0x0010 ] &&
    [ -e "$dev/sriov_totalvfs" ]; then
    NVME_PF=${dev##*/}
  fi
done

# The empty pcie-root-port: a bridge on pcieport with no PCI device behind
# it (its port services, 0000:00:06.0:pcie001..., are not PCI devices).
EMPTY_PORT=""
for dev in "$SYS"/*; do
  case "$(cat "$dev/class")" in 0x0604*) ;; *) continue ;; esac
  [ "$(driver_of "${dev##*/}")" = pcieport ] || continue
  behind=$(cd "$dev" &&
    ls -d [0-9a-f][0-9a-f][0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f].[0-7] 2>/dev/null)
  [ -z "$behind" ] && EMPTY_PORT=${dev##*/}
done

VF0="" VF1=""
vf_phase() {
  PF=$NVME_PF
  check=host_nvme_pf_status
  modprobe nvme || { fail "$check: modprobe nvme failed"; return; }
  if ! wait_for '[ "$(driver_of "$PF")" = nvme ]' 20; then
    fail "$check: $PF is on $(driver_of "$PF") 20 s after modprobe nvme, want nvme"
    return
  fi
  # Not the agent's: see the header.
  echo 0 >"$SYS/$PF/sriov_drivers_autoprobe"
  mc status_pf host status "$PF"
  total=$(field status_pf sriov_totalvfs)
  if [ $RC != 0 ] || [ "$total" != 2 ] || [ "$(field status_pf sriov_numvfs)" != 0 ] ||
    [ "$(field status_pf driver)" != nvme ]; then
    fail "$check: migctl host status $PF (exit $RC) does not say: driver nvme, sriov_totalvfs 2, sriov_numvfs 0"
    show status_pf
    return
  fi
  pass "$check: migctl host status $PF: ids $(field status_pf ids), class $(field status_pf class), driver nvme, sriov_totalvfs 2 (QEMU's sriov_max_vfs), sriov_numvfs 0"

  check=host_vfs_create
  GP=$(group_of "$PF")
  mc vfs2 host vfs "$PF" 2
  n=$(cat "$SYS/$PF/sriov_numvfs")
  VF0=$(basename "$(readlink "$SYS/$PF/virtfn0")" 2>/dev/null)
  VF1=$(basename "$(readlink "$SYS/$PF/virtfn1")" 2>/dev/null)
  if [ $RC != 0 ]; then
    fail "$check: migctl host vfs $PF 2 exited $RC"
    show vfs2
    VF0="" VF1=""
    return
  elif [ "$n" != 2 ] || [ -z "$VF0" ] || [ -z "$VF1" ]; then
    fail "$check: after migctl host vfs $PF 2 sysfs has sriov_numvfs $n, virtfn0 '$VF0', virtfn1 '$VF1'"
    VF0="" VF1=""
    return
  fi
  G0=$(group_of "$VF0")
  G1=$(group_of "$VF1")
  if [ -z "$G0" ] || [ -z "$G1" ] || [ "$G0" = "$G1" ] || [ "$G0" = "$GP" ] || [ "$G1" = "$GP" ]; then
    fail "$check: the VFs' IOMMU groups: $VF0 '$G0', $VF1 '$G1', the PF's '$GP' (want three different ones)"
  elif ! grep -q "^vf: 0 $VF0\$" "$T/vfs2.out" || ! grep -q "^vf: 1 $VF1\$" "$T/vfs2.out"; then
    fail "$check: migctl host vfs's answer does not list both VFs"
    show vfs2
  else
    pass "$check: migctl host vfs $PF 2: \"$(head -n 1 "$T/vfs2.out")\"; sysfs: sriov_numvfs 2, virtfn0 -> $VF0 (IOMMU group $G0), virtfn1 -> $VF1 (group $G1), the PF in group $GP; the VFs on $(driver_of "$VF0") and $(driver_of "$VF1") (autoprobe off)"
  fi

  check=host_vf_status
  mc status_vf host status "$VF0"
  module=$(field status_vf vfio_module)
  reason=$(field status_vf vfio_choice)
  if [ $RC != 0 ] || [ "$module" != vfio_pci ] || [ "$(field status_vf physfn)" != "$PF vf 0" ] ||
    [ "$(field status_vf iommu_group)" != "$G0" ] || [ "$(field status_vf driver)" != "(none)" ]; then
    fail "$check: migctl host status $VF0 (exit $RC) does not say: vfio_module vfio_pci, physfn $PF vf 0, iommu_group $G0, no driver"
    show status_vf
  else
    case "$reason" in
      *"vfio_pci:v*d*sv*sd*bc*sc*i*"*vfio_pci*)
        pass "$check: migctl host status $VF0: ids $(field status_vf ids), physfn $PF vf 0, iommu_group $G0, vfio_module vfio_pci: \"$reason\" (no variant driver's alias matches a QEMU NVMe VF)" ;;
      *) fail "$check: vfio_pci chosen, but not by vfio_pci's catch-all alias: \"$reason\"" ;;
    esac
  fi

  check=host_vf_bind
  was_loaded=$(loaded vfio_pci && echo "already loaded" || echo "not loaded before")
  mc bind_vf host bind "$VF0"
  after=$(where "$VF0")
  if [ $RC != 0 ]; then
    fail "$check: migctl host bind $VF0 exited $RC"
    show bind_vf
    return
  elif [ "$after" != "vfio-pci vfio-pci" ] || [ ! -e "/dev/vfio/$G0" ] || ! loaded vfio_pci; then
    fail "$check: after the bind sysfs says $VF0 is on $after (want vfio-pci with driver_override vfio-pci), /dev/vfio/$G0 $([ -e "/dev/vfio/$G0" ] && echo exists || echo missing), vfio_pci $(loaded vfio_pci && echo loaded || echo "not loaded")"
    return
  else
    pass "$check: migctl host bind $VF0: \"$(head -n 1 "$T/bind_vf.out")\"; vfio_pci $was_loaded, loaded by the agent; sysfs: driver -> vfio-pci, driver_override vfio-pci, /dev/vfio/$G0; host-bindings: \"$(record_of "$VF0")\""
  fi

  # A process holding the VF's group, as a VMM would (the group's file is
  # exclusive: the agent's own open of it answers EBUSY).
  check=host_vf_in_use
  sleep 120 3<>"/dev/vfio/$G0" &
  holder=$!
  if ! wait_for "[ -e /proc/$holder/fd/3 ]" 10; then
    fail "$check: could not hold /dev/vfio/$G0 open"
  else
    mc status_held host status "$VF0"
    in_use=$(field status_held in_use)
    mc unbind_held host unbind "$VF0"
    unbind_rc=$RC
    unbind_said=$(said unbind_held)
    if [ "$in_use" != yes ]; then
      fail "$check: with /dev/vfio/$G0 held by pid $holder migctl host status $VF0 says in_use '$in_use'"
      show status_held
    elif [ $unbind_rc != 1 ] || [ "$(where "$VF0")" != "vfio-pci vfio-pci" ]; then
      fail "$check: migctl host unbind $VF0 of a held VF exited $unbind_rc (want 1) and left it on $(where "$VF0"): $unbind_said"
    elif ! echo "$unbind_said" | grep -q 'DEVICE_BUSY' || ! echo "$unbind_said" | grep -q 'in use'; then
      fail "$check: the unbind of a held VF was refused, but not as DEVICE_BUSY, in use: $unbind_said"
    else
      pass "$check: /dev/vfio/$G0 held open by pid $holder (as a VMM would): host status $VF0 says in_use yes; host unbind refused: \"$unbind_said\"; $VF0 still on vfio-pci"
    fi
  fi
  kill "$holder" 2>/dev/null
  wait "$holder" 2>/dev/null

  # An agent given the VF: it opens the group and the device, asks for the
  # migration feature, which vfio-pci lacks (ENOTTY), and serves it as a
  # device that cannot migrate: listed without migration flags, and any
  # migration of it refused up front, naming the device and its driver.
  check=host_vf_agent_open
  printf 'vfio nvf0 bdf=%s\n' "$VF0" >"$T/vf.conf"
  rm -rf "$T/vf.state"
  : >"$T/vf.log"
  if ! launch vf agent-b --state_dir="$T/vf.state" --devices_config="$T/vf.conf"; then
    fail "$check: an agent with \"vfio nvf0 bdf=$VF0\" (a VF without migration) did not serve (exit $EXIT):"
    tail -n 10 "$T/vf.log" | indent
  else
    "$BIN/migctl" --agent="$ADDR" devices >"$T/vf_devices.out" 2>&1
    row=$(grep '^nvf0 ' "$T/vf_devices.out")
    "$BIN/migctl" --agent="$ADDR" prepare --job=nv1 --devices=src0:nvf0 \
      --source_identity=spiffe://migd.local/agent/agent-a \
      >"$T/vf_prepare.out" 2>&1
    prepare_rc=$?
    if [ -z "$row" ] || echo "$row" | grep -q 'STOP_COPY'; then
      fail "$check: the agent serves, but migctl devices does not list nvf0 without migration flags:"
      indent <"$T/vf_devices.out"
    elif [ $prepare_rc != 1 ] || ! grep -q 'offers no VFIO migration' "$T/vf_prepare.out"; then
      fail "$check: a prepare of nvf0 exited $prepare_rc (want 1, 'offers no VFIO migration'):"
      indent <"$T/vf_prepare.out"
    else
      pass "$check: an agent with \"vfio nvf0 bdf=$VF0\" opened the VF (group $G0) and serves it without migration: \"$(echo "$row" | tr -s ' ')\"; a prepare of it is refused: \"$(tr '\n' ' ' <"$T/vf_prepare.out" | sed 's/  */ /g; s/ $//')\""
    fi
    stop "$PID"
  fi

  check=host_bind_no_module
  before=$(where "$VF1")
  mc bind_nomod host bind "$VF1" --driver=no_such_module
  after=$(where "$VF1")
  if [ $RC != 1 ] || [ "$after" != "$before" ] || [ -n "$(record_of "$VF1")" ]; then
    fail "$check: migctl host bind $VF1 --driver=no_such_module exited $RC (want 1); $VF1 was on $before, is on $after; record '$(record_of "$VF1")'"
    show bind_nomod
  elif ! grep -q 'modprobe' "$T/bind_nomod.err" || ! grep -q 'not touched' "$T/bind_nomod.err"; then
    fail "$check: refused, but the error does not say modprobe failed and the device was not touched:"
    show bind_nomod
  else
    pass "$check: migctl host bind $VF1 --driver=no_such_module exits 1: \"$(said bind_nomod)\"; $VF1 stays on $after (driver, driver_override), no record"
  fi

  check=host_vf_unbind
  mc unbind_vf host unbind "$VF0"
  after=$(where "$VF0")
  if [ $RC != 0 ] || [ "$after" != "(none) (null)" ] || [ -n "$(record_of "$VF0")" ]; then
    fail "$check: migctl host unbind $VF0 exited $RC; sysfs says it is on $after (want no driver, driver_override (null)); record '$(record_of "$VF0")'"
    show unbind_vf
  else
    pass "$check: migctl host unbind $VF0: \"$(head -n 1 "$T/unbind_vf.out")\"; sysfs: no driver, driver_override (null); the record is gone"
  fi

  bad_inputs

  check=host_vfs_remove
  mc vfs0 host vfs "$PF" 0
  if [ $RC != 0 ] || [ "$(cat "$SYS/$PF/sriov_numvfs")" != 0 ] || [ -e "$SYS/$PF/virtfn0" ] ||
    [ -e "$SYS/$VF0" ] || [ -e "$SYS/$VF1" ]; then
    fail "$check: migctl host vfs $PF 0 exited $RC; sriov_numvfs $(cat "$SYS/$PF/sriov_numvfs"), $VF0 $([ -e "$SYS/$VF0" ] && echo exists || echo gone)"
    show vfs0
  else
    pass "$check: migctl host vfs $PF 0: \"$(head -n 1 "$T/vfs0.out")\"; sysfs: sriov_numvfs 0, no virtfn links, $VF0 and $VF1 gone; the PF on $(driver_of "$PF")"
  fi
}

# Requests that must fail, each saying why, with nothing changed. Run while
# the PF has its 2 VFs, on no driver. (With a VF bound by migd, `host vfs PF
# 3` is refused as DEVICE_BUSY for that VF before the count is looked at.)
bad_inputs() {
  snapshot() {
    echo "$(cat "$SYS/$PF/sriov_numvfs") $(where "$VF0") $(where "$VF1") $(where "$EDU")"
    cat "$STATE/host-bindings" 2>/dev/null
  }
  snapshot >"$T/before.snap"
  # refused NAME CHECK WANT_RC WHAT WORDS...: the call mc made into $T/NAME
  # (WHAT, the command) exited WANT_RC, its error says every one of WORDS,
  # and the host is as the snapshot before the refusals.
  refused() {
    name=$1 check=$2 want_rc=$3 what=$4
    shift 4
    snapshot >"$T/after.snap"
    if [ $RC != "$want_rc" ]; then
      fail "$check: migctl $what exited $RC, want $want_rc"
      show "$name"
      return
    fi
    for w in "$@"; do
      if ! grep -q -- "$w" "$T/$name.err"; then
        fail "$check: migctl $what exits $RC, but its error does not say \"$w\": $(said "$name")"
        return
      fi
    done
    if ! cmp -s "$T/before.snap" "$T/after.snap"; then
      fail "$check: migctl $what changed the host:"
      diff "$T/before.snap" "$T/after.snap" | indent
      return
    fi
    pass "$check: migctl $what exits $RC: \"$(said "$name")\"; nothing changed (sriov_numvfs, the VFs' and edu's drivers and overrides, host-bindings)"
  }
  mc bad_count host vfs "$PF" 3
  refused bad_count host_bad_vf_count 1 "host vfs $PF 3" INVALID_ARGUMENT 'asks for 3' '0 to 2'
  mc bad_nosriov host vfs "$EDU" 1
  refused bad_nosriov host_bad_no_sriov 1 "host vfs $EDU 1" FAILED_PRECONDITION 'no SR-IOV' HOST_PRECONDITION
  mc bad_address host bind 0000:zz:00.0
  refused bad_address host_bad_address 1 "host bind 0000:zz:00.0" INVALID_ARGUMENT 0000:zz:00.0 INVALID_REQUEST
  if [ -e "$SYS/0000:00:1f.6" ]; then
    skip "host_bad_missing_device: 0000:00:1f.6 exists in this guest"
  else
    mc bad_missing host bind 0000:00:1f.6
    refused bad_missing host_bad_missing_device 1 "host bind 0000:00:1f.6" NOT_FOUND 'does not exist' DEVICE_NOT_FOUND
  fi
}

# A probe that fails after the first write: vfio-pci and a bridge.
rollback_phase() {
  check=host_bind_rollback
  P=$EMPTY_PORT
  before=$(where "$P")
  if [ "$before" != "pcieport (null)" ]; then
    fail "$check: the empty root port $P is on $before, want pcieport with driver_override (null)"
    return
  fi
  dmesg -c >/dev/null
  mc bind_port host bind "$P" --driver=vfio_pci
  after=$(where "$P")
  # 6.1: "vfio-pci: probe of P failed with error -22"; 6.12: "vfio-pci P:
  # probe with driver vfio-pci failed with error -22".
  probe=$(dmesg | grep "$P" | grep -m 1 'probe.*failed with error' | sed 's/^\[[^]]*\] //')
  if [ $RC != 1 ]; then
    fail "$check: migctl host bind $P --driver=vfio_pci (a bridge) exited $RC, want 1"
    show bind_port
  elif [ "$after" != "$before" ] || [ -n "$(record_of "$P")" ]; then
    fail "$check: after the failed bind $P is on $after (was $before); record '$(record_of "$P")'"
    show bind_port
  elif ! grep -q 'DEVICE_ERROR' "$T/bind_port.err" || ! grep -q 'rolled back' "$T/bind_port.err"; then
    fail "$check: the bind failed and the port is back, but the error is not DEVICE_ERROR with the rollback:"
    show bind_port
  elif [ -z "$probe" ]; then
    fail "$check: the bind failed and was rolled back, but the kernel logged no failed vfio-pci probe of $P:"
    dmesg | tail -n 10 | indent
  else
    pass "$check: migctl host bind $P --driver=vfio_pci (an empty pcie-root-port) exits 1: \"$(said bind_port)\"; the kernel: \"$probe\"; sysfs: $P back on pcieport with driver_override (null), no record"
  fi
}

if [ -z "$NVME_PF" ]; then
  fail "host_nvme_pf_status: no NVMe controller with SR-IOV (1b36:0010, sriov_totalvfs) in the guest (vm_test.sh's QEMU command line has one)"
else
  vf_phase
fi
# ---- the VF token of the NVMe PF on vfio-pci ----

vf_token_phase() {
  PF=$NVME_PF
  check=host_vf_token
  mc bind_pf host bind "$PF" --driver=vfio_pci
  if [ $RC != 0 ] || [ "$(driver_of "$PF")" != vfio-pci ]; then
    fail "$check: migctl host bind $PF --driver=vfio_pci exited $RC; $PF on $(driver_of "$PF")"
    show bind_pf
    return
  fi
  sriov=$(cat /sys/module/vfio_pci/parameters/enable_sriov 2>/dev/null)
  mc vftoken host vf-token "$PF"
  tf=$STATE/vf-tokens/$PF
  token=$(cat "$tf" 2>/dev/null)
  id=$(field vftoken token_id)
  if [ $RC != 0 ] || [ -z "$token" ] || [ -z "$id" ]; then
    fail "$check: migctl host vf-token $PF exited $RC (vfio_pci enable_sriov '$sriov'); token file $([ -s "$tf" ] && echo written || echo missing)"
    show vftoken
  elif [ "$(stat -c %a "$tf")" != 600 ] || [ "$(stat -c %a "$STATE/vf-tokens")" != 700 ]; then
    fail "$check: $tf has mode $(stat -c %a "$tf") (want 600), its directory $(stat -c %a "$STATE/vf-tokens") (want 700)"
  elif grep -qF "$token" "$T/host.log" "$T/vftoken.out" "$T/vftoken.err"; then
    fail "$check: the token appears in the agent's log or migctl's answer"
  else
    pass "$check: migctl host bind $PF --driver=vfio_pci, host vf-token $PF: \"$(head -n 1 "$T/vftoken.out")\", token_id $id; $tf mode 600 (directory 700); the token in neither the agent's log nor migctl's answer"
  fi

  check=host_vf_token_open
  echo 1 >"$SYS/$PF/sriov_drivers_autoprobe"
  mc vfs1 host vfs "$PF" 1
  V=$(basename "$(readlink "$SYS/$PF/virtfn0")")
  if [ $RC != 0 ] || [ -z "$V" ] || ! wait_for '[ "$(driver_of "$V")" = vfio-pci ]' 10; then
    fail "$check: migctl host vfs $PF 1 exited $RC; VF '$V' on $(driver_of "$V") with driver_override $(override_of "$V")"
    show vfs1
    echo 0 >"$SYS/$PF/sriov_drivers_autoprobe"
    return
  fi
  # The host agent again, with the VF: it sets the stored token on the PF
  # and opens the VF with it.
  stop "$AGENT_PID"
  printf 'vfio nvf0 bdf=%s\n' "$V" >"$T/vft.conf"
  if ! launch host agent-a --state_dir="$STATE" --devices_config="$T/vft.conf"; then
    fail "$check: the agent with \"vfio nvf0 bdf=$V\" did not serve (exit $EXIT):"
    tail -n 10 "$T/host.log" | indent
  else
    AGENT_PID=$PID
    AGENT=$ADDR
    mc vft_devices devices
    row=$(grep '^nvf0 ' "$T/vft_devices.out")
    if [ -z "$row" ] || echo "$row" | grep -q 'STOP_COPY'; then
      fail "$check: migctl devices does not list nvf0 without migration flags:"
      show vft_devices
    elif ! grep -q "nvf0: kernel VFIO device $V .*stored VF token" "$T/host.log"; then
      fail "$check: the agent's log does not say nvf0 was opened with its PF's stored VF token"
    else
      pass "$check: host vfs $PF 1 made $V (on vfio-pci by vfio-pci's driver_override); the agent restarted with \"vfio nvf0 bdf=$V\" set the stored token on $PF again and opened the VF with it: \"$(echo "$row" | tr -s ' ')\""
    fi
  fi
  stop "$AGENT_PID"
  AGENT_PID=""

  check=host_vf_token_missing
  printf 'vfio nvf0 bdf=%s\n' "$V" >"$T/vfnt.conf"
  rm -rf "$T/vfnt.state"
  : >"$T/vfnt.log"
  if launch vfnt agent-b --state_dir="$T/vfnt.state" --devices_config="$T/vfnt.conf"; then
    fail "$check: an agent without the token opened $V and serves"
    stop "$PID"
  elif ! grep -qF "VF $V belongs to PF $PF, which vfio-pci drives with SR-IOV enabled: opening it needs the PF owner's VF token (migctl host vf-token $PF makes this agent the owner, or give vf_token= on the device line)" "$T/vfnt.log"; then
    fail "$check: an agent without the token exited $EXIT, but not with the clear error:"
    tail -n 5 "$T/vfnt.log" | indent
  else
    pass "$check: an agent without the token (another state dir) exits $EXIT: \"$(grep -F "belongs to PF" "$T/vfnt.log" | head -n 1)\""
  fi

  start_host_agent || return
  check=host_vf_token_release
  mc vfs0t host vfs "$PF" 0
  vfs_rc=$RC
  echo 0 >"$SYS/$PF/sriov_drivers_autoprobe"
  mc unbind_pf host unbind "$PF"
  if [ $vfs_rc != 0 ] || [ "$(cat "$SYS/$PF/sriov_numvfs")" != 0 ]; then
    fail "$check: migctl host vfs $PF 0 exited $vfs_rc"
    show vfs0t
  elif [ $RC != 0 ] || ! wait_for '[ "$(driver_of "$PF")" = nvme ]' 20; then
    fail "$check: migctl host unbind $PF exited $RC; $PF on $(driver_of "$PF")"
    show unbind_pf
  elif [ -e "$tf" ]; then
    fail "$check: $tf is still there after the PF left vfio-pci"
  elif grep -qF "$token" "$T"/*.log; then
    fail "$check: the token appears in an agent's log"
  else
    pass "$check: host vfs $PF 0, host unbind $PF: \"$(head -n 1 "$T/unbind_pf.out")\"; $PF on nvme, the token file gone; the token in no agent's log"
  fi
}

if [ -n "$NVME_PF" ] && [ "$(driver_of "$NVME_PF")" = nvme ] &&
  [ "$(cat "$SYS/$NVME_PF/sriov_numvfs")" = 0 ]; then
  vf_token_phase
else
  fail "host_vf_token: the NVMe PF is not on nvme with 0 VFs after the SR-IOV checks"
fi
if [ -z "$EMPTY_PORT" ]; then
  fail "host_bind_rollback: no pcie-root-port with nothing behind it in the guest (vm_test.sh's QEMU command line has one)"
else
  rollback_phase
fi

# ---- mdev: mbochs ----

mdev_phase() {
  check=host_mdev_types
  if ! modprobe mbochs || [ ! -d /sys/class/mdev_bus/mbochs ]; then
    fail "$check: modprobe mbochs failed, or no /sys/class/mdev_bus/mbochs"
    dmesg | tail -n 5 | indent
    return
  fi
  TYPES=/sys/class/mdev_bus/mbochs/mdev_supported_types
  mc types host mdev-types mbochs
  want=""
  for t in mbochs-large mbochs-medium mbochs-small; do
    want="$want$t=$(cat "$TYPES/$t/available_instances" 2>/dev/null) "
  done
  got=$(awk '$1 ~ /^mbochs-/ { printf "%s=%s ", $1, $2 }' "$T/types.out")
  if [ $RC != 0 ] || [ "$got" != "$want" ] || ! grep -q '^instances: none' "$T/types.out"; then
    fail "$check: migctl host mdev-types mbochs (exit $RC) lists '$got', sysfs has '$want' (and no instances)"
    show types
    return
  fi
  pass "$check: migctl host mdev-types mbochs: $got(available instances as sysfs has them), api $(awk '$1 == "mbochs-small" { print $3 }' "$T/types.out"), instances: none"

  check=host_mdev_create
  avail=$(cat "$TYPES/mbochs-small/available_instances")
  mc create host mdev-create mbochs mbochs-small
  U=$(cat "$T/create.out")
  if [ $RC != 0 ] || ! echo "$U" | grep -qE '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'; then
    fail "$check: migctl host mdev-create mbochs mbochs-small exited $RC, printed '$U'"
    show create
    return
  fi
  type=$(basename "$(readlink "/sys/bus/mdev/devices/$U/mdev_type")" 2>/dev/null)
  parent=$(basename "$(dirname "$(readlink -f "/sys/bus/mdev/devices/$U")")")
  left=$(cat "$TYPES/mbochs-small/available_instances")
  if [ ! -e "/sys/bus/mdev/devices/$U" ] || [ "$type" != mbochs-small ] || [ "$parent" != mbochs ]; then
    fail "$check: UUID $U: /sys/bus/mdev/devices/$U $([ -e "/sys/bus/mdev/devices/$U" ] && echo "exists, type '$type', parent '$parent'" || echo missing)"
  elif [ "$left" != $((avail - 1)) ]; then
    fail "$check: mbochs-small had $avail available instances, now $left"
  else
    pass "$check: migctl host mdev-create mbochs mbochs-small printed $U ($(cat "$T/create.err")); /sys/bus/mdev/devices/$U exists, type mbochs-small, parent mbochs; available mbochs-small $avail -> $left"
  fi

  check=host_mdev_remove
  mc remove host mdev-remove "$U"
  if [ $RC != 0 ] || [ -e "/sys/bus/mdev/devices/$U" ] ||
    [ "$(cat "$TYPES/mbochs-small/available_instances")" != "$avail" ]; then
    fail "$check: migctl host mdev-remove $U exited $RC; /sys/bus/mdev/devices/$U $([ -e "/sys/bus/mdev/devices/$U" ] && echo "still exists" || echo gone)"
    show remove
  else
    pass "$check: migctl host mdev-remove $U: \"$(said remove)\"; /sys/bus/mdev/devices/$U gone, mbochs-small back to $avail available"
  fi

  check=host_mdev_bad_type
  mc bad_type host mdev-create mbochs mbochs-huge
  n=$(ls /sys/bus/mdev/devices | wc -l)
  if [ $RC != 1 ] || [ "$n" != 0 ]; then
    fail "$check: migctl host mdev-create mbochs mbochs-huge exited $RC (want 1); $n mdev instances"
    show bad_type
  elif ! grep -q 'mbochs-large, mbochs-medium, mbochs-small' "$T/bad_type.err"; then
    fail "$check: refused, but the error does not name the types there are: $(said bad_type)"
  else
    pass "$check: migctl host mdev-create mbochs mbochs-huge exits 1: \"$(said bad_type)\"; no instance made"
  fi

  check=host_mdev_bad_parent
  mc bad_parent host mdev-create no_such_parent mbochs-small
  n=$(ls /sys/bus/mdev/devices | wc -l)
  if [ $RC != 1 ] || [ "$n" != 0 ]; then
    fail "$check: migctl host mdev-create no_such_parent mbochs-small exited $RC (want 1); $n mdev instances"
    show bad_parent
  elif ! grep -q 'NOT_FOUND' "$T/bad_parent.err" || ! grep -q 'no_such_parent' "$T/bad_parent.err"; then
    fail "$check: refused, but not as NOT_FOUND naming the parent: $(said bad_parent)"
  else
    pass "$check: migctl host mdev-create no_such_parent mbochs-small exits 1: \"$(said bad_parent)\"; no instance made"
  fi
}

if [ "$MBOCHS" = yes ]; then
  mdev_phase
else
  for c in host_mdev_types host_mdev_create host_mdev_remove host_mdev_bad_type host_mdev_bad_parent; do
    skip "$c: the host did not build mbochs (its mbochs_build line says why)"
  done
fi

stop "$AGENT_PID"
say "  host agent log:"
grep 'host: ' "$T/host.log" | indent
