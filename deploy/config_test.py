#!/usr/bin/env python3
"""deploy/migd.conf against the built agent.

Every flag the file sets is a flag of //migd:migd and none is for tests only;
every production flag is in it, at the agent's default unless the file is
meant to change it; the agent started with the file (TLS, state, devices
pointed at a test directory on the command line) serves the control API and
/metrics; and Abseil stops the agent at a flag it does not know, or a value
with a comment after it.

Usage: config_test.py MIGD MIGCTL MIGD_CONF PKI
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flags  # noqa: E402

MIGD = MIGCTL = CONF = PKI = ""

# What the production file sets away from the agent's defaults.
PRODUCTION = {
    "tls_cert": "/etc/migd/tls/agent.pem",
    "tls_key": "/etc/migd/tls/agent.key",
    "tls_ca": "/etc/migd/tls/ca.pem",
    "tls_policy": "/etc/migd/policy.conf",
    "state_dir": "/var/lib/migd",
    "plugin_dir": "/usr/lib/migd/plugins",
    "devices_config": "/etc/migd/devices.conf",
    "metrics_listen": "127.0.0.1:9464",
}


def read(path):
    with open(path) as f:
        return f.read()


def tmpdir():
    return tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))


def set_flags(text):
    """[(name, value)] of the flags a flag file sets."""
    bools = flags.bool_flags(flags.agent_flags(MIGD))
    return [flags.parse_flag(line, bools) for line in flags.flag_file(text)]


def wait_for_file(path, process, log, timeout=60):
    """The contents of `path` once it exists; fails if `process` exits."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if process.poll() is not None:
            raise AssertionError(f"migd exited {process.returncode}:\n"
                                 + read(log))
        if time.monotonic() > deadline:
            raise AssertionError(f"no {path} after {timeout}s:\n"
                                 + read(log))
        time.sleep(0.05)
    return read(path).strip()


class ConfigFileTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.text = read(CONF)
        cls.agent = flags.agent_flags(MIGD)
        cls.set = set_flags(cls.text)

    def test_every_flag_it_sets_is_a_flag_of_the_agent(self):
        for name, _ in self.set:
            self.assertTrue(name in self.agent,
                            f"--{name} is not a flag of {MIGD}")
            self.assertNotIn(name, flags.TEST_ONLY,
                             f"--{name} is for tests only")
            self.assertNotIn(name, flags.ABSEIL)

    def test_sets_each_flag_once(self):
        names = [name for name, _ in self.set]
        self.assertEqual(len(names), len(set(names)), names)

    def test_has_every_production_flag(self):
        mentioned = set(re.findall(r"^\s*#?\s*--([a-z0-9_]+)=", self.text,
                                   re.M))
        production = set(self.agent) - flags.TEST_ONLY - flags.ABSEIL
        self.assertEqual(production - mentioned, set(),
                         "production flags missing from the file (add them, "
                         "or to flags.TEST_ONLY if they are for tests)")

    def test_listen_stays_the_default_with_the_remote_address_commented(self):
        self.assertNotIn("listen", dict(self.set))
        self.assertRegex(self.text, r"(?m)^#--listen=0\.0\.0\.0:7070$")

    def test_production_values_and_defaults(self):
        values = dict(self.set)
        for name, value in values.items():
            want = PRODUCTION.get(name, self.agent.get(name))
            self.assertEqual(value, want,
                             f"--{name}: the file says {value!r}, expected "
                             f"{want!r} (the agent's default unless "
                             "PRODUCTION says otherwise)")
        self.assertEqual(set(PRODUCTION) - set(values), set())


class AgentWithConfigFileTest(unittest.TestCase):
    """migd --flagfile=deploy/migd.conf, with test paths on the command line."""

    def test_agent_serves_with_the_file(self):
        work = tmpdir()
        subprocess.run([PKI, f"{work}/pki"], check=True,
                       stdout=subprocess.DEVNULL)
        with open(f"{work}/devices.conf", "w") as f:
            f.write("emulated emu0 size=64KiB\n")
        os.mkdir(f"{work}/state")
        pki = f"{work}/pki"
        log = f"{work}/migd.log"
        args = [
            MIGD, f"--flagfile={CONF}",
            # After the file: these win.
            f"--tls_cert={pki}/agent-a.pem", f"--tls_key={pki}/agent-a.key",
            f"--tls_ca={pki}/ca.pem", f"--tls_policy={pki}/policy.conf",
            f"--state_dir={work}/state", f"--devices_config={work}/devices.conf",
            "--plugin_dir=", "--listen=127.0.0.1:0",
            "--metrics_listen=127.0.0.1:0",
            f"--port_file={work}/port", f"--metrics_port_file={work}/mport",
        ]
        with open(log, "w") as out:
            agent = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            port = wait_for_file(f"{work}/port", agent, log)
            mport = wait_for_file(f"{work}/mport", agent, log)
            devices = subprocess.run(
                [MIGCTL, f"--agent=127.0.0.1:{port}",
                 f"--tls_cert={pki}/operator.pem",
                 f"--tls_key={pki}/operator.key", f"--tls_ca={pki}/ca.pem",
                 "devices"], capture_output=True, text=True, timeout=60)
            self.assertEqual(devices.returncode, 0, devices.stderr)
            self.assertIn("emu0", devices.stdout)
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{mport}/metrics", timeout=30) as r:
                metrics = r.read().decode()
            self.assertIn('migd_devices{state="running"} 1', metrics)
        finally:
            agent.send_signal(signal.SIGTERM)
            code = agent.wait(timeout=60)
        self.assertEqual(code, 0, read(log))


class BrokenConfigFileTest(unittest.TestCase):
    """What Abseil does with a flag file it cannot take: the agent stops."""

    def run_with(self, extra_line):
        work = tmpdir()
        path = f"{work}/migd.conf"
        with open(path, "w") as f:
            f.write(read(CONF) + extra_line + "\n")
        return subprocess.run([MIGD, f"--flagfile={path}"],
                              capture_output=True, text=True, timeout=60)

    def test_unknown_flag_stops_the_agent(self):
        run = self.run_with("--no_such_flag=1")
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("Unknown command line flag 'no_such_flag'", run.stderr)

    def test_comment_after_a_value_is_part_of_the_value(self):
        run = self.run_with("--phase_timeout_seconds=60 # one minute")
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("phase_timeout_seconds", run.stderr)
        self.assertIn("60 # one minute", run.stderr)


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    MIGD, MIGCTL, CONF, PKI = (os.path.abspath(a) for a in sys.argv[1:5])
    unittest.main(argv=sys.argv[:1], verbosity=2)
