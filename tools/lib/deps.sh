# shellcheck shell=bash
# Debian 12 packages the build, the tests and the demo need. Sourced by
# tools/test and tools/demo; call migd_install_deps.
#
# Installs only what is missing: `apt-get update` once, then one
# `apt-get install` of the missing packages. Needs root (or sudo) only when
# something is missing.

MIGD_DEBIAN_PACKAGES=(
  bazel-bootstrap
  pkg-config
  libgrpc++-dev
  protobuf-compiler-grpc
  libprotobuf-dev
  protobuf-compiler
  libabsl-dev
  libgtest-dev
  libgmock-dev
  # mTLS: certificate and key checks (libssl-dev), the development PKI
  # (tools/pki, openssl).
  libssl-dev
  openssl
  libsqlite3-dev
  libvirt-dev
  # A real libvirtd calling the libvirt hook (e2e/libvirt): the daemon and
  # its QEMU driver only, which install no service.
  libvirt-daemon
  libvirt-daemon-driver-qemu
  # devlink over generic netlink (vendor-plugins/mlx5).
  libmnl-dev
  python3
  # The VM tier (e2e/vm, tools/vm): QEMU, the guest's busybox initramfs,
  # module builds against Debian's kernel headers.
  qemu-system-x86
  busybox-static
  cpio
  kmod
  xz-utils
  zstd
  gcc
  make
  libelf1
  # The fault tier (e2e/faults): veth pairs and tbf (iproute2), packet drops
  # (nftables), agents in network namespaces (nsenter, from util-linux).
  iproute2
  nftables
  util-linux
  # Metrics (migd/metrics): prometheus-cpp's registry and exposer.
  prometheus-cpp-dev
  # The Debian package (tools/package, //deploy:package_test): its Depends
  # from dpkg-shlibdeps (which brings binutils' readelf and objdump).
  dpkg-dev
  # //deploy:kubernetes_test parses the DaemonSet's YAML.
  python3-yaml
)

# Prints the packages of MIGD_DEBIAN_PACKAGES that are not installed, one a line.
migd_missing_packages() {
  local pkg status
  for pkg in "${MIGD_DEBIAN_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "installed" ]]; then
      echo "$pkg"
    fi
  done
}

migd_install_deps() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps: dpkg-query not found; this needs Debian 12 (bookworm)." >&2
    return 1
  fi
  local missing
  mapfile -t missing < <(migd_missing_packages)
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  local -a sudo=()
  if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "deps: missing Debian packages: ${missing[*]}" >&2
      echo "deps: run as root, or install them: apt-get install ${missing[*]}" >&2
      return 1
    fi
  fi
  echo "deps: installing missing Debian packages: ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq || {
    echo "deps: apt-get update failed" >&2
    return 1
  }
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq "${missing[@]}" >&2 || {
    echo "deps: apt-get install ${missing[*]} failed" >&2
    return 1
  }
}

# The Prometheus server the metrics test scrapes the agents with. Not
# installed as a package (that would start a system service on :9090): the
# package is downloaded and unpacked into a cache (its server is one static
# binary), and MIGD_PROMETHEUS is set to it. A prometheus already installed
# is used as it is.
migd_fetch_prometheus() {
  if [[ -n "${MIGD_PROMETHEUS:-}" && -x "$MIGD_PROMETHEUS" ]]; then
    return 0
  fi
  if command -v prometheus >/dev/null 2>&1; then
    MIGD_PROMETHEUS="$(command -v prometheus)"
    export MIGD_PROMETHEUS
    return 0
  fi
  local cache="${MIGD_CACHE:-/var/cache/migd-test}/prometheus"
  if [[ ! -x "$cache/usr/bin/prometheus" ]]; then
    local -a sudo=()
    [[ $EUID -ne 0 ]] && command -v sudo >/dev/null 2>&1 && sudo=(sudo)
    echo "deps: fetching prometheus into $cache" >&2
    "${sudo[@]}" mkdir -p "$cache/debs" || return 1
    (cd "$cache/debs" && "${sudo[@]}" apt-get download -q \
      -o APT::Sandbox::User=root prometheus >&2) ||
      { "${sudo[@]}" apt-get update -qq && (cd "$cache/debs" &&
        "${sudo[@]}" apt-get download -q -o APT::Sandbox::User=root \
          prometheus >&2); } || {
      echo "deps: apt-get download prometheus failed" >&2
      return 1
    }
    local deb
    deb="$(ls -t "$cache"/debs/prometheus_*.deb | head -n1)"
    "${sudo[@]}" dpkg -x "$deb" "$cache" || return 1
    "${sudo[@]}" rm -f "$cache"/debs/prometheus_*.deb
  fi
  MIGD_PROMETHEUS="$cache/usr/bin/prometheus"
  export MIGD_PROMETHEUS
}
