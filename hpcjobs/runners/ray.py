"""A Ray cluster inside the job's allocation: the head on the step's first node, a worker on
every other node, each advertising its fast-network address; torn down with the step.

As in Ray's Slurm guide (slurm-basic.sh), but per job: the GCS port is the step's MASTER_PORT
(from job and step, hpcjobs.launch), every node's session directory is its own
(``/tmp/ray-JOB-NODE``), and the head waits until ``ray status`` counts every node before the
payload runs. Used by the vllm kind's Ray backend (hpcjobs/runners/vllm.py); runs on the compute
nodes, standard library only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

RAY_NODES_TIMEOUT = 300  # seconds for every node to join (Ray's own start takes 5-20 s a node)


def _say(msg: str) -> None:
    print(f"hpcjobs: {msg}", flush=True)


def _ray_bin(python: str) -> str:
    import shutil

    here = os.path.join(os.path.dirname(python), "ray")
    return here if os.path.exists(here) else (shutil.which("ray") or "ray")


def ray_active_nodes(status: str) -> list[str]:
    """Node ids in the "Active:" section of ``ray status`` (the autoscaler's view, which lags
    ``ray.nodes()`` by a few seconds: the one users look at)."""
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


def _ray_worker(cmd: list[str], env: dict, head_host: str, head_port: int) -> int:
    """Join the head and stay until it goes away (then exit 0, so the step ends cleanly)."""
    import signal
    import subprocess
    import time

    holder: list = [None]

    def on_term(signum, _frame):
        _stop(holder[0])
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    deadline = time.monotonic() + RAY_NODES_TIMEOUT
    while True:
        child = holder[0] = subprocess.Popen(cmd, env=env)
        seen_head, misses = False, 0
        while child.poll() is None:
            time.sleep(2)
            if _reachable(head_host, head_port):
                seen_head, misses = True, 0
            elif seen_head:
                misses += 1
                if misses >= 2:  # the head stopped: the job is ending
                    _stop(child)
                    return 0
        if seen_head:
            return 0
        if time.monotonic() > deadline:
            _say(f"could not join the Ray head {head_host}:{head_port} within {RAY_NODES_TIMEOUT} s")
            return 1
        time.sleep(3)  # the head is still starting: try again


def ray_worker_ports(gcs_port: int) -> list[str]:
    """Ray's worker ports, away from the GCS port: Ray refuses a GCS port inside its default
    worker range 10002-19999 ("... is trying to use a port number ... used by other
    components"), and hpcjobs.launch's MASTER_PORT can land anywhere in 1024-32767."""
    lo, hi = (10002, 19999) if not 10002 <= gcs_port <= 19999 else (20002, 29999)
    if lo <= gcs_port <= hi:  # cannot happen with the two ranges above; kept as a guard
        lo, hi = 40002, 49999
    return ["--min-worker-port", str(lo), "--max-worker-port", str(hi)]


def run_cluster(env: dict, *, python: str, nnodes: int, rank: int, head_host: str, head_port: int,
                ip: str, on_head: Callable[[str, dict], int],
                nodes_timeout: float = RAY_NODES_TIMEOUT) -> int:
    """This node's part of a Ray cluster: ``ray start --block`` on every node; on the head, once
    all ``nnodes`` are active, ``on_head(head_address, env)`` runs and its return value is the
    step's exit code (the cluster goes away with it)."""
    import subprocess
    import time

    head = f"{head_host}:{head_port}"
    ray = _ray_bin(python)
    # A per-job, per-node temp dir: nodes of one host (the sandbox) and jobs of one node must not
    # share /tmp/ray's session directory. Short: Ray's socket paths must fit 107 bytes.
    temp = f"/tmp/ray-{env.get('SLURM_JOB_ID', os.getpid())}-{rank}"
    # No graceful drain on SIGTERM (Ray Serve's need, not ours): with the head gone the drain
    # RPC can only time out (30 s), and srun --wait would kill the task first.
    env = {**env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": env.get("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")}
    common = ["--block", "--temp-dir", temp, "--disable-usage-stats",
              *ray_worker_ports(head_port)]
    common += ["--node-ip-address", ip] if ip else []
    if rank > 0:
        return _ray_worker([ray, "start", "--address", head, *common], env, head_host, head_port)
    child = subprocess.Popen([ray, "start", "--head", "--port", str(head_port),
                              "--include-dashboard=false", *common], env=env)
    try:
        start = time.monotonic()
        status, alive = "", []
        while time.monotonic() - start < nodes_timeout and child.poll() is None:
            if not _reachable(head_host, head_port):  # GCS not listening yet
                time.sleep(1)
                continue
            status = _ray_status(ray, head, env)
            alive = ray_active_nodes(status)
            if len(alive) >= nnodes:
                break
            time.sleep(2)
        if child.poll() is not None:
            _say(f"ray start --head exited with code {child.returncode}")
            return child.returncode or 1
        print(status, end="", flush=True)
        if len(alive) < nnodes:
            _say(f"Ray cluster: `ray status` shows {len(alive)} of {nnodes} nodes after "
                 f"{nodes_timeout:.0f} s")
            return 1
        _say(f"Ray cluster up: `ray status` shows {len(alive)} of {nnodes} nodes active; head {head}")
        return on_head(head, {**env, "RAY_ADDRESS": head})
    finally:
        _stop(child)
