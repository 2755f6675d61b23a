#!/bin/sh
# Runs inside the QEMU guest (busybox sh, as root), after the harness has
# loaded psample and netdevsim: drives vendor-plugins/mlx5's devlink client
# (/opt/migd-devlink) against a netdevsim device, the kernel's devlink
# simulator. No ConnectX exists here; this proves the generic netlink side
# (family lookup, info, port dump, eswitch mode, port function set and the
# kernel's extended ack) on a real kernel.
#
# What netdevsim does (drivers/net/netdevsim/dev.c, 6.1 and 6.12 alike):
# info reports fw.mgmt 10.20.30 as stored and running; VFs get pcivf ports
# (index 128 + VF, pf 0, controller 0) once the eswitch is in switchdev
# mode; its ports have no port function operations, so the migratable
# capability cannot be set. How the kernel refuses differs by series:
#   6.12: devlink validates the port function: EOPNOTSUPP, extack "Port
#         doesn't support migratable function attribute";
#   6.1:  devlink predates DEVLINK_PORT_FN_ATTR_CAPS (6.2) and parses the
#         port function strictly: EINVAL, extack "leftover: Fail to parse
#         port function attributes" (the prefix is net/devlink/leftover.c's
#         module name).
#
# Settings: SERIES=6.1|6.12 from /etc/vmtest.conf (the host harness's);
# MIGD_DEVLINK overrides the tool's path.
#
# Output, one result per line, as guest_test.sh:
#   PASS <check>: <what was verified>
#   FAIL <check>: <why>
#   SKIP <check>: <why>

[ -f /etc/vmtest.conf ] && . /etc/vmtest.conf

TOOL=${MIGD_DEVLINK:-/opt/migd-devlink}
ID=10
DEV=netdevsim$ID
HANDLE=netdevsim/$DEV
SYS=/sys/bus/netdevsim/devices/$DEV

say() { echo "$*"; }
pass() { say "PASS $*"; }
fail() { say "FAIL $*"; }
skip() { say "SKIP $*"; }
# One line of a command's output, for a result line.
oneline() { echo "$1" | tr '\n' ';' | sed 's/;$//'; }

# Waits up to 10 s for path $1 to exist (or, with $2 = gone, to vanish).
wait_for() {
  i=0
  while [ $i -lt 100 ]; do
    if [ "$2" = gone ]; then
      [ -e "$1" ] || return 0
    else
      [ -e "$1" ] && return 0
    fi
    usleep 100000 2>/dev/null || sleep 1
    i=$((i + 1))
  done
  return 1
}

say "== devlink_test (series ${SERIES:-?}, kernel $(uname -r))"

if [ ! -x "$TOOL" ]; then
  fail "devlink_tool: $TOOL is missing from the initramfs"
  exit 0
fi
if [ ! -e /sys/bus/netdevsim/new_device ]; then
  fail "devlink_create: /sys/bus/netdevsim/new_device is missing (netdevsim not loaded)"
  exit 0
fi

# ---- a netdevsim device with one port ----

echo "$ID 1" >/sys/bus/netdevsim/new_device 2>/dev/null
if ! wait_for "$SYS"; then
  fail "devlink_create: $SYS did not appear after echo \"$ID 1\" > /sys/bus/netdevsim/new_device"
  dmesg | tail -n 10 | sed 's/^/dmesg: /'
  for c in devlink_info devlink_legacy devlink_eswitch devlink_ports devlink_migratable_unsupported devlink_migratable_no_vf devlink_usage devlink_delete devlink_no_instance; do
    skip "$c: no netdevsim device"
  done
  exit 0
fi
pass "devlink_create: $SYS exists"

# ---- info ----

out=$("$TOOL" info "$HANDLE" 2>&1)
rc=$?
if [ $rc = 0 ] && echo "$out" | grep -qx "driver netdevsim" &&
  echo "$out" | grep -qx "running fw.mgmt 10.20.30" &&
  echo "$out" | grep -qx "stored fw.mgmt 10.20.30"; then
  pass "devlink_info: $HANDLE reports driver netdevsim, running and stored fw.mgmt 10.20.30"
else
  fail "devlink_info: exit $rc, output: $(oneline "$out")"
fi

# ---- VFs and switchdev ----

if ! echo 2 >"$SYS/sriov_numvfs"; then
  fail "devlink_eswitch: echo 2 > $SYS/sriov_numvfs failed"
fi

