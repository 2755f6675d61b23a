#!/usr/bin/env python3
"""The migd transfer benchmark: two agents on 127.0.0.1, one emulated device.

For each state size, stream count and repetition it starts a source and a
destination agent (fresh processes, so peak RSS is per run), prepares the
destination, migrates the device with migctl, reads both jobs' status, each
agent's CPU seconds (/proc/PID/stat utime+stime, before and after the
migration) and peak RSS (/proc/PID/status VmHWM), samples the CPU time of
each agent thread during the migration (to find the busiest one: a thread
near 100% of the transfer time is the pipeline's bottleneck; all well below
it with the agents using the whole machine means the job is short of cores),
checks that the destination holds the source's state, stops the agents, and
then runs three ceilings, each over as many connections as the job used
streams: the raw loopback TCP ceiling (tcp_ceiling) and the loopback gRPC
ceiling (grpc_ceiling: gRPC alone, with migd's transport settings), each
moving the same number of bytes, and the device pipe (device_pipe: the
simplest program that moves the same emulated device's state between two
processes, over plain sockets or TLS 1.3 with OpenSSL, and checks the
destination's digest). It prints a table of medians.

Each configuration runs on every transport of --transport, interleaved (for
each repetition: plaintext, then mutual TLS), so both see the same machine:
plain runs the agents with --insecure and migctl with --insecure; mtls runs
them with certificates from a development PKI minted once per run with
tools/pki (source agent-a, destination agent-b, migctl the operator), which
puts TLS on the control calls and on every data stream. The TCP ceiling stays
plaintext on both (what the machine moves); the gRPC ceiling and the device
pipe use the row's transport (--tls_dir for mtls; the pipe's cipher suite is
--pipe-ciphersuites).

With --evacuate=JOBS it measures a host evacuation instead (no ceilings):
one pair of agents with (JOBS + 1) x --devices-per-job emulated devices
each, one job alone (the 1-job figure), then JOBS jobs prepared and started
at once (by --evacuate-driver: one process running every job's migctl
migrate on a thread of its own, all released together); it reports the
aggregate rate against the 1-job figure, each job's rate (the spread shows
starvation), that every job succeeded with the destination's digests
checked, and the agents' CPU and peak RSS with the devices' own memory taken
out.

Normally run through e2e/bench/run.sh, which builds optimized binaries.
Python 3 standard library only.
"""

import argparse
import datetime
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

GIB = 1 << 30
MIB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")

DEFAULT_SIZES = "64MiB,256MiB,1GiB,4GiB"
TRANSPORTS = ("plain", "mtls")
# tools/pki's names (see that script): who is who in the mtls runs.
TRUST_DOMAIN = "spiffe://migd.local"
SOURCE_CERT, DESTINATION_CERT, MIGCTL_CERT = "agent-a", "agent-b", "operator"
SOURCE_ID = f"{TRUST_DOMAIN}/agent/{SOURCE_CERT}"
DESTINATION_ID = f"{TRUST_DOMAIN}/agent/{DESTINATION_CERT}"
QUICK_SIZES = "64MiB"
EVACUATE_SIZES = "64MiB"
# The emulated device holds its state in memory: the source agent holds one
# copy, the destination two while it loads (its own content and the staging
# buffer it loads into). A run needs about 3 x state size, plus this margin for
# the agents, the build server and everything else on the machine.
MEMORY_MARGIN = 2 * GIB
START_DEADLINE_S = 300  # a 4 GiB device takes a few seconds to generate
STOP_DEADLINE_S = 30
# Below this transfer time the busiest thread's share is not reported.
MIN_BUSIEST_TRANSFER_S = 0.5


def parse_size(text):
    units = {"": 1, "B": 1, "K": 1 << 10, "KiB": 1 << 10, "M": MIB,
             "MiB": MIB, "G": GIB, "GiB": GIB}
    num = text.rstrip("KMGiB")
    unit = text[len(num):]
    if not num.isdigit() or unit not in units:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 64MiB, 4GiB)")
    return int(num) * units[unit]


def human_size(n):
    if n >= GIB and n % GIB == 0:
        return f"{n // GIB} GiB"
    if n >= MIB and n % MIB == 0:
        return f"{n // MIB} MiB"
    return f"{n} B"


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- parallel streams
def streams_args(args, streams):
    """Extra (migd args, migctl migrate args) that make a job use `streams`.

    The job's policy sets it (`migctl migrate --streams=N`); templates given
    with --migd-streams-arg / --migctl-streams-arg ("{n}" is replaced by the
    stream count) replace that.
    """
    migd = [a.replace("{n}", str(streams)) for a in args.migd_streams_arg]
    migctl = [a.replace("{n}", str(streams)) for a in args.migctl_streams_arg]
    if not migd and not migctl:
        migctl = [f"--streams={streams}"]
    return migd, migctl


