#!/usr/bin/env bash
# The VM tier: boots Debian kernels under QEMU (software emulation) with two
# of QEMU's edu devices and an NVMe controller with SR-IOV behind an
# intel-iommu, loads kernel/edu_vfio_pci in the guest and runs
# e2e/vm/guest_test.sh there.
#
#   vm_test.sh --migd=PATH --migctl=PATH --check=PATH --module-src=DIR
#              --guest-script=PATH [--agents-script=PATH] [--vmm=PATH]
#              [--pki=PATH] [--fetch=PATH] [--plugin=PATH]
#              [--mlx5-src=DIR] [--devlink-tool=PATH] [--devlink-script=PATH]
#              [--host-script=PATH]
#
# --vmm is e2e/vm/edu_vmm (the VMM stand-in of the agents phase's dirty-page
# and fd handoff checks). --pki is tools/pki: the agents phase runs with
# mutual TLS, with a development PKI minted here on the host and packed into
# the initramfs (/etc/migd/tls: the CA, agent-a for the source agent, agent-b
# for the destination, operator for migctl, the policy). The certificates
# are valid from an hour before minting; the guest's clock comes from QEMU's
# RTC, the host's time. --plugin is vendor-plugins/edu's edu.so: the agents
# phase's compatibility checks load it from /opt/plugins (--plugin_dir).
#
# --mlx5-src is kernel/mlx5: its install script builds mlx5_vfio_pci from
# Debian's linux-source of each kernel (the tarball tools/vm/fetch keeps in
# the cache) against that kernel's headers, installs it under updates/ and
# checks that its vfio_pci alias resolves to it; netdevsim (test-only: the
# devlink checks' device) is built from the same tarball. The guest loads
# mlx5_core (no ConnectX device: it only loads), checks modules.alias and
# loads mlx5_vfio_pci next to it, then loads netdevsim and runs
# --devlink-script (/opt/devlink_test.sh) with --devlink-tool
# (vendor-plugins/mlx5's migd-devlink, /opt/migd-devlink).
#
# --host-script is e2e/vm/host_test.sh (/opt/host_test.sh): with the agents
# on, the guest runs it first, before anything binds the edu devices: a migd
# agent's HostService, driven by `migctl host ...`, binds edu #0 to
# edu_vfio_pci and back, gives QEMU's NVMe controller (SR-IOV, behind its own
# root port) two VFs and binds one to vfio-pci, shows a failed probe rolled
# back (vfio-pci refuses a bridge: an empty root port, there for that), and
# creates and removes mdev instances of mbochs, which Debian's kernels leave
# out and which is built here from the same source tarball as netdevsim. The
# initramfs has vfio-pci, nvme and mdev for it, /sbin/modprobe (the agent's
# modprobe: busybox's), and edu_vfio_pci's mem_kib in /etc/modprobe.d (the
# agent's modprobe loads the module there, with no options of its own).
#
# Environment:
#   MIGD_VM_CACHE    kernels fetched by tools/vm/fetch (default /var/cache/migd-vm);
#                    fetched here when missing
#   MIGD_VM_SERIES   which kernels, e.g. "6.1" (default: every one in kernels.list)
#   MIGD_VM_AGENTS   on|off|auto (default auto: on when migd has the VFIO backend)
#   MIGD_VM_MEM_KIB  the driver's internal memory per device (default 4096)
#   MIGD_VM_WORKDIR  where to build and keep logs (default $TEST_TMPDIR or a temp dir)
#   MIGD_VM_KERNELS  not read: tools/test sets it to the kernels' versions so
#                    that a new kernel runs the test again instead of a cached result
#
# For each kernel: builds the modules against that kernel's headers, packs a
# busybox initramfs, boots, and prints every PASS/FAIL/SKIP line of the guest
# prefixed with the kernel series. The next kernel's modules and initramfs
# are built while this one boots (at the lowest priority, on the core QEMU
# leaves free); its log lines follow this kernel's. A boot is retried only
# when the guest never reached /init (the known early-boot flakes); a failed
# check is never retried. Exits 0 when every kernel ran to the end with no
# FAIL.
set -uo pipefail

export PATH="$PATH:/usr/sbin:/sbin"

