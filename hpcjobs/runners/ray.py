"""A Ray cluster inside the job's allocation: the head on the step's first node, a worker on
every other node, each advertising its fast-network address; torn down with the step.

As in Ray's Slurm guide (slurm-basic.sh), but right for a shared cluster:

- every port a Ray node listens on comes from one block of :data:`BLOCK` ports derived from the
  job and step ids (:func:`home_block`), in 1024-32767 without Slurm's 6817-6820, as
  hpcjobs.launch derives MASTER_PORT: two Ray clusters on one node (two jobs, or two steps)
  never share a port, which Ray's fixed defaults (6379, 10001, 8265, 52365, 44217) and its one
  worker range make them do (ray#10154, ray#22663). A node whose block is already taken (a
  foreign listener, or a job whose ids map to the same block) moves its node-local ports to the
  next free block and says so; the head's GCS port is the one all nodes must know, so it stays;
- each node's session directory is its own (``/tmp/ray-JOB-STEP-NODE``): the sandbox's nodes
  share one host, and jobs share nodes;
- Ray gets the CPUs Slurm gave the job on the node (``--num-cpus`` from SLURM_CPUS_ON_NODE) and,
  where Slurm states the job's memory, 30% of it for the object store, not the whole node's;
- the head waits until the GCS counts every node (and ``ray status`` shows them), with a
  deadline, and names the nodes that did not join; then ``on_head`` runs (the ray kind's driver,
  the vllm kind's server) with RAY_ADDRESS set, and its exit code is the step's;
- a node is stopped by ending its own ``ray start --block`` (never ``ray stop``, which ends every
  Ray process it can see: on the sandbox, all nodes' and all jobs'); workers leave when the head
  goes, with exit 0, so the step's exit code is the head's.

Used by the ray kind (``python -m hpcjobs.runners.ray cluster -- DRIVER ARGS``) and by the vllm
kind's Ray backend (hpcjobs/runners/vllm.py). Runs on the compute nodes: standard library,
hpcjobs.errors and hpcjobs.launch only; Ray itself only in the child processes, apart from one
optional in-process read of the GCS's node table.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from hpcjobs.launch import slurmenv

NODES_TIMEOUT = 300  # seconds for every node to join (Ray's own start takes 5-20 s a node)

# --- ports ------------------------------------------------------------------------------------
# A block: 16 named ports (11 used, 5 spare) and 240 worker ports. Ray binds one worker port per
# worker process (each task worker, each actor, each driver) on that node: 240 is far above the
# CPUs of the nodes this is for, and a node that needs more says "No available ports".
BLOCK = 256
STEP_SLOTS = 4  # steps 0-3 of a job get distinct blocks (the ray kind runs one Ray step)
OFFSETS = {
    "gcs": 0,  # --port (head only; every node must know it)
    "ray_client_server": 1,  # head only
    "dashboard": 2,  # head only (reserved even when the dashboard is off)
    "autoscaler_metrics": 3,  # head only: AUTOSCALER_METRIC_PORT (Ray's default 44217)
    "node_manager": 4,
    "object_manager": 5,
    "runtime_env_agent": 6,
    "dashboard_agent_grpc": 7,
    "dashboard_agent_listen": 8,  # Ray's default 52365
    "metrics_export": 9,
    "dashboard_metrics": 10,  # head only: DASHBOARD_METRIC_PORT (Ray's default 44227)
}
HEAD_ONLY = ("gcs", "ray_client_server", "dashboard", "autoscaler_metrics", "dashboard_metrics")
# The two ports Ray takes from the environment, not from `ray start` flags (both head only).
ENV_PORTS = {"autoscaler_metrics": "AUTOSCALER_METRIC_PORT", "dashboard_metrics": "DASHBOARD_METRIC_PORT"}
WORKERS_FROM = 16
# Head-only ports whose Ray defaults a worker's `ray start` checks all the same (see flags()).
WORKER_CHECKED = ("ray_client_server", "dashboard")


def _blocks() -> tuple[int, ...]:
    """Start ports of the usable blocks: 1024 + k*256 up to 32767, without the one holding
    Slurm's daemon ports (6817-6820)."""
    count = (slurmenv.PORT_MAX + 1 - slurmenv.PORT_MIN) // BLOCK
    starts = [slurmenv.PORT_MIN + k * BLOCK for k in range(count)]
    s = slurmenv.SLURM_PORTS
    return tuple(b for b in starts if b + BLOCK <= s.start or b >= s.stop)