# ---------------------------------------------------------------- /proc readings
def cpu_seconds(pid):
    """utime + stime of every thread of `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def memory_fits(need, what, skipped):
    """Whether `need` bytes are available; if not, logs and records (in
    `skipped`) "<what> about N GiB, M GiB available; skipped"."""
    available = mem_available()
    if need <= available:
        return True
    msg = (f"{what} about {need / GIB:.1f} GiB, "
           f"{available / GIB:.1f} GiB available; skipped")
    log("bench: " + msg)
    skipped.append(msg)
    return False


def host_ticks():
    """(process, irq, steal, all) CPU ticks of the machine, from /proc/stat.

    process: user + nice + system, time charged to some process. irq: hard
    and soft interrupts, charged to no process (with IRQ time accounting),
    which includes the loopback network's receive processing.
    """
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(x) for x in parts[:8])
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return user + nice + system, irq + softirq, steal, total


def thread_readings(pid):
    """{tid: (name, run_ns, wait_ns)} of the live threads of `pid`.

    From /proc/PID/task/TID/comm and schedstat: the time the thread spent on
    a CPU, and the time it was runnable but waiting for one, both in ns (more
    precise than stat's 10 ms ticks).
    """
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().rstrip("\n")
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run_ns, wait_ns = (int(x) for x in f.read().split()[:2])
        except (OSError, ValueError):
            continue  # the thread ended in between
        out[int(tid)] = (name, run_ns, wait_ns)
    return out


class ThreadSampler:
    """CPU time each thread of some processes used while it ran.

    Reads every thread's comm and schedstat every `interval` seconds from
    start() to stop(). A thread already there at start() counts from its
    first reading, one born later from 0; one that ends counts up to its last
    reading, so a thread loses at most `interval` of CPU time. Each sample
    costs about 1 ms of CPU for 30 threads, so the interval is a trade
    between that loss and the sampler's own share of the machine. Thread
    names are what the agent set (migd names its own threads: src-job,
    dst-data, data-accept, ...).
    """

    def __init__(self, pids, interval=0.05):
        self._pids = dict(pids)  # label -> pid
        self._interval = interval
        self._first = {}  # (label, tid) -> (run_ns, wait_ns) at first
        self._last = {}  # (label, tid) -> (name, run_ns, wait_ns)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self, initial):
        for label, pid in self._pids.items():
            for tid, reading in thread_readings(pid).items():
                key = (label, tid)
                if key not in self._first:
                    self._first[key] = reading[1:] if initial else (0, 0)
                self._last[key] = reading

    def _loop(self):
        while not self._stop.wait(self._interval):
            self._sample(initial=False)

    def start(self):
        self._sample(initial=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._sample(initial=False)

    def threads(self, label):
        """[(name, cpu seconds)] of every thread of `label` seen, busiest
        first."""
        out = [(name, (run_ns - self._first[key][0]) / 1e9)
               for key, (name, run_ns, _) in self._last.items()
               if key[0] == label]
        return sorted(out, key=lambda t: -t[1])

    def run_and_wait(self):
        """(seconds on a CPU, seconds runnable but waiting for a CPU), summed
        over every thread sampled."""
        run = wait = 0
        for key, (_, run_ns, wait_ns) in self._last.items():
            run += run_ns - self._first[key][0]
            wait += wait_ns - self._first[key][1]
        return run / 1e9, wait / 1e9


def seconds(duration):
    """proto3 JSON Duration ("1.250s") -> float seconds; absent -> 0."""
    if not duration:
        return 0.0
    return float(str(duration).rstrip("s"))


def pinned(cmd, cpus):
    """`cmd` run on the CPUs `cpus` (taskset's list: "0", "0-3", "0,2")."""
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def cpu_list_size(cpus):
    """How many CPUs a taskset list names ("0-3,6" -> 5); dies if bad."""
    n = 0
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()) or (
                hi and int(hi) < int(lo)):
            raise SystemExit(f"bench: bad --cpus list {cpus!r} (e.g. 0, 0-3, "
                             f"0,2)")
        n += int(hi) - int(lo) + 1 if hi else 1
    return n


# ---------------------------------------------------------------- agents
def tls_files(pki, cert):
    """(cert, key, CA) paths of tools/pki's certificate `cert` in `pki`."""
    return (os.path.join(pki, f"{cert}.pem"), os.path.join(pki, f"{cert}.key"),
            os.path.join(pki, "ca.pem"))


def agent_transport_args(pki, cert):
    """migd's flags: plaintext without a PKI, else mutual TLS as `cert`."""
    if pki is None:
        return ["--insecure"]
    pem, key, ca = tls_files(pki, cert)
    return [f"--tls_cert={pem}", f"--tls_key={key}", f"--tls_ca={ca}",
            f"--tls_policy={os.path.join(pki, 'policy.conf')}"]


class Agent:
    def __init__(self, name, migd, workdir, device, size, seed, extra_args,
                 env, cpus=None, transport_args=("--insecure",)):
        self.name = name
        self.port_file = os.path.join(workdir, f"{name}.port")
        self.log_path = os.path.join(workdir, f"{name}.log")
        # Each agent keeps its job journal apart, in the run's directory.
        cmd = [migd, *transport_args, "--listen=127.0.0.1:0",
               f"--port_file={self.port_file}", f"--name={name}",
               f"--state_dir={os.path.join(workdir, name + '.state')}",
               f"--emulated_devices={device}",
               f"--emulated_state_size={size}", f"--emulated_seed={seed}"]
        cmd += extra_args
        cmd = pinned(cmd, cpus)
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self.address = None

    @property
    def pid(self):
        return self.proc.pid

    def wait_serving(self):
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent {self.name} exited with "
                                   f"{self.proc.returncode} before serving; "
                                   f"log: {self.tail()}")
            try:
                with open(self.port_file) as f:
                    port = f.read().strip()
                if port.isdigit() and int(port) > 0:
                    self.address = f"127.0.0.1:{port}"
                    return
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"agent {self.name} wrote no port within "
                           f"{START_DEADLINE_S}s; log: {self.tail()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                log(f"bench: agent {self.name} ignored SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()

    def tail(self, lines=15):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"


def migctl_command(args, transport, agent, *cmd):
    """(argv, environment) of migctl against `agent`, as the operator with
    mtls, printing JSON."""
    if transport == "mtls":
        pem, key, ca = tls_files(args.pki_dir, MIGCTL_CERT)
        tls = [f"--tls_cert={pem}", f"--tls_key={key}", f"--tls_ca={ca}"]
    else:
        tls = ["--insecure"]
    full = [args.migctl, *tls, f"--agent={agent}", "--output=json", *cmd]
    # Only the flags say how to connect: no MIGCTL_* settings or config file
    # of the caller's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGCTL_")}
    env["MIGCTL_CONFIG"] = os.devnull
    return full, env


def migctl(args, transport, agent, *cmd, timeout=600):
    """Runs migctl against `agent`, as the operator with mtls; its JSON."""
    full, env = migctl_command(args, transport, agent, *cmd)
    r = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                       env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} exited {r.returncode}: "
                           f"{r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def digests(args, transport, agent):
    out = json.loads(migctl(args, transport, agent, "devices"))
    return {d["name"]: d.get("state_digest", "")
            for d in out.get("devices", [])}


def agent_env(args):
    """The agents' environment: ours, with --agent-env on top."""
    env = dict(os.environ)
    for kv in args.agent_env:
        k, _, v = kv.partition("=")
        env[k] = v
    return env