# In legacy mode VFs have no ports: the tool says where they come from.
mode=$("$TOOL" eswitch "$HANDLE" 2>&1)
out=$("$TOOL" set-migratable "$HANDLE" 0 on 2>&1)
rc=$?
if [ "$mode" = "mode legacy" ] && [ $rc = 1 ] &&
  echo "$out" | grep -q "no VF ports" && echo "$out" | grep -q "switchdev"; then
  pass "devlink_legacy: $mode; set-migratable points at switchdev: $(oneline "$out")"
else
  fail "devlink_legacy: eswitch said \"$mode\"; set-migratable exit $rc: $(oneline "$out")"
fi

out=$("$TOOL" eswitch "$HANDLE" switchdev 2>&1)
rc=$?
back=$("$TOOL" eswitch "$HANDLE" 2>&1)
rc2=$?
if [ $rc = 0 ] && [ $rc2 = 0 ] && [ "$back" = "mode switchdev" ]; then
  pass "devlink_eswitch: set to switchdev, reads back \"$back\""
else
  fail "devlink_eswitch: set exit $rc ($(oneline "$out")), read exit $rc2 ($(oneline "$back"))"
fi

# ---- ports ----

ports=$("$TOOL" ports "$HANDLE" 2>&1)
rc=$?
vf0=$(echo "$ports" | grep -E '^[0-9]+ flavour=pcivf pf=0 vf=0 controller=0( |$)')
vf1=$(echo "$ports" | grep -E '^[0-9]+ flavour=pcivf pf=0 vf=1 controller=0( |$)')
if [ $rc = 0 ] && [ -n "$vf0" ] && [ -n "$vf1" ]; then
  pass "devlink_ports: pcivf ports for VF 0 and VF 1: $(oneline "$ports")"
else
  fail "devlink_ports: exit $rc, no pcivf port for vf=0 or vf=1 in: $(oneline "$ports")"
fi
VF0_INDEX=${vf0%% *}

# ---- the migratable capability: netdevsim cannot ----

out=$("$TOOL" set-migratable "$HANDLE" 0 on 2>&1)
rc=$?
case "$SERIES" in
  6.1) want="EINVAL" ;;
  *) want="EOPNOTSUPP" ;;
esac
if [ -z "$VF0_INDEX" ]; then
  skip "devlink_migratable_unsupported: no pcivf port for VF 0 to try"
elif [ $rc = 1 ] && echo "$out" | grep -q "^migd-devlink: " &&
  echo "$out" | grep -q "port $VF0_INDEX (pcivf 0)" &&
  echo "$out" | grep -q "migratable capability cannot be set" &&
  echo "$out" | grep -q "($want: "; then
  pass "devlink_migratable_unsupported: exit 1 with $want naming the port: $(oneline "$out")"
else
  fail "devlink_migratable_unsupported: wanted exit 1 and $want for port $VF0_INDEX (pcivf 0); exit $rc: $(oneline "$out")"
fi

out=$("$TOOL" set-migratable "$HANDLE" 7 on 2>&1)
rc=$?
if [ $rc = 1 ] && echo "$out" | grep -q "VF 7"; then
  pass "devlink_migratable_no_vf: exit 1 naming VF 7: $(oneline "$out")"
else
  fail "devlink_migratable_no_vf: wanted exit 1 naming VF 7; exit $rc: $(oneline "$out")"
fi

out=$("$TOOL" set-migratable "$HANDLE" seven on 2>&1)
rc=$?
if [ $rc = 2 ]; then
  pass "devlink_usage: a VF number that is not a number is bad usage (exit 2)"
else
  fail "devlink_usage: wanted exit 2; exit $rc: $(oneline "$out")"
fi

# ---- delete, and the missing instance ----

"$TOOL" eswitch "$HANDLE" legacy >/dev/null 2>&1
echo "$ID" >/sys/bus/netdevsim/del_device 2>/dev/null
if wait_for "$SYS" gone; then
  pass "devlink_delete: $SYS is gone after echo $ID > /sys/bus/netdevsim/del_device"
else
  fail "devlink_delete: $SYS is still there"
fi

out=$("$TOOL" info "$HANDLE" 2>&1)
rc=$?
if [ $rc = 1 ] && echo "$out" | grep -q "no devlink instance $HANDLE"; then
  pass "devlink_no_instance: info of the deleted device fails: $(oneline "$out")"
else
  fail "devlink_no_instance: wanted exit 1 and \"no devlink instance $HANDLE\"; exit $rc: $(oneline "$out")"
fi