migd="" migctl="" check="" module_src="" guest_script="" agents_script="" fetch=""
vmm="" pki="" plugin="" mlx5_src="" devlink_tool="" devlink_script="" host_script=""
for arg in "$@"; do
  case "$arg" in
    --migd=*) migd="${arg#*=}" ;;
    --migctl=*) migctl="${arg#*=}" ;;
    --check=*) check="${arg#*=}" ;;
    --module-src=*) module_src="${arg#*=}" ;;
    --guest-script=*) guest_script="${arg#*=}" ;;
    --agents-script=*) agents_script="${arg#*=}" ;;
    --vmm=*) vmm="${arg#*=}" ;;
    --pki=*) pki="${arg#*=}" ;;
    --fetch=*) fetch="${arg#*=}" ;;
    --plugin=*) plugin="${arg#*=}" ;;
    --mlx5-src=*) mlx5_src="${arg#*=}" ;;
    --devlink-tool=*) devlink_tool="${arg#*=}" ;;
    --devlink-script=*) devlink_script="${arg#*=}" ;;
    --host-script=*) host_script="${arg#*=}" ;;
    *) echo "vm_test: unknown argument $arg" >&2; exit 2 ;;
  esac
done
for v in check module_src guest_script; do
  if [[ -z "${!v}" ]]; then
    echo "vm_test: --${v//_/-} is required" >&2
    exit 2
  fi
done

cache="${MIGD_VM_CACHE:-/var/cache/migd-vm}"
work="${MIGD_VM_WORKDIR:-${TEST_TMPDIR:-$(mktemp -d)}}/vm"
outdir="${TEST_UNDECLARED_OUTPUTS_DIR:-$work}"
mem_kib="${MIGD_VM_MEM_KIB:-4096}"
# Per boot: reaching /init takes 4-10 s, the whole guest run 20-40 s.
init_timeout=90
boot_timeout=240
mkdir -p "$work" "$outdir"

log() { echo "vm: $*"; }

for tool in qemu-system-x86_64 busybox cpio depmod modprobe make gcc xz strip; do
  if ! command -v "$tool" >/dev/null; then
    log "FAIL setup: $tool not found (tools/lib/deps.sh installs it)"
    echo "0 passed, 1 failed"
    exit 1
  fi
done

if [[ ! -s "$cache/kernels.list" ]]; then
  if [[ -n "$fetch" ]]; then
    log "no kernels in $cache; fetching"
    MIGD_VM_CACHE="$cache" "$fetch" || { log "FAIL setup: $fetch failed"; exit 1; }
  else
    log "FAIL setup: no $cache/kernels.list (run tools/vm/fetch)"
    exit 1
  fi
fi

# ---- agents: on when migd accepts "vfio" device lines ----

agents="${MIGD_VM_AGENTS:-auto}"
if [[ "$agents" == auto ]]; then
  agents=off
  if [[ -n "$migd" && -x "$migd" && -n "$agents_script" ]]; then
    probe="$work/agents-probe.conf"
    echo "vfio probe bdf=0000:ff:1f.7" >"$probe"
    out="$(timeout 10 "$migd" --insecure --listen=127.0.0.1:0 \
      --devices_config="$probe" 2>&1 </dev/null)"
    # Without the backend the line does not parse: only "emulated" lines do.
    if ! grep -q 'want "emulated NAME' <<<"$out"; then
      agents=on
    fi
  fi
fi

# The agents' and migctl's certificates: one PKI for every kernel.
pki_dir="$work/pki"
tls_valid_from=""
if [[ "$agents" == on ]]; then
  rm -rf "$pki_dir"
  if [[ -z "$pki" ]] || ! command -v openssl >/dev/null ||
    ! "$pki" "$pki_dir" >/dev/null; then
    log "FAIL setup: the agents phase needs --pki (tools/pki) and openssl to mint its certificates"
    echo "0 passed, 1 failed"
    exit 1
  fi
  # When the certificates become valid (the guest checks its clock against it).
  tls_valid_from=$(date -d "$(openssl x509 -noout -startdate \
    -in "$pki_dir/agent-a.pem" | cut -d= -f2)" +%s)
fi
log "agents phase: $agents${tls_valid_from:+ (mutual TLS)}"

# ---- per kernel ----