# ---------------------------------------------------------------- one run
def run_migration(args, size, streams, rep, workdir, transport):
    """One migration of `size` bytes of state over `transport` (plain or
    mtls); returns its measurements."""
    job = f"bench-{size}-{streams}-{rep}-{transport}"
    migd_extra, migctl_extra = streams_args(args, streams)
    migd_extra = migd_extra + args.migd_arg
    env = agent_env(args)
    pki = args.pki_dir if transport == "mtls" else None
    src = Agent("source", args.migd, workdir, "emu0", size, 1, migd_extra, env,
                args.cpus, agent_transport_args(pki, SOURCE_CERT))
    dst = Agent("destination", args.migd, workdir, "dst0", size, 2,
                migd_extra, env, args.cpus,
                agent_transport_args(pki, DESTINATION_CERT))
    # With TLS the token is bound to the source's identity, and the source
    # checks the destination's: both named, so no call goes to learn them.
    prepare_tls, migrate_tls = [], []
    if transport == "mtls":
        prepare_tls = [f"--source_identity={SOURCE_ID}"]
        migrate_tls = [f"--destination_identity={DESTINATION_ID}"]
    src_digest = None
    try:
        src.wait_serving()
        dst.wait_serving()
        # Prepared separately, so the destination's RESUMING setup (the
        # emulated device allocates its load buffer) stays out of the numbers.
        token = json.loads(migctl(args, transport, dst.address, "prepare",
                                  f"--job={job}", "--devices=emu0:dst0",
                                  f"--source={src.address}",
                                  *prepare_tls))["transfer_token"]
        host0 = host_ticks()
        cpu0 = {a.name: cpu_seconds(a.pid) for a in (src, dst)}
        sampler = ThreadSampler({a.name: a.pid for a in (src, dst)})
        sampler.start()
        t0 = time.monotonic()
        try:
            migctl(args, transport, src.address, "migrate", f"--job={job}",
                   "--devices=emu0:dst0", f"--destination={dst.address}",
                   f"--token={token}", *migrate_tls, *migctl_extra,
                   timeout=600 + size // (10 * MIB))
        finally:
            sampler.stop()
        wall = time.monotonic() - t0
        cpu1 = {a.name: cpu_seconds(a.pid) for a in (src, dst)}
        host1 = host_ticks()
        hwm = {a.name: status_kib(a.pid, "VmHWM") * 1024 for a in (src, dst)}
        s = json.loads(migctl(args, transport, src.address, "status", job))
        d = json.loads(migctl(args, transport, dst.address, "status", job))
        if s.get("phase") != "PHASE_SUCCEEDED":
            raise RuntimeError(f"job {job} ended {s.get('phase')}: "
                               f"{s.get('failure')}")
        verified = None
        if not args.no_verify:
            a = digests(args, transport, src.address).get("emu0")
            b = digests(args, transport, dst.address).get("dst0")
            verified = bool(a) and a == b
            if not verified:
                raise RuntimeError(f"job {job}: destination digest {b} != "
                                   f"source digest {a}")
            src_digest = a
    except Exception:
        for a in (src, dst):
            log(f"---- {a.name} log ----\n{a.tail()}")
        raise
    finally:
        src.stop()
        dst.stop()

    bytes_done = int(s.get("bytes_done", 0))
    transfer_s = max(seconds(s.get("transfer_time")),
                     seconds(d.get("transfer_time")))
    stop_copy_bytes = int(s.get("stop_copy_bytes", 0) or 0) or bytes_done
    gbps = bytes_done / transfer_s / 1e9 if transfer_s > 0 else 0.0
    downtime = seconds(s.get("downtime"))
    overhead = (downtime - stop_copy_bytes / (gbps * 1e9)) if gbps else None
    gib = bytes_done / GIB
    # Host noise during the migration: CPU the hypervisor stole, and CPU
    # that processes other than the two agents used (builds, tests, ...).
    # Interrupt time is nobody's: it is left out of both.
    dproc, dirq, dsteal, dall = (b - a for a, b in zip(host0, host1))
    allowed = cpu_list_size(args.cpus) if args.cpus else os.cpu_count()
    agents_ticks = (cpu1["source"] - cpu0["source"] + cpu1["destination"]
                    - cpu0["destination"]) * CLK_TCK
    breakdown = s.get("downtime_breakdown") or {}
    threads = {a: sampler.threads(a) for a in ("source", "destination")}

    def busiest(label):
        # The busiest thread's CPU time as a share of the transfer time. Not
        # for short transfers: the job's setup (mapping its buffers) and the
        # sampling interval outweigh a transfer of a few tens of ms.
        if not threads[label] or transfer_s < MIN_BUSIEST_TRANSFER_S:
            return None, None
        name, cpu = threads[label][0]
        return name, cpu / transfer_s

    src_busy, dst_busy = busiest("source"), busiest("destination")
    run_s, wait_s = sampler.run_and_wait()
    return {
        "job": job, "state_bytes": size, "streams": streams, "rep": rep,
        "transport": transport,
        # Who each side saw at the other end (empty in plaintext): the
        # destination the source agent, the source the destination agent.
        "src_peer_identity": s.get("peer_identity", ""),
        "dst_peer_identity": d.get("peer_identity", ""),
        "bytes": bytes_done, "stop_copy_bytes": stop_copy_bytes,
        "transfer_s": transfer_s, "gbps": gbps, "migctl_wall_s": wall,
        "src_cpu_s": cpu1["source"] - cpu0["source"],
        "dst_cpu_s": cpu1["destination"] - cpu0["destination"],
        "src_cpu_s_per_gib": (cpu1["source"] - cpu0["source"]) / gib,
        "dst_cpu_s_per_gib": (cpu1["destination"] - cpu0["destination"]) / gib,
        "src_peak_rss": hwm["source"], "dst_peak_rss": hwm["destination"],
        # What is left when the emulated device's own memory is taken out:
        # the state on the source, state + load buffer on the destination.
        "src_rss_excl_state": hwm["source"] - size,
        "dst_rss_excl_state": hwm["destination"] - 2 * size,
        "downtime_s": downtime, "downtime_overhead_s": overhead,
        # Destination RESUMING -> STOP: the emulated device checks the CRC32C
        # it kept while loading and swaps in what it loaded.
        "load_s": seconds(breakdown.get("load")) if breakdown else None,
        "src_downtime_breakdown": breakdown,
        "dst_downtime_s": seconds(d.get("downtime")),
        "verified": verified,
        # The source agent's emu0 digest (None with --no-verify): the device
        # pipe's source device must have the same.
        "src_digest": src_digest,
        "steal": dsteal / dall if dall else 0.0,
        "other_cpu": max(0.0, (dproc - agents_ticks) / dall) if dall else 0.0,
        # Share of the CPUs they may use (all, or --cpus) the two agents
        # used: near 100% the job is CPU-bound, well below it the agents wait
        # on each other.
        "agents_cpu": (agents_ticks / (dall * allowed / os.cpu_count())
                       if dall else 0.0),
        "irq_cpu_s": dirq / CLK_TCK,
        # Time the agents' threads were ready to run but had no CPU, against
        # the time they ran: above 1, the job is short of cores (or of the
        # hypervisor's attention: waking an idle vCPU counts as waiting).
        "agents_run_s": run_s, "agents_wait_s": wait_s,
        "cpu_wait_per_run": wait_s / run_s if run_s > 0 else None,
        "src_threads": threads["source"],
        "dst_threads": threads["destination"],
        "src_busiest_thread": src_busy[0], "src_busiest_share": src_busy[1],
        "dst_busiest_thread": dst_busy[0], "dst_busiest_share": dst_busy[1],
    }


def run_tool(cmd, cpus):
    """Runs a ceiling tool (pinned to `cpus`); its JSON result."""
    r = subprocess.run(pinned(cmd, cpus), capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{os.path.basename(cmd[0])} failed: "
                           f"{r.stderr.strip()}")
    return json.loads(r.stdout)


def run_ceiling(binary, nbytes, connections, cpus=None, extra=()):
    """tcp_ceiling or grpc_ceiling (same flags, same JSON) for one run;
    `extra` are the tool's own flags (grpc_ceiling's --tls_dir)."""
    return run_tool([binary, f"--bytes={nbytes}",
                     f"--connections={connections}", *extra], cpus)


def run_pipe(args, size, connections, transport):
    """device_pipe for one run: the agents' devices (emu0 with seed 1, dst0
    with seed 2, `size` bytes of state) over `connections` connections,
    plaintext or, for mtls, TLS 1.3 with the run's PKI and
    --pipe-ciphersuites. The tool fails unless the destination's digest is
    the source's."""
    tls = []
    if transport == "mtls":
        tls = [f"--tls_dir={args.pki_dir}",
               f"--tls_ciphersuites={args.pipe_ciphersuites}"]
    p = run_tool([args.device_pipe, f"--state_size={size}",
                  f"--connections={connections}", "--seed_src=1",
                  "--seed_dst=2", *tls], args.cpus)
    if not p.get("digest_ok"):
        raise RuntimeError(f"device_pipe: destination digest "
                           f"{p.get('dst_digest')} != source digest "
                           f"{p.get('src_digest')}")
    return p


# ---------------------------------------------------------------- report
def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec, scale=1.0):
    return "-" if v is None else format(v * scale, spec)


def busiest_summary(runs, side):
    """(the name most often busiest, median share) over `runs` of one side."""
    names = [r[f"{side}_busiest_thread"] for r in runs
             if r[f"{side}_busiest_thread"]]
    if not names:
        return None, None
    name = max(set(names), key=names.count)
    return name, median([r[f"{side}_busiest_share"] for r in runs])


def fmt_busiest(b):
    name, share = b
    return "-" if name is None else f"{name} {share:.0%}"


def row_key(r):
    """(size, streams, transport): what a row of the table is the medians
    of; sorts plaintext before mutual TLS."""
    return r["state_bytes"], r["streams"], TRANSPORTS.index(r["transport"])


def against_ceiling(name, ratio_key, paired_key, m, rs, cs):
    """A ceiling's columns for one row: its median GB/s (`<name>_gbps`),
    migd's median over it (`ratio_key`), the median of each run's own ratio
    (`paired_key`), and its sender's and receiver's CPU s/GiB
    (`<name>_tx_cpu_s_per_gib`, `<name>_rx_cpu_s_per_gib`). `cs` are the ceiling's
    runs paired with migd's `rs`; `m` holds migd's medians."""
    gbps = median([c["gbps"] for c in cs])
    return {
        f"{name}_gbps": gbps,
        ratio_key: m["gbps"] / gbps if gbps else None,
        paired_key: median([r["gbps"] / c["gbps"]
                            for r, c in zip(rs, cs) if c["gbps"]]),
        f"{name}_tx_cpu_s_per_gib": median(
            [c["sender"]["cpu_s_per_gib"] for c in cs]),
        f"{name}_rx_cpu_s_per_gib": median(
            [c["receiver"]["cpu_s_per_gib"] for c in cs]),
    }