BLOCKS = _blocks()  # 123 blocks


def home_block(job_id: int, step_id: int) -> int:
    """The block of a step: the (job*4 + step mod 4)-th usable block, cyclically.

    Two steps share it only if (job1-job2)*4 + (step1-step2) is a multiple of 123: never for
    the same step of jobs fewer than 123 ids apart, nor for steps 0-3 of jobs fewer than 31 apart.
    """
    return (job_id * STEP_SLOTS + step_id % STEP_SLOTS) % len(BLOCKS)


@dataclass(frozen=True)
class RayPorts:
    """The ports of one Ray node: ``gcs`` from the step's home block, the rest from ``block``."""

    home: int  # index of the step's block (its first port is the GCS port)
    block: int  # index of the block this node's own ports come from (home unless it was taken)

    @property
    def gcs(self) -> int:
        return BLOCKS[self.home] + OFFSETS["gcs"]

    def port(self, name: str) -> int:
        return self.gcs if name == "gcs" else BLOCKS[self.block] + OFFSETS[name]

    @property
    def workers(self) -> tuple[int, int]:
        return BLOCKS[self.block] + WORKERS_FROM, BLOCKS[self.block] + BLOCK - 1

    def named(self, head: bool) -> dict[str, int]:
        """Every named port this node listens on (the GCS and the head's own on the head)."""
        return {n: self.port(n) for n in OFFSETS if head or n not in HEAD_ONLY}

    def local(self, head: bool) -> list[tuple[str, int]]:
        """What this node binds itself (all but the GCS port), worker range included."""
        lo, hi = self.workers
        return ([(n, p) for n, p in self.named(head).items() if n != "gcs"]
                + [("worker", p) for p in range(lo, hi + 1)])

    def flags(self, head: bool) -> list[str]:
        """``ray start`` flags for these ports (the GCS's --port on the head only)."""
        out = []
        for name, port in self.named(head).items():
            if name not in ENV_PORTS:
                out += ["--port" if name == "gcs" else f"--{name.replace('_', '-')}-port", str(port)]
        if not head:
            # A worker binds neither, but `ray start` still checks its worker range against
            # their defaults (8265, 10001: RayParams.update_pre_selected_port) and refuses to
            # start when a block's range covers one ("worker_ports is trying to use a port
            # number 8265"): name the block's own reserved ports instead.
            for name in WORKER_CHECKED:
                out += [f"--{name.replace('_', '-')}-port", str(self.port(name))]
        lo, hi = self.workers
        return out + ["--min-worker-port", str(lo), "--max-worker-port", str(hi)]

    def env(self, head: bool) -> dict[str, str]:
        """The ports Ray reads from the environment (the head's two metrics servers)."""
        return {var: str(self.port(name)) for name, var in ENV_PORTS.items()} if head else {}


def port_in_use(port: int) -> bool:
    """Whether a listener could not bind ``port`` on this node (any address, IPv4 or IPv6)."""
    from hpcjobs.launch.__main__ import port_taken

    return port_taken(port) is not None


def choose_ports(job_id: int, step_id: int, *, head: bool,
                 in_use: Callable[[int], bool] = port_in_use) -> tuple[RayPorts, str | None]:
    """This node's ports and, when its home block was taken, a note saying where they went.

    The GCS port is always the home block's (the workers find the head there); on the head it
    must be free (BadInput otherwise). The node's own ports come from the first block, from home
    on, in which every one of them is free.
    """
    from hpcjobs.errors import BadInput

    home = home_block(job_id, step_id)
    first = RayPorts(home, home)
    if head and in_use(first.gcs):
        raise BadInput("Ray GCS port", f"{first.gcs} (job {job_id} step {step_id}'s) is in use on "
                       "this node", "another program holds it; resubmit (a new job id moves it)")
    taken = None
    for k in range(len(BLOCKS)):
        ports = RayPorts(home, (home + k) % len(BLOCKS))
        busy = next(((n, p) for n, p in ports.local(head) if in_use(p)), None)
        if busy is None:
            if taken is None:
                return ports, None
            lo, hi = BLOCKS[ports.block], BLOCKS[ports.block] + BLOCK - 1
            return ports, (f"Ray ports of job {job_id} step {step_id}: block {BLOCKS[home]}-"
                           f"{BLOCKS[home] + BLOCK - 1} is taken on this node (port {taken[1]}, "
                           f"{taken[0]}); this node uses {lo}-{hi}")
        taken = taken or busy
    raise BadInput("Ray ports", "no block of 256 free ports in 1024-32767 on this node",
                   "free ports on the node")