# Copies binary $1 and the shared libraries it needs into staging dir $2, as
# /opt/<its name>, or /opt/$3.
copy_with_libs() {
  local bin="$1" st="$2" name="${3:-${1##*/}}" lib
  cp -L "$bin" "$st/opt/$name" || return 1
  while read -r lib; do
    [[ -n "$lib" && -f "$lib" ]] || continue
    mkdir -p "$st$(dirname "$lib")"
    cp -Ln "$lib" "$st$lib" 2>/dev/null || true
  done < <(ldd "$bin" 2>/dev/null | awk '/=>/ { print $3 } !/=>/ && $1 ~ /^\// { print $1 }')
}

build_module() {
  local kver="$1" root="$2" dir="$3"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$module_src"/*.c "$module_src"/Kbuild "$dir/"
  # BTF for modules needs pahole and vmlinux; the module works without it.
  make -C "$root/usr/src/linux-headers-$kver" M="$dir" \
    CONFIG_DEBUG_INFO_BTF_MODULES= modules >"$dir/build.log" 2>&1
}

# Extracts what the test-only modules need from the kernel's own source
# tarball $1 into $2 (drivers/net/netdevsim and samples/vfio-mdev, in one
# pass: reading the tarball is most of the time).
extract_test_sources() {
  local tarball="$1" dir="$2" top
  rm -rf "$dir"
  mkdir -p "$dir"
  top="${tarball##*/}"
  top="${top%.tar.xz}"
  xz -dc -T0 "$tarball" | tar -x -C "$dir" --strip-components=1 \
    "$top/drivers/net/netdevsim" "$top/samples/vfio-mdev" >"$dir.log" 2>&1
}

# Builds netdevsim (which Debian's kernels leave out) from the extracted
# source $3/drivers/net/netdevsim into $4/netdevsim.ko, without debug info.
build_netdevsim() {
  local kver="$1" root="$2" src="$3" dir="$4"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -a "$src/drivers/net/netdevsim" "$dir/src" 2>"$dir/build.log" || return 1
  {
    make -j"$(nproc)" -C "$root/usr/src/linux-headers-$kver" M="$dir/src" \
      CONFIG_NETDEVSIM=m CONFIG_DEBUG_INFO_BTF_MODULES= modules &&
      strip --strip-debug -o "$dir/netdevsim.ko" "$dir/src/netdevsim.ko"
  } >>"$dir/build.log" 2>&1
}

# Builds mbochs, the sample mdev driver (a display device; Debian's kernels
# build none of samples/vfio-mdev), from the extracted source
# $3/samples/vfio-mdev into $4/mbochs.ko, without debug info.
build_mbochs() {
  local kver="$1" root="$2" src="$3" dir="$4"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -a "$src/samples/vfio-mdev" "$dir/src" 2>"$dir/build.log" || return 1
  {
    make -j"$(nproc)" -C "$root/usr/src/linux-headers-$kver" M="$dir/src" \
      CONFIG_SAMPLE_VFIO_MDEV_MBOCHS=m CONFIG_DEBUG_INFO_BTF_MODULES= modules &&
      strip --strip-debug -o "$dir/mbochs.ko" "$dir/src/mbochs.ko"
  } >>"$dir/build.log" 2>&1
}

# mlx5_vfio_pci through kernel/mlx5/install, as an operator would: from the
# source tarball $3, installed into the root $4 (lib/modules/KVER/updates/),
# where the script checks that the ConnectX VF alias resolves to it.
build_mlx5() {
  local kver="$1" root="$2" tarball="$3" dir="$4"
  rm -rf "$dir"
  mkdir -p "$dir/root"
  bash "$mlx5_src/install" --kver="$kver" --kdir="$root/usr/src/linux-headers-$kver" \
    --source="$tarball" --root="$dir/root" >"$dir/install.log" 2>&1
}