def summarize(runs, ceilings, grpc_ceilings, pipes):
    """Rows of medians, one per (size, streams, transport)."""
    rows = []
    keys = sorted({row_key(r) for r in runs})
    for key in keys:
        rs = [r for r in runs if row_key(r) == key]
        cs = [c for c in ceilings if row_key(c) == key]
        gs = [g for g in grpc_ceilings if row_key(g) == key]
        ps = [p for p in pipes if row_key(p) == key]
        m = {k: median([r[k] for r in rs]) for k in (
            "gbps", "src_cpu_s_per_gib", "dst_cpu_s_per_gib", "src_peak_rss",
            "dst_peak_rss", "src_rss_excl_state", "dst_rss_excl_state",
            "downtime_s", "downtime_overhead_s", "load_s", "steal",
            "agents_cpu", "cpu_wait_per_run")}
        rows.append({
            "state_bytes": key[0], "streams": key[1],
            "transport": TRANSPORTS[key[2]], "n": len(rs), **m,
            **against_ceiling("pipe", "pipe_ratio", "pipe_paired_ratio", m,
                              rs, ps),
            **against_ceiling("ceiling", "ratio", "paired_ratio", m, rs, cs),
            **against_ceiling("grpc", "grpc_ratio", "grpc_paired_ratio", m,
                              rs, gs),
            "src_busiest": busiest_summary(rs, "src"),
            "dst_busiest": busiest_summary(rs, "dst"),
            "max_steal": max(r["steal"] for r in rs),
            "max_other_cpu": max(r["other_cpu"] for r in rs),
        })
    return rows


def print_table(rows, out=sys.stdout):
    head = ["state", "streams", "transport", "n", "GB/s", "pipe GB/s",
            "ratio to pipe", "TCP GB/s", "ratio", "gRPC GB/s",
            "ratio to gRPC", "CPU s/GiB src", "dst", "pipe tx", "rx",
            "TCP tx", "rx", "agents CPU",
            "CPU wait/run", "busiest thread src", "dst",
            "peak RSS MiB src", "dst", "excl. state src", "dst",
            "downtime ms", "overhead ms", "load ms", "steal",
            "other CPU"]
    table = [head]
    for r in rows:
        table.append([
            human_size(r["state_bytes"]), str(r["streams"]), r["transport"],
            str(r["n"]),
            fmt(r["gbps"], ".2f"), fmt(r["pipe_gbps"], ".2f"),
            fmt(r["pipe_ratio"], ".2f"), fmt(r["ceiling_gbps"], ".2f"),
            fmt(r["ratio"], ".2f"),
            fmt(r["grpc_gbps"], ".2f"), fmt(r["grpc_ratio"], ".2f"),
            fmt(r["src_cpu_s_per_gib"], ".2f"),
            fmt(r["dst_cpu_s_per_gib"], ".2f"),
            fmt(r["pipe_tx_cpu_s_per_gib"], ".2f"),
            fmt(r["pipe_rx_cpu_s_per_gib"], ".2f"),
            fmt(r["ceiling_tx_cpu_s_per_gib"], ".2f"),
            fmt(r["ceiling_rx_cpu_s_per_gib"], ".2f"),
            fmt(r["agents_cpu"], ".0%"),
            fmt(r["cpu_wait_per_run"], ".2f"),
            fmt_busiest(r["src_busiest"]), fmt_busiest(r["dst_busiest"]),
            fmt(r["src_peak_rss"], ".0f", 1 / MIB),
            fmt(r["dst_peak_rss"], ".0f", 1 / MIB),
            fmt(r["src_rss_excl_state"], ".0f", 1 / MIB),
            fmt(r["dst_rss_excl_state"], ".0f", 1 / MIB),
            fmt(r["downtime_s"], ".1f", 1e3),
            fmt(r["downtime_overhead_s"], ".1f", 1e3),
            fmt(r["load_s"], ".1f", 1e3),
            fmt(r["max_steal"], ".0%"),
            fmt(r["max_other_cpu"], ".0%"),
        ])
    print_markdown(table, out)


def print_markdown(table, out):
    """A Markdown table: the heading row left-aligned, the rest right."""
    head = table[0]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
          file=out)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=out)
    for row in table[1:]:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths))
              + " |", file=out)


def print_transport_comparison(rows, out=sys.stdout):
    """mtls next to plain for each (size, streams) that ran on both: migd's,
    the device pipe's and the gRPC ceiling's GB/s and their ratio (mtls /
    plain), and the agents' CPU seconds per GiB. False when no configuration
    ran on both."""
    by = {(r["state_bytes"], r["streams"], r["transport"]): r for r in rows}
    head = ["state", "streams", "GB/s plain", "mtls", "mtls/plain",
            "pipe GB/s plain", "mtls", "mtls/plain",
            "gRPC GB/s plain", "mtls", "mtls/plain",
            "CPU s/GiB src plain", "mtls", "dst plain", "mtls"]
    table = [head]
    for size, streams in sorted({(r["state_bytes"], r["streams"])
                                 for r in rows}):
        plain = by.get((size, streams, "plain"))
        tls = by.get((size, streams, "mtls"))
        if plain is None or tls is None:
            continue

        def ratio(key):
            if not plain[key] or tls[key] is None:
                return None
            return tls[key] / plain[key]

        table.append([
            human_size(size), str(streams),
            fmt(plain["gbps"], ".2f"), fmt(tls["gbps"], ".2f"),
            fmt(ratio("gbps"), ".2f"),
            fmt(plain["pipe_gbps"], ".2f"), fmt(tls["pipe_gbps"], ".2f"),
            fmt(ratio("pipe_gbps"), ".2f"),
            fmt(plain["grpc_gbps"], ".2f"), fmt(tls["grpc_gbps"], ".2f"),
            fmt(ratio("grpc_gbps"), ".2f"),
            fmt(plain["src_cpu_s_per_gib"], ".2f"),
            fmt(tls["src_cpu_s_per_gib"], ".2f"),
            fmt(plain["dst_cpu_s_per_gib"], ".2f"),
            fmt(tls["dst_cpu_s_per_gib"], ".2f"),
        ])
    if len(table) == 1:
        return False
    print_markdown(table, out)
    return True


def pipe_tls_summary(pipes):
    """What the device pipe's TLS runs negotiated: the cipher suites, and for
    each direction of each side whether it had kernel TLS (asked for, not
    required) in all, some or none of the runs. None without TLS runs."""
    tls = [p for p in pipes if p.get("tls")]
    if not tls:
        return None
    ciphers = ", ".join(sorted({p["cipher"] for p in tls}))

    def share(key):
        n = sum(1 for p in tls if p["ktls"][key])
        if n in (0, len(tls)):
            return "yes" if n else "no"
        return f"{n}/{len(tls)}"

    return (f"device pipe over TLS 1.3: {ciphers}; kernel TLS (asked for): "
            f"source send {share('src_send')}, recv {share('src_recv')}; "
            f"destination send {share('dst_send')}, recv "
            f"{share('dst_recv')}")


