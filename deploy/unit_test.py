#!/usr/bin/env python3
"""deploy/migd.service: the settings it must have, and systemd's own check.

The unit is read as systemd reads it (sections, keys that may repeat) and
must hold the start command, the restart policy and the sandbox that still
lets the agent open VFIO devices, write PCI sysfs attributes and its journal;
it must not hold the settings that would stop that. Where systemd-analyze is
installed (Debian package systemd; it need not run as init), `verify` must
accept the unit without a word, with ExecStart pointed at the built agent,
and `security --offline` must rate its exposure no worse than it does now.

Usage: unit_test.py MIGD UNIT MODULES_LOAD
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

MIGD = UNIT = MODULES_LOAD = ""

# systemd-analyze security's exposure (0 safest .. 10): 6.4 today. Above
# this, hardening was lost.
MAX_EXPOSURE = 6.5


def read(path):
    with open(path) as f:
        return f.read()


def parse_unit(text):
    """{section: [(key, value)]}, keys in order, repeats kept."""
    sections = {}
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        if current is None or "=" not in line:
            raise ValueError(f"line {number}: {raw!r}")
        key, value = line.split("=", 1)
        current.append((key.strip(), value.strip()))
    return sections


def values(section, key):
    return [v for k, v in section if k == key]


def one(section, key):
    found = values(section, key)
    if len(found) != 1:
        raise AssertionError(f"{key}= appears {len(found)} times")
    return found[0]


class UnitSettingsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.unit = parse_unit(read(UNIT))
        cls.service = cls.unit["Service"]

    def test_starts_the_agent_with_the_packaged_flag_file(self):
        self.assertEqual(one(self.service, "Type"), "simple")
        self.assertEqual(one(self.service, "ExecStart"),
                         "/usr/bin/migd --flagfile=/etc/migd/migd.conf")
        self.assertEqual(one(self.service, "Restart"), "on-failure")
        self.assertEqual(values(self.unit["Install"], "WantedBy"),
                         ["multi-user.target"])

    def test_does_not_claim_sd_notify(self):
        # The agent never calls sd_notify.
        self.assertEqual(values(self.service, "NotifyAccess"), [])
        self.assertNotIn("notify", values(self.service, "Type"))

    def test_writes_only_its_state_and_pci_sysfs(self):
        s = self.service
        self.assertEqual(one(s, "ProtectSystem"), "strict")
        self.assertEqual(one(s, "StateDirectory"), "migd")
        self.assertEqual(one(s, "ConfigurationDirectory"), "migd")
        rw = " ".join(values(s, "ReadWritePaths")).split()
        self.assertIn("/sys/bus/pci", rw)
        self.assertIn("/sys/devices", rw)
        self.assertEqual(one(s, "ProtectHome"), "yes")
        self.assertEqual(one(s, "PrivateTmp"), "yes")

    def test_keeps_off_what_would_stop_vfio_sysfs_and_modprobe(self):
        for key in ("ProtectKernelTunables", "ProtectKernelModules",
                    "PrivateDevices", "PrivateNetwork", "DynamicUser"):
            for value in values(self.service, key):
                self.assertIn(value, ("no", "false"), f"{key}={value}")

    def test_allows_the_vfio_devices_and_nothing_else(self):
        s = self.service
        self.assertEqual(one(s, "DevicePolicy"), "closed")
        allowed = values(s, "DeviceAllow")
        for device in ("/dev/vfio/vfio rw", "char-vfio rw"):
            self.assertIn(device, allowed)
        for device in allowed:
            self.assertRegex(device, r"vfio|iommu", device)

    def test_process_hardening(self):
        s = self.service
        self.assertEqual(one(s, "NoNewPrivileges"), "yes")
        self.assertEqual(set(one(s, "RestrictAddressFamilies").split()),
                         {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"})
        self.assertEqual(one(s, "SystemCallArchitectures"), "native")
        self.assertEqual(one(s, "LockPersonality"), "yes")
        self.assertEqual(one(s, "RestrictRealtime"), "yes")

    def test_vfio_is_loaded_before_the_device_rules_are_made(self):
        # DeviceAllow=char-vfio finds the major in /proc/devices when the
        # service starts.
        self.assertIn("systemd-modules-load.service",
                      " ".join(values(self.unit["Unit"], "After")).split())
        modules = [line.strip() for line in read(MODULES_LOAD).splitlines()
                   if line.strip() and not line.startswith("#")]
        self.assertIn("vfio", modules)


@unittest.skipIf(shutil.which("systemd-analyze") is None,
                 "no systemd-analyze (Debian package systemd): the unit was "
                 "checked as an INI file only")
class SystemdAnalyzeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        # The same unit, its ExecStart at the built agent (verify checks that
        # the command exists and is executable).
        cls.dir = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
        cls.path = os.path.join(cls.dir, "migd.service")
        text = read(UNIT)
        if "ExecStart=/usr/bin/migd " not in text:
            raise AssertionError("no ExecStart=/usr/bin/migd in the unit")
        with open(cls.path, "w") as f:
            f.write(text.replace("ExecStart=/usr/bin/migd ",
                                 f"ExecStart={MIGD} "))

    def test_verify_says_nothing(self):
        run = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", self.path],
            capture_output=True, text=True, timeout=120)
        # Unknown keys and bad values are warnings with exit status 0: any
        # word about the unit is a failure.
        said = [line for line in (run.stdout + run.stderr).splitlines()
                if "migd" in line]
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertFalse(said, "systemd-analyze verify:\n" + "\n".join(said))

    def test_security_exposure(self):
        run = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", "--no-pager",
             self.path], capture_output=True, text=True, timeout=120)
        m = re.search(r"Overall exposure level for migd\.service: ([0-9.]+)",
                      run.stdout + run.stderr)
        if m is None:
            self.skipTest("systemd-analyze security --offline unsupported: "
                          + run.stderr[-300:])
        print(f"systemd-analyze security: exposure {m.group(1)}",
              file=sys.stderr)
        self.assertLessEqual(float(m.group(1)), MAX_EXPOSURE)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    MIGD, UNIT, MODULES_LOAD = (os.path.abspath(a) for a in sys.argv[1:4])
    unittest.main(argv=sys.argv[:1], verbosity=2)