build_initramfs() {
  local kver="$1" root="$2" ko="$3" out="$4" conf="$5" mlx5_ko="$6" nsim_ko="$7"
  local mbochs_ko="$8"
  local st f rel m a mods
  st="$work/$kver/initramfs"
  rm -rf "$st"
  mkdir -p "$st"/{bin,sbin,proc,sys,dev,tmp,run,opt,etc,root,lib/modules/"$kver"/{extra,updates}}
  cp "$(command -v busybox)" "$st/bin/busybox"
  for a in $("$st/bin/busybox" --list); do
    [[ "$a" == busybox ]] || ln -sf busybox "$st/bin/$a"
  done
  # The edu driver's, mlx5_core's (loaded in the guest even without
  # mlx5_vfio_pci: no ConnectX device, it only loads), netdevsim's, and the
  # host phase's: vfio-pci (the VF's driver; its catch-all vfio_pci alias in
  # modules.alias), nvme (the SR-IOV PF's driver), mdev (mbochs's).
  mods=(vfio vfio_iommu_type1 vfio-pci-core mlx5_core psample vfio-pci nvme mdev)
  for m in "${mods[@]}"; do
    modprobe -d "$root" -S "$kver" --show-depends "$m" 2>/dev/null |
      awk '$1 == "insmod" { print $2 }'
  done | sort -u | while read -r f; do
    rel="/${f#"$root"}"
    rel="${rel#/}"
    mkdir -p "$st/$(dirname "$rel")"
    cp "$f" "$st/$rel"
    case "$rel" in
      *.xz) xz -d "$st/$rel" ;;
      *.zst) zstd -q -d --rm "$st/$rel" ;;
    esac
  done
  cp "$ko" "$st/lib/modules/$kver/extra/"
  [[ -z "$mlx5_ko" ]] || cp "$mlx5_ko" "$st/lib/modules/$kver/updates/"
  [[ -z "$nsim_ko" ]] || cp "$nsim_ko" "$st/lib/modules/$kver/extra/"
  [[ -z "$mbochs_ko" ]] || cp "$mbochs_ko" "$st/lib/modules/$kver/extra/"
  cp "$root/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} \
    "$st/lib/modules/$kver/" 2>/dev/null
  depmod -b "$st" "$kver" || return 1
  # The agent loads modules with /sbin/modprobe (so does the kernel's
  # request_module); busybox's reads /etc/modprobe.d.
  ln -s ../bin/busybox "$st/sbin/modprobe"
  mkdir -p "$st/etc/modprobe.d"
  echo "options edu_vfio_pci mem_kib=$mem_kib" >"$st/etc/modprobe.d/edu_vfio_pci.conf"
  # A PF on vfio-pci may create VFs (host_test.sh's VF token section).
  echo "options vfio_pci enable_sriov=1" >"$st/etc/modprobe.d/vfio_pci.conf"
  cp "$check" "$st/opt/edu_uapi_check"
  if [[ -n "$devlink_tool" ]]; then
    copy_with_libs "$devlink_tool" "$st" migd-devlink || return 1
  fi
  if [[ -n "$devlink_script" ]]; then
    cp "$devlink_script" "$st/opt/devlink_test.sh" || return 1
  fi
  if [[ "$agents" == on ]]; then
    copy_with_libs "$migd" "$st"
    copy_with_libs "$migctl" "$st"
    cp "$agents_script" "$st/opt/agents_test.sh"
    [[ -z "$host_script" ]] || cp "$host_script" "$st/opt/host_test.sh"
    [[ -n "$vmm" ]] && cp "$vmm" "$st/opt/edu_vmm"
    if [[ -n "$plugin" ]]; then
      mkdir -p "$st/opt/plugins"
      cp -L "$plugin" "$st/opt/plugins/edu.so" || return 1
    fi
    mkdir -p "$st/etc/migd/tls"
    for f in ca.pem policy.conf agent-a.pem agent-a.key agent-b.pem \
      agent-b.key operator.pem operator.key; do
      cp "$pki_dir/$f" "$st/etc/migd/tls/" || return 1
    done
  fi
  cp "$guest_script" "$st/test.sh"
  cp "$conf" "$st/etc/vmtest.conf"
  cat >"$st/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
echo "== INIT START uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"
/bin/sh /test.sh 2>&1
sync
echo "== INIT DONE"
poweroff -f
INIT
  chmod +x "$st/init" "$st/test.sh"
  (cd "$st" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
}