def run_one(args, size, n, rep, reps, transport, workroot):
    """One migration over `transport`, then the TCP ceiling (plaintext) and
    the gRPC ceiling (the same transport) with its bytes and connections, and
    the device pipe (the same transport) with its devices and connections;
    returns the four results."""
    log(f"bench: {human_size(size)}, {n} stream(s), {transport}, "
        f"run {rep + 1}/{reps}")
    workdir = os.path.join(workroot, f"{size}-{n}-{rep}-{transport}")
    os.makedirs(workdir)
    r = run_migration(args, size, n, rep, workdir, transport)
    c = run_ceiling(args.tcp_ceiling, r["bytes"], n, args.cpus)
    c.update(state_bytes=size, streams=n, rep=rep, transport=transport)
    tls = [f"--tls_dir={args.pki_dir}"] if transport == "mtls" else []
    g = run_ceiling(args.grpc_ceiling, r["bytes"], n, args.cpus, tls)
    g.update(state_bytes=size, streams=n, rep=rep, transport=transport)
    p = run_pipe(args, size, n, transport)
    p.update(state_bytes=size, streams=n, rep=rep, transport=transport)
    # The pipe's devices are the agents' only if its copy of the agent's seed
    # rule still holds: its source device must have the source agent's state.
    if r["src_digest"] and p["src_digest"] != r["src_digest"]:
        raise RuntimeError(f"device_pipe's emu0 has digest {p['src_digest']}, "
                           f"the source agent's {r['src_digest']}: the pipe "
                           f"no longer makes the agent's device")
    if p["bytes"] != r["bytes"]:
        log(f"bench: the device pipe moved {p['bytes']} stream bytes, migd "
            f"{r['bytes']}")
    log(f"  migd {r['gbps']:.2f} GB/s, pipe {p['gbps']:.2f} GB/s, TCP "
        f"{c['gbps']:.2f} GB/s, gRPC {g['gbps']:.2f} GB/s, downtime "
        f"{r['downtime_s'] * 1e3:.1f} ms, steal {r['steal']:.0%}, other CPU "
        f"{r['other_cpu']:.0%}")
    return r, c, g, p


# ---------------------------------------------------------------- host evacuation
def parse_timestamp(text):
    """proto3 JSON Timestamp ("2024-12-05T02:52:00.123456789Z", always UTC)
    -> seconds since the epoch; absent -> None."""
    if not text:
        return None
    text = str(text)
    if not text.endswith("Z"):
        raise ValueError(f"timestamp {text!r} is not in UTC")
    base, _, frac = text[:-1].partition(".")
    t = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    return t + (float("0." + frac) if frac else 0.0)


def evac_job_figures(job, s, d):
    """One job's figures from its source (`s`) and destination (`d`) status
    JSON ({} when the agent did not know the job)."""
    bytes_done = int(s.get("bytes_done", 0) or 0)
    transfer_s = max(seconds(s.get("transfer_time")),
                     seconds(d.get("transfer_time")))
    # The source creates the job when StartMigration arrives; the job ends
    # on each side when it finished (the later of the two).
    start = parse_timestamp(s.get("created"))
    ends = [t for t in (parse_timestamp(s.get("finished")),
                        parse_timestamp(d.get("finished"))) if t is not None]
    end = max(ends) if ends else None
    failure = s.get("failure") or d.get("failure") or {}
    return {
        "job": job, "phase": s.get("phase", "UNKNOWN"),
        "dst_phase": d.get("phase", "UNKNOWN"),
        "failure": failure.get("message", "") if failure else "",
        "bytes": bytes_done, "transfer_s": transfer_s,
        "gbps": bytes_done / transfer_s / 1e9 if transfer_s > 0 else None,
        "start": start, "end": end,
        "span_s": end - start if start is not None and end is not None
        else None,
        "downtime_s": seconds(s.get("downtime")),
        # How long it waited in line for a transfer slot (0: not at all).
        "wait_s": seconds((s.get("queue") or {}).get("waited")),
        "verified": None,
    }


def run_driver(driver, jobs_file, env, timeout):
    """Runs the evacuation driver (e2e/bench/evacuate) on `jobs_file` with
    `env`: every job's migctl command line at once, in one process. Returns
    its result per job, in the file's order ({"line", "exit_status",
    "seconds", "stdout", "stderr"}); None when it still ran after `timeout`
    seconds (it is killed). Raises when the driver itself failed."""
    with open(jobs_file) as f:
        want = [n for n, line in enumerate(f, 1) if line.strip()]
    try:
        r = subprocess.run([driver, f"--jobs={jobs_file}"],
                           capture_output=True, text=True, errors="replace",
                           env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"bench: {driver} still ran after {timeout} s; killed it")
        return None
    if r.returncode != 0:
        raise RuntimeError(f"{driver} --jobs={jobs_file} exited "
                           f"{r.returncode}: {r.stderr.strip()}")
    # Its own stderr is gRPC's logging, if any: the jobs' is in the lines.
    for line in r.stderr.strip().splitlines()[-5:]:
        log(f"bench: evacuate: {line}")
    # "\n" only: a job's text may hold other line breaks, which the driver
    # leaves as they are (JSON escapes only control characters).
    results = [json.loads(line) for line in r.stdout.split("\n") if line]
    if [d["line"] for d in results] != want:
        raise RuntimeError(f"{driver} answered for lines "
                           f"{[d['line'] for d in results]} of {jobs_file}, "
                           f"want {want}")
    return results


