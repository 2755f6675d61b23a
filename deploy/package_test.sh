#!/usr/bin/env bash
# tools/package, run on the binaries and plugins this build made
# (--binaries-from, no nested Bazel): the .deb holds every file an operator
# needs and nothing else, its control fields and conffile are right, its
# Depends: name the packages that hold the libraries the binaries load, at
# versions this Debian has; it installs into a throwaway root (dpkg --root,
# maintainer scripts run outside the root, told so by $DPKG_ROOT), and the
# installed migd and migctl run: the agent loads every packaged plugin, with
# the packaged flag file. A local change to the conffile survives a
# reinstall, and a purge removes it.
#
# Usage: package_test.sh PACKAGE_SCRIPT MIGD MIGCTL MIGD_DEVLINK HOOK PLUGIN.so...
set -euo pipefail

package="$1"
migd="$2"
migctl="$3"
devlink="$4"
hook="$5"
shift 5
plugins=("$@")

tmp="${TEST_TMPDIR:-$(mktemp -d)}"
# dpkg wants ldconfig and start-stop-daemon on PATH (Bazel's has no sbin).
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
failures=0

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# The binaries as tools/package --binaries-from wants them.
bin="$tmp/bin"
mkdir -p "$bin/plugins"
cp "$migd" "$bin/migd"
cp "$migctl" "$bin/migctl"
cp "$devlink" "$bin/migd-devlink"
cp "$hook" "$bin/migd-libvirt-hook"
for so in "${plugins[@]}"; do
  cp "$so" "$bin/plugins/"
done

# ---- Build
start=$SECONDS
deb="$("$package" --binaries-from="$bin" --out="$tmp/out" \
  --version=0.1.0~test1)"
echo "package: $deb, $(stat -c %s "$deb") bytes, $((SECONDS - start)) s"
[[ -f "$deb" ]] || {
  fail "tools/package printed $deb, which does not exist"
  exit 1
}
[[ "$(basename "$deb")" == "migd_0.1.0~test1_$(dpkg --print-architecture).deb" ]] ||
  fail "package name $(basename "$deb")"

# ---- Contents: exactly these files (directories aside).
want=(
  ./etc/libvirt/hooks/qemu.d/migd
  ./etc/migd/libvirt-hook.conf
  ./etc/migd/migd.conf
  ./lib/systemd/system/migd.service
  ./usr/bin/migctl
  ./usr/bin/migd
  ./usr/bin/migd-devlink
  ./usr/lib/migd/migd-libvirt-hook
  ./usr/lib/modules-load.d/migd.conf
  ./usr/share/doc/migd/README.md
  ./usr/share/doc/migd/copyright
  ./usr/share/doc/migd/libvirt.md
  ./usr/share/doc/migd/operations.md
  ./usr/share/migd/grafana/migd.json
  ./usr/share/migd/kubernetes/migd-daemonset.yaml
)
for so in "${plugins[@]}"; do
  want+=("./usr/lib/migd/plugins/$(basename "$so")")
done
listing="$(dpkg-deb -c "$deb")"
diff <(printf '%s\n' "${want[@]}" | LC_ALL=C sort) \
  <(awk '$1 !~ /^d/ { print $6 }' <<<"$listing" | LC_ALL=C sort) ||
  fail "dpkg-deb -c lists other files than expected (< expected, > packaged)"
grep -qE '^drwx------ root/root .* \./etc/migd/tls/$' <<<"$listing" ||
  fail "no /etc/migd/tls/ of mode 0700, owned by root"
if grep -vE ' root/root ' <<<"$listing"; then
  fail "files not owned by root/root"
fi
grep -qE '^-rwxr-xr-x .* \./usr/bin/migd$' <<<"$listing" ||
  fail "/usr/bin/migd is not 0755"
# libvirt runs every executable of qemu.d: the hook is a link to the binary.
grep -qE '^lrwxrwxrwx .* \./etc/libvirt/hooks/qemu\.d/migd -> /usr/lib/migd/migd-libvirt-hook$' \
  <<<"$listing" || fail "/etc/libvirt/hooks/qemu.d/migd is not a link to the hook"

# ---- Control fields, conffile, scripts
field() { dpkg-deb -f "$deb" "$1"; }
[[ "$(field Package)" == migd ]] || fail "Package: $(field Package)"
[[ "$(field Version)" == 0.1.0~test1 ]] || fail "Version: $(field Version)"
[[ "$(field Architecture)" == "$(dpkg --print-architecture)" ]] ||
  fail "Architecture: $(field Architecture)"
