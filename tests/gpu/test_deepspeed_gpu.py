"""DeepSpeed ZeRO-3 on a GPU machine (written for 2x H100): NCCL, bf16, with and without CPU
offload, one process per GPU started through ``python -m hpcjobs.launch`` with the Slurm
variables srun would set (the GPU host has no Slurm). Prints the loss per step, the step time
and the peak GPU memory of each run, and a Markdown table for docs/benchmarks.md.

    python tests/gpu/test_deepspeed_gpu.py                  # all runs, table at the end
    python tests/gpu/test_deepspeed_gpu.py --runs none      # one configuration
    python -m pytest -q tests/gpu/test_deepspeed_gpu.py     # the same, as a test (marked gpu)

Each run uses the kind's own config generator (``python -m hpcjobs.runners.deepspeed
--write-config``) and examples/ds_zero3.py, exactly what a `deepspeed` job runs per task.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# name -> generator options (bf16 everywhere: H100 has it)
RUNS = {
    "none": [],
    "optimizer-cpu": ["--offload-optimizer", "cpu"],
    "optimizer+param-cpu": ["--offload-optimizer", "cpu", "--offload-param", "cpu"],
}
# A rank that has not finished this long after start is stuck (a peer died): stop the run.
RUN_TIMEOUT = float(os.environ.get("DS_GPU_RUN_TIMEOUT", "170"))
# ~1.3B parameters: big enough that ZeRO-3 partitioning and offload show in memory and time.
MODEL = ["--vocab", "32000", "--d-model", "2048", "--layers", "24", "--heads", "16",
         "--seq-len", "1024"]


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def task_env(rank: int, nprocs: int, job_id: int, cfg: Path) -> dict:
    """What srun gives task ``rank`` of a one-node step, plus what the deepspeed template sets."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_"))}
    env.update({
        "SLURM_JOB_ID": str(job_id), "SLURM_STEP_ID": "0",
        "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0",
        "SLURM_NTASKS": str(nprocs), "SLURM_STEP_NUM_TASKS": str(nprocs),
        "SLURM_NNODES": "1", "SLURM_STEP_NUM_NODES": "1", "SLURM_JOB_NUM_NODES": "1",
        "SLURM_TASKS_PER_NODE": str(nprocs), "SLURM_STEP_TASKS_PER_NODE": str(nprocs),
        "SLURM_JOB_NODELIST": "localhost", "SLURM_STEP_NODELIST": "localhost",
        "SLURMD_NODENAME": "localhost",
        "HPCJOBS_KIND": "deepspeed", "HPCJOBS_DS_CONFIG": str(cfg),
        "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1", "PYTHONPATH": os.pathsep.join(
            [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // nprocs))),
        # One host: NCCL bootstraps over loopback (the launcher keeps a value that is set).
        "NCCL_SOCKET_IFNAME": os.environ.get("NCCL_SOCKET_IFNAME", "lo"),
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR",
                                               str(Path.home() / ".cache" / "torch_extensions")),
    })
    # As the template does: DeepSpeed's op builder cannot parse "9.0a".
    if env.get("TORCH_CUDA_ARCH_LIST"):
        env["TORCH_CUDA_ARCH_LIST"] = re.sub(r"(\d+\.\d+)[a-z]+", r"\1", env["TORCH_CUDA_ARCH_LIST"])
    return env


def run(name: str, gen_args: list[str], nprocs: int, steps: int, workdir: Path, job_id: int,
        extra: list[str], precision: str = "bf16") -> dict:
    cfg = workdir / f"ds_config-{name}.json"
    subprocess.run([sys.executable, "-m", "hpcjobs.runners.deepspeed", "--write-config", str(cfg),
                    "--precision", precision, "--micro-batch", "8", *gen_args], check=True, cwd=ROOT)
    cmd = [sys.executable, "-m", "hpcjobs.launch", "--", sys.executable,
           str(ROOT / "examples" / "ds_zero3.py"), "--steps", str(steps), *MODEL, *extra]
    logs = [workdir / f"{name}.rank{r}.log" for r in range(nprocs)]
    start = time.monotonic()
    files = [log.open("w") for log in logs]
    try:
        procs = [subprocess.Popen(cmd, cwd=ROOT, env=task_env(r, nprocs, job_id, cfg),
                                  stdout=files[r], stderr=subprocess.STDOUT)
                 for r in range(nprocs)]
        rcs = []
        deadline = time.monotonic() + RUN_TIMEOUT
        for p in procs:
            try:
                rcs.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                # A rank that died leaves the others waiting in a collective: dump their
                # Python stacks (PYTHONFAULTHANDLER) and stop them instead of hanging.
                for q in procs:
                    if q.poll() is None:
                        q.send_signal(signal.SIGABRT)
                time.sleep(2)
                for q in procs:
                    if q.poll() is None:
                        q.kill()
                rcs.append(p.wait())
    finally:
        for f in files:
            f.close()
    wall = time.monotonic() - start
    out = logs[0].read_text(errors="replace")
    print(f"=== {name}: exit codes {rcs}, {wall:.0f} s wall (rank 0's output, DeepSpeed's "
          "[INFO] lines left out)", flush=True)
    for line in out.splitlines():
        if not line.startswith("[20") and "UserWarning" not in line:
            print("   " + line)
    if any(rcs):
        for r, log in enumerate(logs[1:], 1):
            print(f"--- rank {r} (last 30 lines)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
    m = re.search(r"^summary: .*?loss ([\d.]+) -> ([\d.]+) .*?step ([\d.]+) ms .*?peak memory ([\d.]+) GiB"
                  r".*?parameters (\d+)", out, re.M)
    parts = re.findall(r"^rank (\d+) partition: (\d+) of (\d+)", "\n".join(
        log.read_text(errors="replace") for log in logs), re.M)
    return {"name": name, "rcs": rcs, "wall": wall, "output": out, "summary": m, "partitions": parts}


def environment_line() -> str:
    import deepspeed
    import torch

    gpu, nccl = "no GPU", "-"
    if torch.cuda.is_available():
        gpu, nccl = torch.cuda.get_device_name(0), str(torch.cuda.nccl.version())
    return (f"{torch.cuda.device_count()}x {gpu}, torch {torch.__version__}, deepspeed "
            f"{deepspeed.__version__}, NCCL {nccl}, "
            f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(unset)')}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma list of {', '.join(RUNS)}")
    p.add_argument("--nprocs", type=int, default=0, help="processes (default: every GPU)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--offload-steps", type=int, default=10, help="steps for offload runs")
    p.add_argument("--precision", default="bf16", help="bf16 (default), fp16 or fp32")
    p.add_argument("--out", default=os.environ.get("OUT"), help="copy logs here (default $OUT)")
    p.add_argument("extra", nargs="*", help="more arguments for examples/ds_zero3.py")
    a = p.parse_args(argv)
    n = a.nprocs or gpu_count()
    if n < 1:
        print("no GPU", file=sys.stderr)
        return 2
    print(environment_line(), flush=True)
    workdir = Path(a.out or tempfile.mkdtemp(prefix="ds-gpu-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for i, name in enumerate(a.runs.split(",")):
        steps = a.steps if name == "none" else a.offload_steps
        results.append(run(name, RUNS[name], n, steps, workdir, 4242 + i, a.extra, a.precision))
    print("\n| offload | world | loss first -> last | step time (mean after 2) | peak GPU memory "
          "(max allocated, busiest rank) | per-rank partition | wall |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for r in results:
        m = r["summary"]
        if any(r["rcs"]) or not m:
            print(f"| {r['name']} | {n} | FAILED (exit codes {r['rcs']}) | | | | |")
            ok = False
            continue
        first, last, step_ms, peak, params = m.groups()
        frac = ", ".join(f"{int(mine) / int(full):.3f}" for _, mine, full in sorted(r["partitions"]))
        print(f"| {r['name']} | {n} | {first} -> {last} | {step_ms} ms | {peak} GiB | {frac} of "
              f"{int(params) / 1e9:.2f}B | {r['wall']:.0f} s |")
        ok &= float(last) < float(first)
    return 0 if ok else 1


def test_zero3_bf16_with_and_without_offload():  # pytest entry point
    import pytest

    if gpu_count() < 2:
        pytest.skip("needs 2 GPUs")
    pytest.importorskip("deepspeed")
    assert main(["--steps", "10", "--offload-steps", "5"]) == 0


if __name__ == "__main__":
    sys.exit(main())