# Boots once; the serial console goes to $3. Prints QEMU's exit status, or
# "noinit" when the guest did not reach /init within $init_timeout seconds
# (QEMU is stopped then), or "timeout" after $boot_timeout seconds in all.
boot() {
  local kernel="$1" initrd="$2" serial="$3" pid waited=0 rc
  qemu-system-x86_64 \
    -accel tcg -cpu max -m 2048 -smp 1 \
    -machine q35,kernel-irqchip=split \
    -device intel-iommu,intremap=on,caching-mode=on \
    -device pcie-root-port,id=rp0,chassis=1,slot=1 -device edu,bus=rp0 \
    -device pcie-root-port,id=rp1,chassis=2,slot=2 -device edu,bus=rp1 \
    -device pcie-root-port,id=rp2,chassis=3,slot=3 -device nvme-subsys,id=s0 \
    -device nvme,bus=rp2,serial=migdvm,subsys=s0,sriov_max_vfs=2,sriov_vq_flexible=8,sriov_vi_flexible=4,max_ioqpairs=12,msix_qsize=8 \
    -device pcie-root-port,id=rp3,chassis=4,slot=4 \
    -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyS0 intel_iommu=on iommu=pt panic=-1 oops=panic no_timer_check quiet loglevel=4" \
    -display none -no-reboot -serial file:"$serial" -monitor none \
    </dev/null >"$serial.qemu" 2>&1 &
  pid=$!
  # waited counts tenths of a second: the guest's poweroff is seen at once.
  while kill -0 "$pid" 2>/dev/null; do
    if ((waited >= boot_timeout * 10)); then
      kill "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      echo timeout
      return
    fi
    if ((waited >= init_timeout * 10)) && ! grep -q '^== INIT START' "$serial" 2>/dev/null; then
      kill "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      echo noinit
      return
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  wait "$pid"
  rc=$?
  echo "$rc"
}

