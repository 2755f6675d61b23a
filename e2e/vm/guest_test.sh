#!/bin/sh
# Runs inside the QEMU guest as /test.sh (busybox sh), from /init.
#
# When the agents are enabled, first runs the host phase (host_test.sh): a
# migd agent's HostService, through `migctl host`, binds edu #0 to
# edu_vfio_pci (loading it) and back, migrates edu #0 into edu #1 picked,
# bound and later released by a second agent (PrepareIncoming by class),
# gives QEMU's NVMe PF VFs and binds one
# to vfio-pci, and creates mdev instances of mbochs. It runs before anything
# here loads edu_vfio_pci or binds an edu device, so that the agent's
# modprobe loads the module and the edu devices are on no driver, as QEMU
# left them (nothing else claims 1234:11e8); it leaves them so. Then loads
# kernel/edu_vfio_pci (already loaded by the host phase: a no-op; its
# mem_kib comes from /etc/modprobe.d either way), binds every edu device to
# it through driver_override, runs edu_uapi_check (the driver through the
# uAPI, no migd), loads mlx5_core and the mlx5_vfio_pci the host built
# (kernel/mlx5) next to it, loads netdevsim and runs the devlink checks
# against it (devlink_test.sh), and, when the agents are enabled, migrates
# edu #0 to edu #1 with two migd agents on 127.0.0.1 and migctl, over
# mutual TLS (agents_test.sh).
#
# Settings come from /etc/vmtest.conf (written by the host harness):
#   SERIES=6.1|6.12 PRECOPY=yes|no DMA_REPORT=yes|no AGENTS=on|off MEM_KIB=N
#   TLS_VALID_FROM=SECONDS (when the agents' certificates become valid)
#   MLX5=yes|no NETDEVSIM=yes|no MBOCHS=yes|no (whether the host built
#   those modules)
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
MLX5=no
NETDEVSIM=no
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

# ---- the host phase: migd's HostService on a real kernel ----

if [ "$AGENTS" = on ]; then
  if [ -f /opt/host_test.sh ]; then
    say "== host (uptime $(cut -d' ' -f1 /proc/uptime))"
    /bin/sh /opt/host_test.sh "$EDU0" "$EDU1"
    say "== host done (uptime $(cut -d' ' -f1 /proc/uptime))"
  else
    say "SKIP host: /opt/host_test.sh is not in the initramfs (vm_test.sh --host-script)"
  fi
else
  say "SKIP host: needs the agents (MIGD_VM_AGENTS=off, or a migd without vfio device lines)"
fi

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

# ---- mlx5_vfio_pci next to mlx5_core; netdevsim and devlink ----
#
# No ConnectX device in this guest: mlx5_core only loads (its PCI driver
# registers and waits), and mlx5_vfio_pci, built on the host from Debian's
# linux-source by kernel/mlx5/install and installed under updates/, must be
# named by its vfio_pci: alias in modules.alias and load on top of it. No
# migration: that needs the hardware.

# The modules that hold module $1, space-separated.
holders() {
  for h in "/sys/module/$1/holders"/*; do
    [ -e "$h" ] && printf '%s ' "${h##*/}"
  done
}
# "registered" when PCI driver $1 is.
pci_driver() { [ -d "/sys/bus/pci/drivers/$1" ] && echo registered || echo "not registered"; }

say "== mlx5 and netdevsim (uptime $(cut -d' ' -f1 /proc/uptime))"
KVER=$(uname -r)
if modprobe mlx5_core && [ -d /sys/module/mlx5_core ]; then
  say "PASS mlx5_core_load: Debian's mlx5_core loaded (no ConnectX device; PCI driver $(pci_driver mlx5_core))"
else
  fail "mlx5_core_load: modprobe mlx5_core failed"
  dmesg | tail -n 10 | sed 's/^/dmesg: /'
fi
if [ "$MLX5" = yes ]; then
  # Every alias of a ConnectX VF (15b3:101e) under vfio-pci.
  aliases=$(grep -i 'vfio_pci:v000015B3d0000101E' "/lib/modules/$KVER/modules.alias")
  case "$aliases" in
    *" mlx5_vfio_pci"* | *" mlx5-vfio-pci"*)
      say "PASS mlx5_alias: modules.alias: $(echo "$aliases" | tr '\n' ';' | sed 's/;$//')" ;;
    *) fail "mlx5_alias: no vfio_pci:v000015B3d0000101E alias of mlx5_vfio_pci in /lib/modules/$KVER/modules.alias (found: ${aliases:-nothing})" ;;
  esac
  if modprobe mlx5_vfio_pci && [ -d /sys/module/mlx5_vfio_pci ]; then
    # It uses mlx5_core's exports: mlx5_core must count it as a holder.
    if [ -e /sys/module/mlx5_core/holders/mlx5_vfio_pci ]; then
      say "PASS mlx5_vfio_pci_load: $(modinfo mlx5_vfio_pci | sed -n 's/^filename: *//p') loaded next to mlx5_core (mlx5_core holders: $(holders mlx5_core)refcnt $(cat /sys/module/mlx5_core/refcnt); vfio_pci_core holders: $(holders vfio_pci_core)PCI driver $(pci_driver mlx5_vfio_pci))"
    else
      fail "mlx5_vfio_pci_load: loaded, but not a holder of mlx5_core (its holders: $(holders mlx5_core))"
    fi
    lsmod | grep -E '^(mlx5|vfio)' | sed 's/^/lsmod: /'
  else
    fail "mlx5_vfio_pci_load: modprobe mlx5_vfio_pci failed"
    dmesg | tail -n 10 | sed 's/^/dmesg: /'
  fi
else
  say "SKIP mlx5_alias: the host did not build mlx5_vfio_pci (its mlx5_build line says why)"
  say "SKIP mlx5_vfio_pci_load: the host did not build mlx5_vfio_pci"
fi

if [ "$NETDEVSIM" = yes ]; then
  if modprobe psample && modprobe netdevsim && [ -e /sys/bus/netdevsim/new_device ]; then
    say "PASS netdevsim_load: psample and netdevsim loaded, /sys/bus/netdevsim/new_device there"
    if [ -f /opt/devlink_test.sh ]; then
      /bin/sh /opt/devlink_test.sh
    else
      say "SKIP devlink: /opt/devlink_test.sh is not in the initramfs (vm_test.sh --devlink-script)"
    fi
  else
    fail "netdevsim_load: modprobe psample / netdevsim failed"
    dmesg | tail -n 10 | sed 's/^/dmesg: /'
  fi
else
  say "SKIP netdevsim_load: the host did not build netdevsim (its netdevsim_build line says why)"
  say "SKIP devlink: needs netdevsim"
fi
say "== mlx5 and netdevsim done (uptime $(cut -d' ' -f1 /proc/uptime))"

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