def run_evacuation(args, size, streams, rep, workdir, transport):
    """One host evacuation over `transport`: a pair of agents with (jobs + 1)
    x devices-per-job devices each; one job alone (the 1-job figure), then
    `args.evacuate` jobs prepared and started at once. Returns its
    measurements."""
    jobs, per = args.evacuate, args.devices_per_job
    ndev = (jobs + 1) * per  # the first `per` for the 1-job run
    tag = f"evac-{size}-{streams}-{rep}-{transport}"
    migd_extra, migctl_extra = streams_args(args, streams)
    env = agent_env(args)
    pki = args.pki_dir if transport == "mtls" else None
    # The destination serves every job's data streams at once: each is a
    # connection (and a thread) of its data channel, which refuses more than
    # --max_data_streams (default 64). Before --migd-arg, which can override.
    dst_extra = [f"--max_data_streams={max(64, jobs * streams)}"]
    src = Agent("source", args.migd, workdir,
                ",".join(f"emu{i}" for i in range(ndev)), size, 1,
                migd_extra + args.migd_arg, env, args.cpus,
                agent_transport_args(pki, SOURCE_CERT))
    dst = Agent("destination", args.migd, workdir,
                ",".join(f"dst{i}" for i in range(ndev)), size, 2,
                migd_extra + dst_extra + args.migd_arg, env, args.cpus,
                agent_transport_args(pki, DESTINATION_CERT))
    prepare_tls, migrate_tls = [], []
    if transport == "mtls":
        prepare_tls = [f"--source_identity={SOURCE_ID}"]
        migrate_tls = [f"--destination_identity={DESTINATION_ID}"]

    def devices(k):
        # Job k's devices: k = 0 is the 1-job run, 1..jobs the batch.
        return range(k * per, (k + 1) * per)

    def pairs(k):
        return ",".join(f"emu{i}:dst{i}" for i in devices(k))

    def prepare(job, k):
        return json.loads(migctl(args, transport, dst.address, "prepare",
                                 f"--job={job}", f"--devices={pairs(k)}",
                                 f"--source={src.address}",
                                 *prepare_tls))["transfer_token"]

    def migrate_cmd(job, k, token):
        return ("migrate", f"--job={job}", f"--devices={pairs(k)}",
                f"--destination={dst.address}", f"--token={token}",
                *migrate_tls, *migctl_extra)

    def status(job):
        out = []
        for a in (src, dst):
            try:
                out.append(json.loads(migctl(args, transport, a.address,
                                             "status", job)))
            except RuntimeError as e:
                log(f"bench: {a.name}: {e}")
                out.append({})
        return out

    agents = (src, dst)
    timeout = 600 + (jobs + 1) * per * size // (10 * MIB)
    try:
        src.wait_serving()
        dst.wait_serving()
        # One job alone, on the same agents: the 1-job figure.
        base_name = f"{tag}-1job"
        token = prepare(base_name, 0)
        cpu0 = {a.name: cpu_seconds(a.pid) for a in agents}
        migctl(args, transport, src.address,
               *migrate_cmd(base_name, 0, token), timeout=timeout)
        cpu1 = {a.name: cpu_seconds(a.pid) for a in agents}
        base = evac_job_figures(base_name, *status(base_name))
        if base["phase"] != "PHASE_SUCCEEDED":
            raise RuntimeError(f"job {base_name} ended {base['phase']}: "
                               f"{base['failure']}")
        base["src_cpu_s"] = cpu1["source"] - cpu0["source"]
        base["dst_cpu_s"] = cpu1["destination"] - cpu0["destination"]

        # The evacuation: every job prepared first (the destination's
        # RESUMING setup stays out of the figures, as in a single run), then
        # all started at once by the driver, as a control plane would: one
        # process, a thread per job running its `migctl migrate` command
        # line (which follows its job to the end; nothing starts a job
        # without following it), all released together. A migctl process
        # per job would spread the starts over a second or more on CPUs the
        # first jobs already use.
        names = [f"{tag}-{k:02d}" for k in range(1, jobs + 1)]
        tokens = [prepare(name, k) for k, name in enumerate(names, 1)]
        jobs_file = os.path.join(workdir, "jobs.tsv")
        with open(jobs_file, "w") as f:
            for k, (name, token) in enumerate(zip(names, tokens), 1):
                argv, menv = migctl_command(args, transport, src.address,
                                            *migrate_cmd(name, k, token))
                if any("\t" in a or "\n" in a for a in argv):
                    raise RuntimeError(f"job {name}: a migctl argument has "
                                       f"a tab or a newline: {argv}")
                f.write("\t".join(argv[1:]) + "\n")
        rss_prepared = {a.name: status_kib(a.pid, "VmRSS") * 1024
                        for a in agents}
        host0 = host_ticks()
        cpu0 = {a.name: cpu_seconds(a.pid) for a in agents}
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # Every agent thread's CPU time, less often than in a single run:
        # the agents have a few threads per job.
        sampler = ThreadSampler({a.name: a.pid for a in agents}, interval=0.1)
        sampler.start()
        t0 = time.monotonic()
        driven = run_driver(args.evacuate_driver, jobs_file, menv, timeout)
        wall = time.monotonic() - t0
        sampler.stop()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu1 = {a.name: cpu_seconds(a.pid) for a in agents}
        host1 = host_ticks()
        hwm = {a.name: status_kib(a.pid, "VmHWM") * 1024 for a in agents}
        rcs = {}
        for name, d in zip(names, driven or [None] * jobs):
            with open(os.path.join(workdir, f"{name}.migctl"), "w") as f:
                if d:
                    f.write(d["stdout"] + d["stderr"])
            rcs[name] = d["exit_status"] if d else None
        batch = [evac_job_figures(name, *status(name)) for name in names]
        for j in batch:
            j["migctl_rc"] = rcs[j["job"]]
            if j["phase"] != "PHASE_SUCCEEDED" or rcs[j["job"]] != 0:
                with open(os.path.join(workdir, f"{j['job']}.migctl")) as f:
                    tail = "".join(f.readlines()[-3:]).strip()
                log(f"bench: job {j['job']} ended {j['phase']} (migctl exit "
                    f"{rcs[j['job']]}): {j['failure'] or tail}")
        if not args.no_verify:
            a = digests(args, transport, src.address)
            b = digests(args, transport, dst.address)
            for k, j in enumerate([base, *batch]):
                j["verified"] = all(
                    a.get(f"emu{i}") and a.get(f"emu{i}") == b.get(f"dst{i}")
                    for i in devices(k))
            if not base["verified"]:
                raise RuntimeError(f"job {base_name}: the destination's "
                                   f"digests differ from the source's")
    except Exception:
        for a in agents:
            log(f"---- {a.name} log ----\n{a.tail()}")
        raise
    finally:
        src.stop()
        dst.stop()

    ok = [j for j in batch
          if j["phase"] == "PHASE_SUCCEEDED" and j["migctl_rc"] == 0]
    total = sum(j["bytes"] for j in ok)
    starts = [j["start"] for j in ok if j["start"] is not None]
    ends = [j["end"] for j in ok if j["end"] is not None]
    # The batch's window: the first job's start to the last job's end, on
    # the jobs' own clocks; the wall clock around the driver when the status
    # has no timestamps.
    if starts and ends and len(starts) == len(ok) and len(ends) == len(ok):
        window, window_from = max(ends) - min(starts), "jobs"
    else:
        window, window_from = wall, "wall"
    aggregate = total / window / 1e9 if total and window > 0 else None
    rates = [j["gbps"] for j in ok if j["gbps"]]
    gib = total / GIB if total else None
    dproc, dirq, dsteal, dall = (b - a for a, b in zip(host0, host1))
    agents_ticks = sum(cpu1[a.name] - cpu0[a.name] for a in agents) * CLK_TCK
    migctl_s = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    run_s, wait_s = sampler.run_and_wait()

    def by_name(label):
        # [name, threads, CPU seconds] per thread name, busiest first.
        names = {}
        for name, cpu in sampler.threads(label):
            n, total = names.get(name, (0, 0.0))
            names[name] = (n + 1, total + cpu)
        return sorted(([k, n, c] for k, (n, c) in names.items()),
                      key=lambda t: -t[2])
    state = ndev * size
    return {
        "mode": "evacuation", "job": tag, "state_bytes": size,
        "devices_per_job": per, "jobs": jobs, "streams": streams, "rep": rep,
        "transport": transport,
        "one_job": base, "one_job_gbps": base["gbps"],
        # The 1-job run over its own start..end span (what the batch's
        # aggregate measures), next to its transfer time (what GB/s is).
        "one_job_span_gbps": (base["bytes"] / base["span_s"] / 1e9
                              if base["span_s"] else None),
        "bytes": total, "window_s": window, "window_from": window_from,
        "wall_s": wall, "aggregate_gbps": aggregate,
        "wall_gbps": total / wall / 1e9 if total and wall > 0 else None,
        "ratio": (aggregate / base["gbps"]
                  if aggregate and base["gbps"] else None),
        # How long it took until every job had started: the driver releases
        # them together, so this is how long their StartMigration calls took
        # to reach the source.
        "start_spread_s": max(starts) - min(starts) if starts else None,
        "job_gbps_min": min(rates) if rates else None,
        "job_gbps_median": median(rates),
        "job_gbps_max": max(rates) if rates else None,
        "job_gbps_max_over_min": (max(rates) / min(rates)
                                  if rates and min(rates) > 0 else None),
        # The slowest job against an equal share of the aggregate: above 1,
        # even the slowest moved faster than a 1/JOBS share of the whole
        # batch's rate, so a wide max/min comes from how the jobs overlapped
        # (the first and the last ran among fewer others), not from one
        # being starved.
        "job_min_over_fair": (min(rates) * jobs / aggregate
                              if rates and aggregate else None),
        "job_span_s_min": min((j["span_s"] for j in ok
                               if j["span_s"] is not None), default=None),
        "job_span_s_max": max((j["span_s"] for j in ok
                               if j["span_s"] is not None), default=None),
        "jobs_waited": sum(1 for j in ok if j["wait_s"] > 0),
        "job_wait_s_max": max((j["wait_s"] for j in ok), default=None),
        "succeeded": len(ok),
        "verified": (None if args.no_verify
                     else sum(1 for j in batch if j["verified"])),
        "src_cpu_s": cpu1["source"] - cpu0["source"],
        "dst_cpu_s": cpu1["destination"] - cpu0["destination"],
        "src_cpu_s_per_gib": ((cpu1["source"] - cpu0["source"]) / gib
                              if gib else None),
        "dst_cpu_s_per_gib": ((cpu1["destination"] - cpu0["destination"])
                              / gib if gib else None),
        "migctl_cpu_s": migctl_s,
        "src_peak_rss": hwm["source"], "dst_peak_rss": hwm["destination"],
        # Every device's own memory out (the 1-job run's too): its state on
        # the source, state + load buffer on the destination (the emulated
        # device keeps the previous content as the next load's buffer).
        "state_bytes_total": state,
        "src_rss_excl_state": hwm["source"] - state,
        "dst_rss_excl_state": hwm["destination"] - 2 * state,
        "src_rss_prepared": rss_prepared["source"],
        "dst_rss_prepared": rss_prepared["destination"],
        "steal": dsteal / dall if dall else 0.0,
        # Other processes than the agents and the driver.
        "other_cpu": (max(0.0, (dproc - agents_ticks - migctl_s * CLK_TCK)
                          / dall) if dall else 0.0),
        "irq_cpu_s": dirq / CLK_TCK,
        # As in a single run (schedstat), over the batch.
        "agents_run_s": run_s, "agents_wait_s": wait_s,
        "cpu_wait_per_run": wait_s / run_s if run_s > 0 else None,
        "src_threads": by_name("source"), "dst_threads": by_name("destination"),
        "batch": batch,
    }