# --- the cluster --------------------------------------------------------------------------------

def _say(msg: str) -> None:
    print(f"hpcjobs: {msg}", flush=True)


def _ray_bin(python: str) -> str:
    import shutil

    here = os.path.join(os.path.dirname(python), "ray")
    return here if os.path.exists(here) else (shutil.which("ray") or "ray")


def ray_active_nodes(status: str) -> list[str]:
    """Node ids in the "Active:" section of ``ray status`` (the autoscaler's view, which lags
    the GCS by a few seconds: the one users look at)."""
    import re

    if "Active:" not in status:
        return []
    active = status.split("Active:", 1)[1].split("Pending:", 1)[0]
    return re.findall(r"^\s*\d+ (node_[0-9a-f]+)\s*$", active, re.M)


def _ray_status(ray: str, head: str, env: dict) -> str:
    import subprocess

    try:
        r = subprocess.run([ray, "status", "--address", head], capture_output=True, text=True,
                           env=env, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return ""
    return r.stdout if r.returncode == 0 else ""


class _Gcs:
    """The GCS's table of alive nodes (their addresses), read in this process.

    ``ray._raylet.GcsClient`` is what ``ray status`` itself uses; it is not a public API, so if
    it is missing or fails, :meth:`alive` returns None and the caller counts with ``ray status``.
    Reading it costs ~1 ms, a ``ray status`` ~1.5 s of CPU (while the nodes start on the same
    cores)."""

    def __init__(self, address: str) -> None:
        self.address, self.client, self.broken = address, None, False

    def alive(self) -> set[str] | None:
        if self.broken:
            return None
        try:
            if self.client is None:
                from ray._raylet import GcsClient

                self.client = GcsClient(address=self.address)
            info = self.client.get_all_node_info(timeout=5)
            return {n.node_manager_address for n in info.values() if n.state == 0}  # 0: ALIVE
        except Exception:  # any failure: fall back to `ray status`
            self.broken = True
            return None


def expected_nodes(env: dict, step: slurmenv.Step) -> list[tuple[str, str | None]]:
    """(node name, the address it will advertise) for every node of the step, in Slurm's order:
    the profile's fast-network address, else what the name resolves to, else None."""
    import socket

    from hpcjobs.errors import BadInput
    from hpcjobs.launch import profile

    try:
        prof = profile.load(env)
    except BadInput:
        prof = None
    out = []
    for name in slurmenv.expand(step.nodelist):
        addr = prof.address(name) if prof else None
        if not addr:
            try:
                addr = socket.gethostbyname(name)
            except OSError:
                addr = None
        out.append((name, addr))
    return out


def _reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _stop(child) -> None:
    """End a ``ray start --block`` child: on SIGTERM it stops the Ray processes it started, and
    only those (``ray stop`` would kill every Ray process it can see: on the sandbox, where all
    nodes share one host, the other nodes' too)."""
    import subprocess

    if child is not None and child.poll() is None:
        child.terminate()
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


JOINED = "Ray runtime started."  # what `ray start` prints once its node is registered
REJOINS = 3  # a node whose Ray ends mid-job while the head is up joins again this often


def _start_echoing(cmd: list[str], env: dict, joined: list) -> object:
    """``cmd`` as a child whose output is copied to ours line by line; ``joined[0]`` turns
    True when it prints :data:`JOINED`."""
    import subprocess
    import threading

    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, errors="replace", bufsize=1)

    def copy() -> None:
        for line in child.stdout:
            if JOINED in line:
                joined[0] = True
            sys.stdout.write(line)
            sys.stdout.flush()

    threading.Thread(target=copy, daemon=True).start()
    return child