# Builds what one kernel boots with into $work/KVER: edu_vfio_pci, the modules
# from Debian's source of that kernel, the guest's settings and the
# initramfs. Prints its log lines; writes $work/KVER/prepared: "PASS FAIL
# READY", its PASS and FAIL counts and 1 when the initramfs is there to boot.
#   prepare_kernel SERIES KVER PKGVER
prepare_kernel() {
  local series="$1" kver="$2" pkgver="$3"
  local root="$cache/kernels/$kver" dir="$work/$kver"
  local pass=0 fail=0 t0 t1 c tarball nsim_pid kmaj kmin kcode precopy dma_report conf
  local mlx5_ko="" nsim_ko="" mbochs_ko=""
  mkdir -p "$dir"
  rm -f "$dir/prepared"
  log "== Linux $series: $kver ($pkgver)"

  t0=$(date +%s)
  if ! build_module "$kver" "$root" "$dir/module"; then
    log "FAIL $series module_build: edu_vfio_pci does not build against $kver:"
    sed 's/^/vm:   /' "$dir/module/build.log" | tail -n 30
    fail=$((fail + 1))
    echo "$pass $fail 0" >"$dir/prepared"
    return
  fi
  log "PASS $series module_build: edu_vfio_pci.ko built against linux-headers-$kver ($(($(date +%s) - t0)) s)"
  pass=$((pass + 1))

  # mlx5_vfio_pci, and netdevsim and mbochs, from Debian's source of this
  # kernel, built side by side (each extraction reads the whole tarball;
  # netdevsim's and mbochs's share one). A kernel without them still boots
  # for the edu checks; the guest then skips theirs.
  tarball="$root/usr/src/linux-source-$series.tar.xz"
  if [[ ! -f "$tarball" ]]; then
    for c in mlx5_build netdevsim_build mbochs_build; do
      log "FAIL $series $c: no $tarball in the cache (tools/vm/fetch could not fetch linux-source-$series=$pkgver)"
      fail=$((fail + 1))
    done
  else
    t0=$SECONDS
    rm -f "$dir"/{netdevsim,mbochs}.{rc,secs}
    (
      if extract_test_sources "$tarball" "$dir/test-src"; then
        build_netdevsim "$kver" "$root" "$dir/test-src" "$dir/netdevsim"
        echo $? >"$dir/netdevsim.rc"
        echo $((SECONDS - t0)) >"$dir/netdevsim.secs"
        t1=$SECONDS
        build_mbochs "$kver" "$root" "$dir/test-src" "$dir/mbochs"
        echo $? >"$dir/mbochs.rc"
        echo $((SECONDS - t1)) >"$dir/mbochs.secs"
      fi
    ) &
    nsim_pid=$!
    if [[ -z "$mlx5_src" ]]; then
      log "SKIP $series mlx5_build: no --mlx5-src"
    elif build_mlx5 "$kver" "$root" "$tarball" "$dir/mlx5"; then
      mlx5_ko="$dir/mlx5/root/lib/modules/$kver/updates/mlx5-vfio-pci.ko"
      log "PASS $series mlx5_build: kernel/mlx5/install built mlx5-vfio-pci.ko from linux-source-$series ($pkgver) against linux-headers-$kver, installed it under updates/ and its vfio_pci alias resolves to it ($((SECONDS - t0)) s):"
      sed 's/^/vm:   /' "$dir/mlx5/install.log"
      pass=$((pass + 1))
    else
      log "FAIL $series mlx5_build: kernel/mlx5/install failed for $kver:"
      tail -n 30 "$dir/mlx5/install.log" | sed 's/^/vm:   /'
      fail=$((fail + 1))
    fi
    wait "$nsim_pid"
    if [[ ! -f "$dir/netdevsim.rc" ]]; then
      for c in netdevsim_build mbochs_build; do
        log "FAIL $series $c: extracting drivers/net/netdevsim and samples/vfio-mdev from $tarball failed:"
        tail -n 10 "$dir/test-src.log" | sed 's/^/vm:   /'
        fail=$((fail + 1))
      done
    else
      if [[ "$(cat "$dir/netdevsim.rc")" == 0 ]]; then
        nsim_ko="$dir/netdevsim/netdevsim.ko"
        log "PASS $series netdevsim_build: netdevsim.ko built from linux-source-$series against linux-headers-$kver ($(cat "$dir/netdevsim.secs") s)"
        pass=$((pass + 1))
      else
        log "FAIL $series netdevsim_build: netdevsim does not build from $tarball against $kver:"
        tail -n 30 "$dir/netdevsim/build.log" | sed 's/^/vm:   /'
        fail=$((fail + 1))
      fi
      if [[ "$(cat "$dir/mbochs.rc" 2>/dev/null)" == 0 ]]; then
        mbochs_ko="$dir/mbochs/mbochs.ko"
        log "PASS $series mbochs_build: mbochs.ko (samples/vfio-mdev) built from linux-source-$series against linux-headers-$kver ($(cat "$dir/mbochs.secs") s; the source extracted with netdevsim's)"
        pass=$((pass + 1))
      else
        log "FAIL $series mbochs_build: mbochs does not build from $tarball against $kver:"
        tail -n 30 "$dir/mbochs/build.log" | sed 's/^/vm:   /'
        fail=$((fail + 1))
      fi
    fi
    rm -rf "$dir/test-src"
  fi

  # What the guest must find: PRE_COPY from 6.2 on; DMA_LOGGING_REPORT needs
  # the IOVA-bitmap helpers, in vfio.ko before 6.7 and built only with
  # CONFIG_IOMMUFD_DRIVER after (Debian's 6.12 has it off).
  IFS=. read -r kmaj kmin _ <<<"${kver%%-*}"
  kcode=$((kmaj * 1000 + kmin))
  precopy=no
  ((kcode >= 6002)) && precopy=yes
  dma_report=yes
  if ((kcode >= 6007)) && ! grep -q '^CONFIG_IOMMUFD_DRIVER=y' "$root/boot/config-$kver"; then
    dma_report=no
  fi
  conf="$dir/vmtest.conf"
  cat >"$conf" <<EOF
SERIES=$series
PRECOPY=$precopy
DMA_REPORT=$dma_report
AGENTS=$agents
MEM_KIB=$mem_kib
TLS_VALID_FROM=$tls_valid_from
MLX5=$([[ -n "$mlx5_ko" ]] && echo yes || echo no)
NETDEVSIM=$([[ -n "$nsim_ko" ]] && echo yes || echo no)
MBOCHS=$([[ -n "$mbochs_ko" ]] && echo yes || echo no)
EOF
  if ! build_initramfs "$kver" "$root" "$dir/module/edu_vfio_pci.ko" "$dir/initrd.gz" "$conf" \
    "$mlx5_ko" "$nsim_ko" "$mbochs_ko"; then
    log "FAIL $series initramfs: could not build it"
    fail=$((fail + 1))
    echo "$pass $fail 0" >"$dir/prepared"
    return
  fi
  log "initramfs $(du -h "$dir/initrd.gz" | cut -f1) ($(stat -c %s "$dir/initrd.gz") bytes)"
  echo "$pass $fail 1" >"$dir/prepared"
}

total_pass=0
total_fail=0
kernels_run=0
started=$(date +%s)