def run_evacuation_one(args, size, n, rep, reps, transport, workroot):
    log(f"bench: evacuation, {args.evacuate} jobs x {args.devices_per_job} "
        f"devices x {human_size(size)}, {n} stream(s), {transport}, run "
        f"{rep + 1}/{reps}")
    workdir = os.path.join(workroot, f"evac-{size}-{n}-{rep}-{transport}")
    os.makedirs(workdir)
    r = run_evacuation(args, size, n, rep, workdir, transport)
    log(f"  1 job {fmt(r['one_job_gbps'], '.2f')} GB/s, {r['jobs']} jobs "
        f"{fmt(r['aggregate_gbps'], '.2f')} GB/s (ratio "
        f"{fmt(r['ratio'], '.2f')}), per job {fmt(r['job_gbps_min'], '.3f')}"
        f"..{fmt(r['job_gbps_max'], '.3f')} GB/s, succeeded "
        f"{r['succeeded']}/{r['jobs']}, RSS excl. state src "
        f"{r['src_rss_excl_state'] / MIB:.0f} MiB, dst "
        f"{r['dst_rss_excl_state'] / MIB:.0f} MiB, other CPU "
        f"{r['other_cpu']:.0%}")
    for side in ("src", "dst"):
        busiest = ", ".join(f"{name} x{n} {cpu:.2f} s"
                            for name, n, cpu in r[f"{side}_threads"][:4])
        log(f"  {side} threads: {busiest}")
    return r


def print_evacuation_table(runs, out=sys.stdout):
    """A row per run, then a row of medians, for each (size, streams,
    transport)."""
    head = ["state", "devices/job", "jobs", "streams", "transport", "run",
            "1-job GB/s", "aggregate GB/s", "ratio", "job GB/s min",
            "median", "max", "max/min", "min/fair", "starts within ms",
            "succeeded",
            "verified", "CPU s/GiB src", "dst", "peak RSS MiB src", "dst",
            "excl. state src", "dst", "other CPU"]
    table = [head]
    figures = ("one_job_gbps", "aggregate_gbps", "ratio", "job_gbps_min",
               "job_gbps_median", "job_gbps_max", "job_gbps_max_over_min",
               "job_min_over_fair", "start_spread_s", "src_cpu_s_per_gib", "dst_cpu_s_per_gib",
               "src_peak_rss", "dst_peak_rss", "src_rss_excl_state",
               "dst_rss_excl_state")

    def count(v, jobs):
        return "-" if v is None else f"{v}/{jobs}"

    def row(r, label, succeeded, verified, other):
        return [human_size(r["state_bytes"]), str(r["devices_per_job"]),
                str(r["jobs"]), str(r["streams"]), r["transport"], label,
                fmt(r["one_job_gbps"], ".2f"), fmt(r["aggregate_gbps"], ".2f"),
                fmt(r["ratio"], ".2f"), fmt(r["job_gbps_min"], ".3f"),
                fmt(r["job_gbps_median"], ".3f"),
                fmt(r["job_gbps_max"], ".3f"),
                fmt(r["job_gbps_max_over_min"], ".2f"),
                fmt(r["job_min_over_fair"], ".2f"),
                fmt(r["start_spread_s"], ".0f", 1e3),
                count(succeeded, r["jobs"]), count(verified, r["jobs"]),
                fmt(r["src_cpu_s_per_gib"], ".2f"),
                fmt(r["dst_cpu_s_per_gib"], ".2f"),
                fmt(r["src_peak_rss"], ".0f", 1 / MIB),
                fmt(r["dst_peak_rss"], ".0f", 1 / MIB),
                fmt(r["src_rss_excl_state"], ".0f", 1 / MIB),
                fmt(r["dst_rss_excl_state"], ".0f", 1 / MIB),
                fmt(other, ".0%")]

    def key(r):
        return (r["state_bytes"], r["devices_per_job"], r["jobs"],
                r["streams"], TRANSPORTS.index(r["transport"]))

    for k in sorted({key(r) for r in runs}):
        rs = sorted((r for r in runs if key(r) == k), key=lambda r: r["rep"])
        for r in rs:
            table.append(row(r, str(r["rep"] + 1), r["succeeded"],
                             r["verified"], r["other_cpu"]))
        m = dict(rs[0])
        m.update({f: median([r[f] for r in rs]) for f in figures})
        verified = [r["verified"] for r in rs]
        table.append(row(
            m, "median", min(r["succeeded"] for r in rs),
            None if None in verified else min(verified),
            max(r["other_cpu"] for r in rs)))
    print_markdown(table, out)


def evacuation_main(args, sizes, streams, transports, reps, cpus_used,
                    json_out, workroot):
    """--evacuate: runs every (size, streams, rep, transport), prints the
    table; False when nothing ran."""
    runs, skipped = [], []
    ndev = (args.evacuate + 1) * args.devices_per_job
    for size in sizes:
        if not memory_fits(3 * ndev * size + MEMORY_MARGIN,
                           f"{human_size(size)}: {ndev} devices per agent "
                           f"need", skipped):
            continue
        for n in streams:
            for rep in range(reps):
                for transport in transports:
                    r = run_evacuation_one(args, size, n, rep, reps,
                                           transport, workroot)
                    runs.append(r)
                    if json_out:
                        json_out.write(json.dumps(
                            {"evacuation": r, "transport": transport}) + "\n")
                        json_out.flush()
    if not runs:
        return False
    where = f" (--cpus={args.cpus})" if args.cpus else ""
    print(f"migd host evacuation: {cpus_used} CPUs{where}; {args.evacuate} "
          f"jobs of {args.devices_per_job} devices between one pair of "
          f"agents, after one job alone on the same agents; GB/s = 1e9 B/s "
          f"of device state; aggregate = all jobs' bytes / first job's "
          f"start to last job's end; ratio = aggregate / 1-job; job GB/s = "
          f"each job's bytes / its transfer time; median row: medians "
          f"(succeeded, verified: worst run; other CPU: worst run)")
    print_evacuation_table(runs)
    for msg in skipped:
        print(f"skipped: {msg}")
    return True