for f in Maintainer Installed-Size Description Depends; do
  [[ -n "$(field "$f")" ]] || fail "no $f:"
done
control="$tmp/control"
mkdir -p "$control"
dpkg-deb -e "$deb" "$control"
[[ "$(cat "$control/conffiles")" == "/etc/migd/migd.conf
/etc/migd/libvirt-hook.conf" ]] ||
  fail "conffiles: $(cat "$control/conffiles")"
for script in postinst prerm postrm; do
  [[ -x "$control/$script" ]] || fail "no executable DEBIAN/$script"
  grep -q 'DPKG_ROOT' "$control/$script" ||
    fail "$script does not guard systemctl with \$DPKG_ROOT"
  if grep -qE '^[[:space:]]*systemctl .*(enable|start|restart)' "$control/$script"; then
    fail "$script enables or starts the service"
  fi
done

# Depends: every package satisfiable here, and every library the binaries
# and plugins load comes from one of them.
depends="$(field Depends)"
declare -A depended=()
IFS=',' read -ra deps <<<"$depends"
for dep in "${deps[@]}"; do
  dep="${dep# }"
  name="${dep%% *}"
  depended["$name"]=1
  have="$(dpkg-query -W -f='${Version}' "$name" 2>/dev/null || true)"
  if [[ -z "$have" ]]; then
    fail "Depends: $dep, which this Debian has not installed"
    continue
  fi
  if [[ "$dep" =~ \((\>=|\>\>|=)\ ([^\)]+)\) ]]; then
    op="${BASH_REMATCH[1]}"
    case "$op" in '>=') op=ge ;; '>>') op=gt ;; '=') op=eq ;; esac
    dpkg --compare-versions "$have" "$op" "${BASH_REMATCH[2]}" ||
      fail "Depends: $dep, installed $have"
  fi
done
# The libraries the binaries and plugins name (ELF NEEDED; what those load
# in turn is their packages' business), where this host has them, and the
# package of each: dpkg knows a file by one of its names, with or without
# /usr (merged /usr), the link's or the file's.
declare -A needed=()
for elf in "$migd" "$migctl" "$devlink" "$hook" "${plugins[@]}"; do
  declare -A found=()
  while read -r soname path; do
    found["$soname"]="$path"
  done < <(ldd "$elf" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }')
  while read -r soname; do
    [[ -n "${found[$soname]:-}" ]] || {
      fail "$(basename "$elf") needs $soname, which ldd does not find"
      continue
    }
    needed["$soname"]="${found[$soname]}"
  done < <(readelf -d "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  unset found
done
candidates=()
for path in "${needed[@]}"; do
  real="$(readlink -f "$path")"
  candidates+=("$path" "$real" "${path#/usr}" "${real#/usr}" "/usr$path" "/usr$real")
done
declare -A owner=()
while IFS= read -r line; do
  owner["${line#*: }"]="${line%%:*}"
done < <(dpkg -S "${candidates[@]}" 2>/dev/null || true)
for soname in "${!needed[@]}"; do
  path="${needed[$soname]}"
  real="$(readlink -f "$path")"
  pkg=""
  for p in "$path" "$real" "${path#/usr}" "${real#/usr}" "/usr$path" "/usr$real"; do
    [[ -n "${owner[$p]:-}" ]] && pkg="${owner[$p]}" && break
  done
  [[ -n "$pkg" && -n "${depended[$pkg]:-}" ]] ||
    fail "$soname ($path, package ${pkg:-none}) is not from a package in Depends"
done
echo "Depends: ${#deps[@]} packages, for ${#needed[@]} libraries the binaries name"

# ---- Install into a throwaway root. The maintainer scripts run outside it
# (there is no shell inside), with $DPKG_ROOT set, so they leave this
# host's systemd alone.
root="$tmp/root"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" \
  "$root/var/lib/dpkg/triggers"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
dpkgr() {
  dpkg --root="$root" --force-not-root --force-depends \
    --force-script-chrootless "$@"
}
dpkgr -i "$deb" >"$tmp/dpkg.log" 2>&1 || {
  cat "$tmp/dpkg.log" >&2
  fail "dpkg -i into $root failed"
  exit 1
}
dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Status}' migd |
  grep -qx 'install ok installed' || fail "migd not installed in $root"
cmp -s "$root/etc/migd/migd.conf" "$(dirname "$package")/../deploy/migd.conf" ||
  fail "installed /etc/migd/migd.conf differs from deploy/migd.conf"