def _worker(cmd: list[str], env: dict, head_host: str, gcs_port: int, node: str,
            timeout: float) -> int:
    """Join the head and stay until it goes away (then exit 0, so the step's exit code is the
    head's). Until it has joined, a ``ray start`` that ends is started again until ``timeout``
    (the head's own deadline): the head may still be starting, and on a loaded node Ray's own
    30 s wait for its raylet to register can run out (ray#59778: nodes that start together)."""
    import signal
    import time

    holder: list = [None]

    def on_term(signum, _frame):
        _stop(holder[0])
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    head = f"{head_host}:{gcs_port}"
    deadline = time.monotonic() + timeout
    failures, rejoins, head_answered = 0, 0, False
    while True:
        joined = [False]
        child = holder[0] = _start_echoing(cmd, env, joined)
        misses = 0
        while child.poll() is None:
            time.sleep(2)
            if not joined[0]:
                continue
            if _reachable(head_host, gcs_port):
                misses = 0
            else:
                misses += 1
                if misses >= 2:  # the head stopped: the job is ending
                    _stop(child)
                    return 0
        rc = child.returncode
        head_up = _reachable(head_host, gcs_port)
        if joined[0]:
            if not head_up:
                return 0  # the head went away while this node's Ray was stopping with it
            rejoins += 1
            if rejoins > REJOINS:
                _say(f"{node}: Ray on this node ended {rejoins} times while the head {head} is up; "
                     "giving up on this node")
                return 1
            _say(f"{node}: Ray on this node ended with exit code {rc} while the head {head} is "
                 "up; joining again")
            deadline, failures = time.monotonic() + timeout, 0
            continue
        failures += 1
        head_answered |= head_up
        if time.monotonic() > deadline:
            why = (f"`ray start` ended {failures} time(s), last with exit code {rc}, while the "
                   f"Ray head {head} answered (Ray's messages above say why)" if head_answered
                   else f"the Ray head {head} did not answer")
            _say(f"{node}: could not join the Ray cluster within {timeout:.0f} s: {why}")
            return 1
        if head_up:
            _say(f"{node}: `ray start` ended with exit code {rc} while the head {head} answers; "
                 "starting it again")
        time.sleep(3)


def _wait_for_nodes(child, ray: str, head: str, head_host: str, gcs_port: int, env: dict,
                    expected: list[tuple[str, str | None]], timeout: float) -> tuple[str, set | None, int]:
    """Poll until every node is alive in the GCS and active in ``ray status``, the deadline
    passes or the head's Ray exits. Returns (last ray status, alive addresses or None, count)."""
    import time

    nnodes = len(expected)
    gcs = _Gcs(head)
    start = time.monotonic()
    status, alive, count = "", None, 0
    while time.monotonic() - start < timeout and child.poll() is None:
        if not _reachable(head_host, gcs_port):  # the GCS is not listening yet
            time.sleep(1)
            continue
        alive = gcs.alive()
        if alive is not None and len(alive) < nnodes:
            count = len(alive)
            time.sleep(1)
            continue
        # Everyone is in the GCS (or it cannot be read): wait for `ray status` to agree.
        status = _ray_status(ray, head, env)
        count = len(ray_active_nodes(status))
        if count >= nnodes:
            break
        time.sleep(2)
    return status, alive, count