# ---------------------------------------------------------------- main
def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--migd", required=True)
    p.add_argument("--migctl", required=True)
    p.add_argument("--tcp-ceiling", required=True)
    p.add_argument("--grpc-ceiling", required=True)
    p.add_argument("--device-pipe", required=True)
    p.add_argument("--evacuate-driver",
                   help="e2e/bench/evacuate, which starts the --evacuate "
                        "jobs from one process (required with --evacuate)")
    p.add_argument("--sizes", default=None,
                   help=f"state sizes (default {DEFAULT_SIZES}; --quick: "
                        f"{QUICK_SIZES}; --evacuate: {EVACUATE_SIZES}, "
                        f"per device)")
    p.add_argument("--evacuate", type=int, metavar="JOBS",
                   help="host evacuation instead: JOBS concurrent jobs "
                        "between one pair of agents, after one job alone on "
                        "the same agents (no ceilings)")
    p.add_argument("--devices-per-job", type=int, default=2,
                   help="--evacuate: devices of each job (default 2)")
    p.add_argument("--migd-arg", action="append", default=[],
                   help="extra flag for both agents (experiments only, e.g. "
                        "--transfer_memory_cap=16MiB)")
    p.add_argument("--streams", default=None,
                   help="stream counts, e.g. 1,4 (see --migctl-streams-arg; "
                        "default 1,2; --evacuate: 1, per job)")
    p.add_argument("--transport", default=",".join(TRANSPORTS),
                   help="plain (--insecure), mtls (mutual TLS) or both, run "
                        "interleaved (default plain,mtls)")
    p.add_argument("--pipe-ciphersuites", default="TLS_AES_128_GCM_SHA256",
                   help="TLS 1.3 cipher suites of the device pipe on mtls "
                        "(OpenSSL's list; default TLS_AES_128_GCM_SHA256)")
    p.add_argument("--pki", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools",
        "pki"), help="tools/pki, which mints the certificates for mtls "
                     "(default: the repository's)")
    p.add_argument("--reps", type=int, default=None,
                   help="repetitions per configuration (default 3; --quick: 1)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 64 MiB, one repetition")
    p.add_argument("--json-out", help="append every run as a JSON line here")
    p.add_argument("--agent-env", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="environment for the agents (experiments only)")
    p.add_argument("--migd-streams-arg", action="append", default=[],
                   help="migd flag template for N streams ({n})")
    p.add_argument("--migctl-streams-arg", action="append", default=[],
                   help="migctl migrate flag template for N streams ({n})")
    p.add_argument("--streams-args-for-one", action="store_true",
                   help="pass the stream templates for 1 stream too")
    p.add_argument("--cpus", metavar="LIST",
                   help="run the agents and the ceilings on these CPUs only "
                        "(taskset list: 0, 0-3, 0,2), to see how each scales "
                        "with cores")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the state digest comparison after each run")
    args = p.parse_args()

    if args.evacuate is not None and (args.evacuate < 1
                                      or args.devices_per_job < 1):
        raise SystemExit("bench: --evacuate and --devices-per-job need at "
                         "least 1")
    if args.evacuate and not args.evacuate_driver:
        raise SystemExit("bench: --evacuate needs --evacuate-driver "
                         "(e2e/bench/evacuate; run.sh passes it)")
    default_sizes = (EVACUATE_SIZES if args.evacuate
                     else QUICK_SIZES if args.quick else DEFAULT_SIZES)
    sizes = [parse_size(s) for s in (args.sizes or default_sizes).split(",")]
    streams = [int(s) for s in
               (args.streams or ("1" if args.evacuate else "1,2")).split(",")]
    transports = args.transport.split(",")
    for t in transports:
        if t not in TRANSPORTS:
            raise SystemExit(f"bench: bad --transport {t!r} (plain, mtls)")
    transports = [t for t in TRANSPORTS if t in transports]
    reps = args.reps or (1 if args.quick else 3)
    cpus_used = os.cpu_count()
    if args.cpus:
        cpus_used = cpu_list_size(args.cpus)
        if shutil.which("taskset") is None:
            raise SystemExit("bench: --cpus needs taskset (util-linux)")
        t = subprocess.run(["taskset", "-c", args.cpus, "true"],
                           capture_output=True, text=True)
        if t.returncode != 0:
            raise SystemExit(f"bench: --cpus={args.cpus}: "
                             f"{t.stderr.strip()}")
    tools = [args.migd, args.migctl, args.tcp_ceiling, args.grpc_ceiling,
             args.device_pipe]
    if args.evacuate:
        tools.append(args.evacuate_driver)
    if "mtls" in transports:
        tools.append(args.pki)
    for b in tools:
        if not os.access(b, os.X_OK):
            raise SystemExit(f"bench: {b} is not an executable")
    for n in streams:
        if n < 1:
            raise SystemExit(f"bench: bad stream count {n}")
        streams_args(args, n)  # fails now, not after the first sizes ran

    runs, ceilings, grpc_ceilings, pipes, skipped = [], [], [], [], []
    json_out = open(args.json_out, "a") if args.json_out else None
    workroot = tempfile.mkdtemp(prefix="migd-bench.")
    args.pki_dir = None
    try:
        if "mtls" in transports:
            # One PKI for the whole run (the agents read it at start).
            args.pki_dir = os.path.join(workroot, "pki")
            r = subprocess.run([args.pki, args.pki_dir], capture_output=True,
                               text=True)
            if r.returncode != 0:
                raise SystemExit(f"bench: {args.pki} {args.pki_dir} failed: "
                                 f"{r.stderr.strip()}")
        if args.evacuate:
            if not evacuation_main(args, sizes, streams, transports, reps,
                                   cpus_used, json_out, workroot):
                raise SystemExit("bench: nothing ran")
            return
        for size in sizes:
            if not memory_fits(3 * size + MEMORY_MARGIN,
                               f"{human_size(size)}: needs", skipped):
                continue
            for n in streams:
                for rep in range(reps):
                    for transport in transports:
                        r, c, g, pp = run_one(args, size, n, rep, reps,
                                              transport, workroot)
                        runs.append(r)
                        ceilings.append(c)
                        grpc_ceilings.append(g)
                        pipes.append(pp)
                        if json_out:
                            ratio = (r["gbps"] / c["gbps"] if c["gbps"]
                                     else None)
                            grpc_ratio = (r["gbps"] / g["gbps"] if g["gbps"]
                                          else None)
                            pipe_ratio = (r["gbps"] / pp["gbps"]
                                          if pp["gbps"] else None)
                            json_out.write(json.dumps(
                                {"run": r, "transport": transport, "tcp": c,
                                 "ratio": ratio, "grpc": g,
                                 "grpc_ratio": grpc_ratio, "pipe": pp,
                                 "pipe_ratio": pipe_ratio}) + "\n")
                            json_out.flush()
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
        if json_out:
            json_out.close()

    if not runs:
        raise SystemExit("bench: nothing ran")
    where = f" (--cpus={args.cpus})" if args.cpus else ""
    print(f"migd transfer benchmark: {cpus_used} CPUs{where}, medians of "
          f"{reps} run(s); GB/s = 1e9 B/s of device state; steal and other "
          f"CPU: worst run (other CPU = share of the machine used by other "
          f"processes during the migration); transport: plain = --insecure, "
          f"mtls = mutual TLS on the control calls and the data streams (the "
          f"device pipe and the gRPC ceiling likewise; the TCP ceiling is "
          f"plaintext on both)")
    rows = summarize(runs, ceilings, grpc_ceilings, pipes)
    print_table(rows)
    print()
    print("mutual TLS against plaintext (medians; mtls/plain: throughput "
          "ratio):")
    if not print_transport_comparison(rows):
        print("(needs --transport=plain,mtls)")
    tls_note = pipe_tls_summary(pipes)
    if tls_note:
        print(tls_note)
    for msg in skipped:
        print(f"skipped: {msg}")


if __name__ == "__main__":
    main()
