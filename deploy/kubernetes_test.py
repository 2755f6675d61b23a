#!/usr/bin/env python3
"""deploy/kubernetes/migd-daemonset.yaml: parsed, and held to the agent.

Every document parses and is of a kind the file should hold; the agent's
flags (the ConfigMap's flag file and the container's args) are flags of the
built //migd:migd and cover what deploy/migd.conf sets; the files the flags
name are where the volumes put them (the cert-manager Secret's keys, the
ConfigMap's policy, the host's devices and state directory), the plugins are
the image's; the pod is on the host's network, privileged, with the VFIO
devices and sysfs mounted; the ports and probes line up, and the
ServiceMonitor finds the Service's metrics port.

Usage: kubernetes_test.py MIGD DAEMONSET_YAML MIGD_CONF
"""

import ipaddress
import os
import posixpath
import re
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flags  # noqa: E402

MIGD = YAML = CONF = ""
NAMESPACE = "migd-system"


def read(path):
    with open(path) as f:
        return f.read()


def port_of(address):
    return int(address.rsplit(":", 1)[1])


class DaemonSetTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.docs = [d for d in yaml.safe_load_all(read(YAML)) if d is not None]
        cls.by_kind = {}
        for d in cls.docs:
            cls.by_kind.setdefault(d["kind"], []).append(d)
        cls.agent = flags.agent_flags(MIGD)
        cls.bools = flags.bool_flags(cls.agent)
        ds = cls.by_kind["DaemonSet"][0]
        cls.pod = ds["spec"]["template"]["spec"]
        (cls.container,) = cls.pod["containers"]
        cls.mounts = {m["mountPath"]: m for m in cls.container["volumeMounts"]}
        cls.volumes = {v["name"]: v for v in cls.pod["volumes"]}
        cls.configmap = cls.by_kind["ConfigMap"][0]

    # The flags in effect: the flag file the args name, then the args after
    # it (the command line wins).
    def effective_flags(self):
        args = self.container["args"]
        self.assertTrue(args[0].startswith("--flagfile="), args[0])
        flagfile = args[0].split("=", 1)[1]
        volume = self.volume_at(posixpath.dirname(flagfile))
        self.assertIn("configMap", volume)
        text = self.configmap["data"][posixpath.basename(flagfile)]
        lines = flags.flag_file(text) + args[1:]
        return [flags.parse_flag(line, self.bools) for line in lines]

    def volume_at(self, path):
        """The volume mounted at `path` (a mount point, or a file in one)."""
        for mount_path in (path, posixpath.dirname(path)):
            if mount_path in self.mounts:
                return self.volumes[self.mounts[mount_path]["name"]]
        self.fail(f"nothing is mounted at {path}")

    def test_documents_and_kinds(self):
        self.assertEqual(sorted(self.by_kind),
                         ["ConfigMap", "DaemonSet", "Service",
                          "ServiceAccount", "ServiceMonitor"])
        for d in self.docs:
            self.assertEqual(d["metadata"]["namespace"], NAMESPACE,
                             d["metadata"]["name"])
        self.assertEqual(self.by_kind["ServiceMonitor"][0]["apiVersion"],
                         "monitoring.coreos.com/v1")
        self.assertEqual(self.by_kind["DaemonSet"][0]["apiVersion"], "apps/v1")

    def test_flags_are_flags_of_the_agent(self):
        self.assertEqual(self.container["command"], ["/usr/bin/migd"])
        for name, _ in self.effective_flags():
            self.assertTrue(name in self.agent,
                            f"--{name} is not a flag of migd")
            self.assertNotIn(name, flags.TEST_ONLY, f"--{name} is for tests")

    def test_agent_takes_the_flags_and_their_values(self):
        # Abseil checks every flag and value (an int, a bool) as it parses,
        # before --helpfull prints and exits.
        work = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
        args = self.container["args"]
        conf = os.path.join(work, "migd.conf")
        with open(conf, "w") as f:
            f.write(self.configmap["data"]["migd.conf"])
        args = [f"--flagfile={conf}"] + [
            a.replace("$(NODE_IP)", "10.0.0.5").replace("$(NODE_NAME)", "n1")
            for a in args[1:]]
        run = subprocess.run([MIGD] + args + ["--helpfull"],
                             capture_output=True, text=True, timeout=60)
        self.assertNotIn("ERROR", run.stderr)
        self.assertIn("--listen", run.stdout + run.stderr)

    def test_flags_cover_the_production_flag_file(self):
        production = {n for n, _ in (flags.parse_flag(line, self.bools)
                                     for line in flags.flag_file(read(CONF)))}
        here = {n for n, _ in self.effective_flags()}
        self.assertEqual(production - here, set())

    def test_args_use_only_the_env_they_define(self):
        env = {e["name"] for e in self.container["env"]}
        for arg in self.container["args"]:
            for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                self.assertIn(var, env, arg)

    def test_tls_files_are_the_cert_manager_secret_keys(self):
        f = dict(self.effective_flags())
        for flag, key in (("tls_cert", "tls.crt"), ("tls_key", "tls.key"),
                          ("tls_ca", "ca.crt")):
            path = f[flag]
            self.assertEqual(posixpath.basename(path), key, flag)
            volume = self.volume_at(path)
            self.assertEqual(volume["secret"]["secretName"], "migd-tls")
        self.assertFalse(f.get("insecure", "false") == "true")

    def test_policy_is_in_the_configmap(self):
        path = dict(self.effective_flags())["tls_policy"]
        self.assertIn("configMap", self.volume_at(path))
        policy = self.configmap["data"][posixpath.basename(path)]
        for line in policy.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                for role in line.split()[1].split(","):
                    self.assertIn(role, ("agent", "operator", "observer"),
                                  line)

    def test_devices_and_state_are_the_hosts(self):
        f = dict(self.effective_flags())
        devices = self.volume_at(f["devices_config"])
        self.assertEqual(devices["hostPath"],
                         {"path": "/etc/migd/devices.conf", "type": "File"})
        self.assertIn(f["state_dir"], self.mounts)
        state = self.volume_at(f["state_dir"])
        self.assertEqual(state["hostPath"]["type"], "DirectoryOrCreate")
        self.assertFalse(self.mounts[f["state_dir"]].get("readOnly", False))

    def test_plugins_ship_in_the_image(self):
        plugin_dir = dict(self.effective_flags())["plugin_dir"]
        self.assertEqual(plugin_dir, "/usr/lib/migd/plugins")
        self.assertNotIn(plugin_dir, self.mounts)

    def test_host_network_privileged_vfio_and_sysfs(self):
        self.assertIs(self.pod["hostNetwork"], True)
        self.assertEqual(self.pod["dnsPolicy"], "ClusterFirstWithHostNet")
        self.assertIs(self.container["securityContext"]["privileged"], True)
        for path in ("/dev/vfio", "/sys"):
            volume = self.volume_at(path)
            self.assertEqual(volume["hostPath"]["path"], path)
            self.assertFalse(self.mounts[path].get("readOnly", False), path)
        self.assertEqual(self.pod["serviceAccountName"],
                         self.by_kind["ServiceAccount"][0]["metadata"]["name"])

    def test_ports_match_the_flags(self):
        f = dict(self.effective_flags())
        ports = {p["name"]: p["containerPort"]
                 for p in self.container["ports"]}
        self.assertEqual(ports, {"grpc": 7070, "data": 7071, "metrics": 9464})
        self.assertEqual(port_of(f["listen"]), ports["grpc"])
        self.assertEqual(port_of(f["data_listen"]), ports["data"])
        self.assertEqual(port_of(f["metrics_listen"]), ports["metrics"])
        host = f["metrics_listen"].rsplit(":", 1)[0]
        try:
            loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            self.assertEqual(f.get("metrics_allow_remote"), "true",
                             "a non-loopback --metrics_listen needs "
                             "--metrics_allow_remote")

    def test_probes_connect_to_the_grpc_port(self):
        # The kubelet's gRPC probe cannot do mutual TLS.
        for probe in ("readinessProbe", "livenessProbe"):
            spec = self.container[probe]
            self.assertNotIn("grpc", spec, probe)
            self.assertEqual(spec["tcpSocket"]["port"], "grpc", probe)

    def test_servicemonitor_scrapes_the_services_metrics_port(self):
        service = self.by_kind["Service"][0]
        monitor = self.by_kind["ServiceMonitor"][0]
        self.assertEqual(service["spec"]["clusterIP"], "None")
        template = self.by_kind["DaemonSet"][0]["spec"]["template"]
        for k, v in service["spec"]["selector"].items():
            self.assertEqual(template["metadata"]["labels"].get(k), v)
        for k, v in monitor["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(service["metadata"]["labels"].get(k), v)
        self.assertIn(NAMESPACE,
                      monitor["spec"]["namespaceSelector"]["matchNames"])
        service_ports = {p["name"]: p for p in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            self.assertIn(endpoint["port"], service_ports)
            target = service_ports[endpoint["port"]]["targetPort"]
            self.assertIn(target, {p["name"] for p in self.container["ports"]})
            self.assertEqual(endpoint.get("path", "/metrics"), "/metrics")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    MIGD, YAML, CONF = (os.path.abspath(a) for a in sys.argv[1:4])
    unittest.main(argv=sys.argv[:1], verbosity=2)
