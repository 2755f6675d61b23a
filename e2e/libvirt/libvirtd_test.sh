#!/usr/bin/env bash
# A real libvirtd calls migd's hook through a domain's lifecycle.
#
# Debian's libvirtd (libvirt-daemon, libvirt-daemon-driver-qemu: no service
# is installed with them) runs as a session daemon of user `nobody`, in a
# private mount namespace whose /etc is an overlay: there, and only there,
# /etc/libvirt/hooks/qemu.d/migd is the hook binary and
# /etc/migd/libvirt-hook.conf points it at a migd agent on 127.0.0.1. The
# machine's own /etc is not touched. A QEMU domain (TCG, no disk) is defined,
# started and destroyed through the libvirt API; the hook's log must show
# the calls libvirtd made (prepare begin, start begin, started begin,
# stopped end, release end), each as the hook saw it, and the release it
# asked the agent for must have succeeded (no refusal in the log).
#
# Usage: libvirtd_test.sh MIGD HOOK LIFECYCLE
#   LIFECYCLE: e2e/libvirt:domain_lifecycle (defines, starts, destroys)
# Needs root (mount namespace, setpriv), libvirtd, qemu-system-x86_64 and
# overlayfs; tools/test installs the packages.
set -uo pipefail

migd="$1"
hook="$2"
lifecycle="$3"

fail() {
  echo "FAIL: $*"
  echo "0 passed, 1 failed"
  exit 1
}
for tool in unshare setpriv /usr/sbin/libvirtd qemu-system-x86_64; do
  command -v "$tool" >/dev/null || fail "$tool not found (tools/lib/deps.sh installs it)"
done
[[ $EUID -eq 0 ]] || fail "needs root (a mount namespace for its own /etc)"

# Everything user nobody reads lives under /tmp: Bazel's dirs are root's.
work="$(mktemp -d /tmp/migd-libvirtd.XXXXXX)"
trap 'kill "$agent_pid" 2>/dev/null; rm -rf "$work"' EXIT
chmod 755 "$work"
mkdir -p "$work"/{bin,up/libvirt/hooks/qemu.d,up/migd,ovl,home/run,state}
cp "$hook" "$work/bin/migd-libvirt-hook"
cp "$lifecycle" "$work/bin/domain_lifecycle"
chmod 755 "$work/bin"/*
ln -s "$work/bin/migd-libvirt-hook" "$work/up/libvirt/hooks/qemu.d/migd"
chmod -R a+rX "$work/up"
touch "$work/hook.log" && chmod 666 "$work/hook.log"
chown -R nobody "$work/home"
chmod 700 "$work/home/run"

# The agent the hook talks to (plaintext on loopback, for this test).
"$migd" --insecure --listen=127.0.0.1:0 --port_file="$work/port" \
  --state_dir="$work/state" --plugin_dir= --emulated_devices=emu0 \
  >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 1 100); do [[ -s "$work/port" ]] && break; sleep 0.1; done
[[ -s "$work/port" ]] || fail "the agent did not start: $(tail -n 5 "$work/agent.log")"
cat >"$work/up/migd/libvirt-hook.conf" <<CONF
--agent=127.0.0.1:$(cat "$work/port")
--insecure
--log_file=$work/hook.log
--timeout_seconds=20
CONF
chmod a+r "$work/up/migd/libvirt-hook.conf"

cat >"$work/domain.xml" <<'XML'
<domain type='qemu'>
  <name>migd-hook-test</name>
  <uuid>0b0e6f1a-2c3d-4e5f-8a9b-0c1d2e3f4a5b</uuid>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>
XML
chmod a+r "$work/domain.xml"

# In a private mount namespace: /etc overlaid, libvirtd as nobody, the
# domain's lifecycle through the API, libvirtd stopped.
cat >"$work/inside.sh" <<INSIDE
set -u
mount -t overlay overlay -o lowerdir=/etc,upperdir=$work/up,workdir=$work/ovl /etc || exit 3
env_=(HOME=$work/home XDG_CONFIG_HOME=$work/home/.config XDG_RUNTIME_DIR=$work/home/run
      XDG_CACHE_HOME=$work/home/cache XDG_DATA_HOME=$work/home/data)
setpriv --reuid=nobody --regid=nogroup --clear-groups env "\${env_[@]}" \
  /usr/sbin/libvirtd >$work/libvirtd.log 2>&1 &
daemon=\$!
for _ in \$(seq 1 100); do [ -S $work/home/run/libvirt/libvirt-sock ] && break; sleep 0.1; done
setpriv --reuid=nobody --regid=nogroup --clear-groups env "\${env_[@]}" \
  $work/bin/domain_lifecycle $work/domain.xml
rc=\$?
kill \$daemon; wait \$daemon
exit \$rc
INSIDE
unshare -m --propagation private bash "$work/inside.sh" >"$work/lifecycle.out" 2>&1
rc=$?
[[ -e /etc/libvirt/hooks/qemu.d/migd ]] && fail "the hook leaked into the machine's /etc"
if [[ $rc != 0 ]]; then
  echo "lifecycle exited $rc:"; cat "$work/lifecycle.out"
  echo "libvirtd's log:"; tail -n 20 "$work/libvirtd.log"
  fail "the domain's lifecycle did not run"
fi
cat "$work/lifecycle.out"
echo "hook log:"
cat "$work/hook.log"

failures=0
for call in "prepare begin -" "start begin -" "started begin -" "stopped end -" "release end -"; do
  if grep -qx "domain migd-hook-test: $call" "$work/hook.log"; then
    echo "PASS: libvirtd called the hook: $call"
  else
    echo "FAIL: no '$call' call in the hook's log"
    failures=$((failures + 1))
  fi
done
if grep -q "cannot\|refused" "$work/hook.log"; then
  echo "FAIL: the hook refused something"
  failures=$((failures + 1))
fi
echo "$((failures == 0 ? 1 : 0)) passed, $((failures > 0 ? 1 : 0)) failed"
((failures == 0))