def run_cluster(env: dict, *, python: str, step: slurmenv.Step, head_host: str, ip: str | None,
                on_head: Callable[[str, dict], int], nodes_timeout: float = NODES_TIMEOUT) -> int:
    """This node's part of a Ray cluster: ``ray start --block`` on every node of ``step``; on
    the head (node 0), once all nodes are active, ``on_head(head_address, env)`` runs and its
    return value is this task's exit code (the cluster goes away with it).

    ``head_host`` is the first node's fast-network address (MASTER_ADDR), ``ip`` this node's
    (None: Ray's own choice). Every port comes from :func:`choose_ports`.
    """
    import subprocess
    import time

    from hpcjobs.errors import BadInput

    head = step.node_rank == 0
    node = step.node_name or f"node {step.node_rank}"
    try:
        ports, note = choose_ports(step.job_id, step.step_id, head=head)
    except BadInput as e:
        _say(f"{node}: {e}")
        return 1
    if note:
        _say(f"{node}: {note}")
    elif head:
        lo = BLOCKS[ports.block]
        _say(f"Ray ports of job {step.job_id} step {step.step_id}: {lo}-{lo + BLOCK - 1}, GCS "
             f"{ports.gcs} (python -m hpcjobs.runners.ray ports {step.job_id} {step.step_id})")
    address = f"{head_host}:{ports.gcs}"
    ray = _ray_bin(python)
    # A per-job, per-step, per-node temp dir: nodes of one host (the sandbox) and jobs of one
    # node must not share /tmp/ray's session directory. Short: Ray's socket paths must fit
    # 107 bytes.
    temp = f"/tmp/ray-{step.job_id}-{step.step_id}-{step.node_rank}"
    env = {**env, **ports.env(head),
           # No graceful drain on SIGTERM (Ray Serve's need, not ours): with the head gone the
           # drain RPC can only time out (30 s), and srun would kill the task first.
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": env.get("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")}
    env.pop("RAY_ADDRESS", None)  # `ray start` must not take a stale one for the cluster's
    # Plain log lines (Ray colours them even when stdout is a file).
    common = ["--block", "--temp-dir", temp, "--disable-usage-stats", "--log-color", "false",
              *ports.flags(head), *resources(env)]
    common += ["--node-ip-address", ip] if ip else []
    if not head:
        return _worker([ray, "start", "--address", address, *common], env, head_host, ports.gcs,
                       node, nodes_timeout)
    expected = expected_nodes(env, step)
    started = time.monotonic()
    child = subprocess.Popen([ray, "start", "--head", "--include-dashboard=false", *common], env=env)
    try:
        status, alive, count = _wait_for_nodes(child, ray, address, head_host, ports.gcs, env,
                                               expected, nodes_timeout)
        if child.poll() is not None:
            _say(f"{node}: `ray start --head` exited with code {child.returncode}")
            return child.returncode or 1
        print(status, end="", flush=True)
        n = len(expected)
        if count < n:
            if alive is not None:
                missing = [f"{name} ({addr})" if addr else name for name, addr in expected
                           if addr not in alive]
                who = (", ".join(missing) or f"{n - len(alive)} node(s)") + (
                    " did not join" if missing else " not yet active in `ray status`")
            else:
                who = f"{n - count} of {', '.join(name for name, _ in expected)} did not join"
            _say(f"Ray cluster: {who} within {nodes_timeout:.0f} s ({count} of {n} nodes up; "
                 "each node's own lines above say why)")
            return 1
        _say(f"Ray cluster up: `ray status` shows {count} of {n} nodes active; head {address} "
             f"({time.monotonic() - started:.1f} s after this node's `ray start`)")
        return on_head(address, {**env, "RAY_ADDRESS": address})
    finally:
        _stop(child)


def node_memory_mb() -> int:
    """The node's physical memory (MemTotal) in MB, 0 if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def resources(env: dict, node_mb: int | None = None) -> list[str]:
    """``--num-cpus`` and ``--object-store-memory`` from what Slurm gave the job on this node.

    Ray would take the whole node's CPUs and 30% of its memory: two jobs sharing a node would
    each count on all of it. SLURM_CPUS_ON_NODE is the job's CPUs here; the memory is
    SLURM_MEM_PER_NODE, or SLURM_MEM_PER_CPU x the CPUs, in MB, when Slurm sets one (it sets
    neither for a default allocation: then Ray's own default stays). Never more than the node
    really has (``node_mb``, MemTotal): a slurm.conf can promise more (the sandbox's nodes
    share one host), and Ray refuses to start when its object store leaves no memory for tasks.
    """
    out = []
    cpus = env.get("SLURM_CPUS_ON_NODE", "")
    if cpus.isdigit() and int(cpus) > 0:
        out += ["--num-cpus", cpus]
    mem = env.get("SLURM_MEM_PER_NODE", "")
    per_cpu = env.get("SLURM_MEM_PER_CPU", "")
    mb = int(mem) if mem.isdigit() else (int(per_cpu) * int(cpus) if per_cpu.isdigit() and
                                         cpus.isdigit() else 0)
    if mb > 0:
        node_mb = node_memory_mb() if node_mb is None else node_mb
        if node_mb > 0:
            mb = min(mb, node_mb)
        # Ray's default share (30%), at least its 75 MB minimum.
        out += ["--object-store-memory", str(max(75 * 1024 * 1024, int(mb * 1024 * 1024 * 0.3)))]
    return out


# --- the ray kind's driver ----------------------------------------------------------------------

def run_driver(cmd: list[str], env: dict) -> int:
    """The driver as a child on the head, SIGTERM/SIGINT/SIGHUP passed on; its exit code (128 +
    the signal if a signal ended it)."""
    import signal
    import subprocess

    child = subprocess.Popen(cmd, env=env)

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            rc = child.wait()
            break
        except InterruptedError:
            continue
    return 128 - rc if rc < 0 else rc


def cluster_main(argv: list[str], env: dict) -> int:
    """``cluster [--nodes-timeout S] -- DRIVER [ARGS]``: this node's part of the ray kind's job."""
    import argparse

    from hpcjobs.errors import BadInput
    from hpcjobs.launch import profile

    p = argparse.ArgumentParser(prog="python -m hpcjobs.runners.ray cluster")
    p.add_argument("--nodes-timeout", type=float,
                   default=env.get("HPCJOBS_RAY_NODES_TIMEOUT") or NODES_TIMEOUT,
                   help=f"seconds for every node to join (default {NODES_TIMEOUT})")
    p.add_argument("driver", nargs=argparse.REMAINDER, help="-- DRIVER [ARGS]: runs on the head")
    a = p.parse_args(argv)
    driver = a.driver[1:] if a.driver[:1] == ["--"] else a.driver
    if not driver:
        print("hpcjobs: no driver given (-- DRIVER [ARGS...])", file=sys.stderr)
        return 2
    if a.nodes_timeout <= 0:
        print(f"hpcjobs: --nodes-timeout {a.nodes_timeout:g}: must be above 0 seconds", file=sys.stderr)
        return 2
    if not env.get("MASTER_ADDR"):
        print("hpcjobs: MASTER_ADDR is not set: run this under srun python -m hpcjobs.launch",
              file=sys.stderr)
        return 2
    try:
        step = slurmenv.read(env)
        ip = profile.load(env).address(step.node_name)
    except BadInput as e:
        print(f"hpcjobs: {e}", file=sys.stderr)
        return 2
    if not ip and step.node_rank == 0:
        ip = env["MASTER_ADDR"]  # the head's address is the one every node was told

    def drive(head: str, run_env: dict) -> int:
        rc = run_driver(driver, run_env)
        _say(f"Ray driver exited with code {rc}; stopping the Ray cluster")
        return rc

    return run_cluster(dict(env), python=sys.executable, step=step, head_host=env["MASTER_ADDR"],
                       ip=ip, on_head=drive, nodes_timeout=a.nodes_timeout)


def ports_main(argv: list[str], env: dict) -> int:
    """``ports [JOB_ID [STEP_ID]]``: the ports a step's Ray nodes get (default: this job's)."""
    job = argv[0] if argv else env.get("SLURM_JOB_ID", "")
    stp = argv[1] if len(argv) > 1 else env.get("SLURM_STEP_ID", "0")
    if not (job.isdigit() and stp.isdigit()):
        print("usage: python -m hpcjobs.runners.ray ports JOB_ID [STEP_ID]", file=sys.stderr)
        return 2
    ports = RayPorts(home_block(int(job), int(stp)), home_block(int(job), int(stp)))
    lo, hi = ports.workers
    print(f"job {job} step {stp}: block {BLOCKS[ports.home]}-{BLOCKS[ports.home] + BLOCK - 1}")
    for name, port in ports.named(head=True).items():
        print(f"  {port:5d}  {name}{' (head only)' if name in HEAD_ONLY else ''}")
    print(f"  {lo}-{hi}  workers")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    usage = ("usage: python -m hpcjobs.runners.ray cluster [--nodes-timeout S] -- DRIVER [ARGS]\n"
             "       python -m hpcjobs.runners.ray ports [JOB_ID [STEP_ID]]")
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    if argv[0] == "cluster":
        return cluster_main(argv[1:], os.environ)
    if argv[0] == "ports":
        return ports_main(argv[1:], os.environ)
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