# ---- The installed binaries run.
"$root/usr/bin/migd" --version >"$tmp/version" 2>&1 || true
grep -q '^migd' "$tmp/version" || fail "migd --version: $(cat "$tmp/version")"
"$root/usr/bin/migd" --helpfull >"$tmp/helpfull" 2>&1 || true
for flag in --flagfile --tls_cert --plugin_dir; do
  grep -q -- "$flag " "$tmp/helpfull" || fail "migd --helpfull lists no $flag"
done
"$root/usr/bin/migctl" --help >"$tmp/migctl-help" 2>&1 ||
  fail "migctl --help exited $?"
grep -q '^usage: migctl' "$tmp/migctl-help" || fail "migctl --help: no usage"
# The hook libvirt finds (an absolute link, so run it at its target inside
# the root), reading the packaged configuration (every line a flag it
# knows, else it stops before the usage) and without its arguments: usage,
# exit 2.
[[ "$(readlink "$root/etc/libvirt/hooks/qemu.d/migd")" == /usr/lib/migd/migd-libvirt-hook ]] ||
  fail "installed qemu.d/migd links to $(readlink "$root/etc/libvirt/hooks/qemu.d/migd")"
rc=0
MIGD_HOOK_CONFIG="$root/etc/migd/libvirt-hook.conf" \
  "$root/usr/lib/migd/migd-libvirt-hook" </dev/null >"$tmp/hook-usage" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q 'usage: migd-libvirt-hook' "$tmp/hook-usage" ||
  fail "the installed hook without arguments exited $rc: $(cat "$tmp/hook-usage")"
# migd-devlink without arguments: its usage, exit 2 (it runs: libmnl found).
rc=0
"$root/usr/bin/migd-devlink" >"$tmp/devlink-usage" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q 'set-migratable' "$tmp/devlink-usage" ||
  fail "migd-devlink without arguments exited $rc: $(cat "$tmp/devlink-usage")"

# The installed agent with the installed flag file (its paths moved into the
# test's directory, plaintext to need no certificates), its plugins from the
# installed plugin directory: each one loads.
mkdir -p "$tmp/state"
echo "emulated emu0 size=64KiB" >"$tmp/devices.conf"
"$root/usr/bin/migd" --flagfile="$root/etc/migd/migd.conf" --insecure \
  --plugin_dir="$root/usr/lib/migd/plugins" --state_dir="$tmp/state" \
  --devices_config="$tmp/devices.conf" --listen=127.0.0.1:0 \
  --metrics_listen=127.0.0.1:0 --port_file="$tmp/port" >"$tmp/migd.log" 2>&1 &
agent=$!
deadline=$((SECONDS + 60))
while [[ ! -s "$tmp/port" ]] && kill -0 "$agent" 2>/dev/null && ((SECONDS < deadline)); do
  sleep 0.1
done
if [[ -s "$tmp/port" ]]; then
  "$root/usr/bin/migctl" --insecure --agent="127.0.0.1:$(cat "$tmp/port")" \
    plugins >"$tmp/plugins" 2>&1 || fail "migctl plugins: $(cat "$tmp/plugins")"
  for so in "${plugins[@]}"; do
    name="$(basename "$so" .so)"
    grep -qE "^ *${name}\b" "$tmp/plugins" ||
      fail "the installed agent did not load plugin $name:
$(cat "$tmp/plugins")"
  done
else
  fail "the installed agent did not start: $(cat "$tmp/migd.log")"
fi
kill -TERM "$agent" 2>/dev/null || true
wait "$agent" || fail "the installed agent exited $? on SIGTERM"

# ---- The conffile is the operator's: kept over a reinstall, gone on purge.
echo "--name=edited" >>"$root/etc/migd/migd.conf"
dpkgr --force-confold -i "$deb" >>"$tmp/dpkg.log" 2>&1 || fail "reinstall failed"
grep -qx -- '--name=edited' "$root/etc/migd/migd.conf" ||
  fail "reinstall replaced the edited conffile"
dpkgr -r migd >>"$tmp/dpkg.log" 2>&1 || fail "dpkg -r failed"
[[ ! -e "$root/usr/bin/migd" && -e "$root/etc/migd/migd.conf" ]] ||
  fail "remove: binaries should go, the conffile stay"
dpkgr -P migd >>"$tmp/dpkg.log" 2>&1 || fail "dpkg -P failed"
[[ ! -e "$root/etc/migd/migd.conf" ]] || fail "purge left the conffile"

if ((failures > 0)); then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "PASS: $(basename "$deb")"
