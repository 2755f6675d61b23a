#!/bin/sh
# Runs inside the QEMU guest as /test.sh (busybox sh), from /init.
#
# Loads kernel/edu_vfio_pci, binds every edu device to it through
# driver_override, runs edu_uapi_check (the driver through the uAPI, no migd)
# and, when the agents are enabled, migrates edu #0 to edu #1 with two migd
# agents on 127.0.0.1 and migctl, over mutual TLS (agents_test.sh).
#
# Settings come from /etc/vmtest.conf (written by the host harness):
#   SERIES=6.1|6.12 PRECOPY=yes|no DMA_REPORT=yes|no AGENTS=on|off MEM_KIB=N
#   TLS_VALID_FROM=SECONDS (when the agents' certificates become valid)
#
# Output is for the host harness to parse, one result per line:
#   PASS <check>: <what was verified>
#   FAIL <check>: <why>
#   SKIP <check>: <why>
# and "VMTEST DONE" last. Everything else is commentary.

PRECOPY=no
DMA_REPORT=yes
AGENTS=off
MEM_KIB=4096
[ -f /etc/vmtest.conf ] && . /etc/vmtest.conf

say() { echo "$*"; }
fail() { say "FAIL $*"; }

say "VMTEST BEGIN kernel=$(uname -r) series=${SERIES:-?} uptime=$(cut -d' ' -f1 /proc/uptime)"
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up 2>/dev/null

# ---- module and binding ----

load_driver() {
  modprobe vfio_iommu_type1 || return 1
  modprobe vfio-pci-core 2>/dev/null || modprobe vfio_pci_core || return 1
  modprobe edu_vfio_pci mem_kib="$MEM_KIB" || return 1
  return 0
}

EDUS=""
for dev in /sys/bus/pci/devices/*; do
  if [ "$(cat "$dev/vendor")" = 0x1234 ] && [ "$(cat "$dev/device")" = 0x11e8 ]; then
    EDUS="$EDUS ${dev##*/}"
  fi
done
set -- $EDUS
if [ $# -lt 2 ]; then
  fail "setup: found $# edu devices, need 2 (QEMU -device edu)"
  say "VMTEST DONE"
  exit 0
fi
EDU0=$1
EDU1=$2

if ! load_driver; then
  fail "module_load: modprobe edu_vfio_pci failed"
  dmesg | tail -n 20 | sed 's/^/dmesg: /'
  say "VMTEST DONE"
  exit 0
fi

bind() {
  bdf=$1
  d=/sys/bus/pci/devices/$bdf
  echo edu_vfio_pci >"$d/driver_override" || return 1
  if [ -e "$d/driver" ]; then
    echo "$bdf" >"$d/driver/unbind" || return 1
  fi
  echo "$bdf" >/sys/bus/pci/drivers_probe || return 1
  [ "$(basename "$(readlink "$d/driver")")" = edu_vfio_pci ]
}

group_of() { basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"; }

bound=1
for bdf in $EDU0 $EDU1; do
  bind "$bdf" || { fail "bind: $bdf did not bind to edu_vfio_pci"; bound=0; }
done
if [ $bound = 1 ]; then
  G0=$(group_of "$EDU0")
  G1=$(group_of "$EDU1")
  if [ "$G0" = "$G1" ]; then
    fail "bind: $EDU0 and $EDU1 share IOMMU group $G0 (need one agent per group)"
    bound=0
  elif [ ! -e "/dev/vfio/$G0" ] || [ ! -e "/dev/vfio/$G1" ]; then
    fail "bind: /dev/vfio/$G0 or /dev/vfio/$G1 missing"
    bound=0
  else
    say "PASS bind: $EDU0 (group $G0) and $EDU1 (group $G1) bound to edu_vfio_pci via driver_override; module $(cat /sys/module/edu_vfio_pci/parameters/mem_kib 2>/dev/null) KiB internal memory"
  fi
fi
if [ $bound = 0 ]; then
  dmesg | tail -n 20 | sed 's/^/dmesg: /'
  say "VMTEST DONE"
  exit 0
fi

# ---- the driver through the uAPI ----

say "== edu_uapi_check (uptime $(cut -d' ' -f1 /proc/uptime))"
/opt/edu_uapi_check --precopy="$PRECOPY" --dma-report="$DMA_REPORT" \
  "$G0" "$EDU0" "$G1" "$EDU1"
rc=$?
[ $rc = 0 ] || say "edu_uapi_check exited with $rc"
dmesg | grep -E 'edu_vfio_pci|vfio' | tail -n 30 | sed 's/^/dmesg: /'

# ---- two agents migrate edu #0 to edu #1 ----

if [ "$AGENTS" = on ]; then
  if [ -x /opt/agents_test.sh ]; then
    /bin/sh /opt/agents_test.sh "$EDU0" "$EDU1"
  else
    fail "agents: /opt/agents_test.sh missing from the initramfs"
  fi
else
  say "SKIP agents: the two-agent phase is off (MIGD_VM_AGENTS=off, or a migd without vfio device lines)"
fi

say "VMTEST DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