kernels=()
while read -r series kver pkgver; do
  [[ -n "$series" ]] || continue
  if [[ -n "${MIGD_VM_SERIES:-}" && " $MIGD_VM_SERIES " != *" $series "* ]]; then
    continue
  fi
  kernels+=("$series $kver $pkgver")
done <"$cache/kernels.list"

# The next kernel is prepared while this one boots: QEMU (software
# emulation, one vCPU) takes one core, the build the other, at the lowest
# priority (nice 19), so that it takes as little as it can from the guest.
# Its log is shown when its turn comes; its build times are longer than a
# build's alone.
prep_pid=""
prepare_next() {
  local s k v
  read -r s k v <<<"${kernels[$1]}"
  mkdir -p "$work/$k"
  (
    renice -n 19 -p "$BASHPID" >/dev/null 2>&1
    prepare_kernel "$s" "$k" "$v"
  ) >"$work/$k/prepare.log" 2>&1 &
  prep_pid=$!
}

for ((i = 0; i < ${#kernels[@]}; i++)); do
  read -r series kver pkgver <<<"${kernels[i]}"
  kernels_run=$((kernels_run + 1))
  root="$cache/kernels/$kver"
  dir="$work/$kver"
  if ((i == 0)); then
    prepare_kernel "$series" "$kver" "$pkgver"
  else
    wait "$prep_pid"
    cat "$dir/prepare.log"
  fi
  if ! { read -r p f ready <"$dir/prepared"; } 2>/dev/null; then
    log "FAIL $series prepare: building for $kver ended without a result"
    p=0 f=1 ready=0
  fi
  total_pass=$((total_pass + p))
  total_fail=$((total_fail + f))
  if ((i + 1 < ${#kernels[@]})); then
    prepare_next $((i + 1))
  fi
  ((ready)) || continue

  serial=""
  for attempt in 1 2 3; do
    serial="$outdir/serial-$series-$attempt.log"
    rm -f "$serial"
    t0=$(date +%s)
    rc=$(boot "$root/boot/vmlinuz-$kver" "$dir/initrd.gz" "$serial")
    secs=$(($(date +%s) - t0))
    if grep -q '^== INIT START' "$serial" 2>/dev/null; then
      log "boot $attempt: $secs s (qemu exit $rc)"
      break
    fi
    # Never reached /init: an early-boot flake (panic, hang). Retry.
    log "boot $attempt: guest did not reach /init in $secs s (qemu exit $rc); last console lines:"
    tail -n 15 "$serial" 2>/dev/null | sed 's/^/vm:   /'
    serial=""
  done
  if [[ -z "$serial" ]]; then
    log "FAIL $series boot: the guest never reached /init in 3 boots"
    total_fail=$((total_fail + 1))
    continue
  fi

  tr -d '\r' <"$serial" >"$serial.txt"
  p=$(grep -c '^PASS ' "$serial.txt")
  f=$(grep -c '^FAIL ' "$serial.txt")
  while IFS= read -r line; do
    case "$line" in
      PASS\ * | FAIL\ * | SKIP\ *) log "${line%% *} $series ${line#* }" ;;
      "  "*) log "  $line" ;;
    esac
  done <"$serial.txt"
  if ! grep -q '^VMTEST DONE' "$serial.txt"; then
    log "FAIL $series guest: the guest test did not finish (crash or timeout, qemu exit $rc)"
    if [[ -s "$serial.qemu" ]]; then
      log "QEMU said:"
      head -n 5 "$serial.qemu" | sed 's/^/vm:   /'
    fi
    f=$((f + 1))
  fi
  if ((f > 0)); then
    log "console log of $series:"
    sed 's/^/vm: | /' "$serial.txt"
  fi
  if ((p == 0 && f == 0)); then
    log "FAIL $series guest: no check ran"
    f=1
  fi
  total_pass=$((total_pass + p))
  total_fail=$((total_fail + f))
  log "Linux $series: $p passed, $f failed ($secs s boot to poweroff)"
done

if ((kernels_run == 0)); then
  log "FAIL setup: no kernel selected from $cache/kernels.list"
  total_fail=$((total_fail + 1))
fi
log "VM tier: $kernels_run kernels in $(($(date +%s) - started)) s"
echo "${total_pass} passed, ${total_fail} failed"
((total_fail == 0))
