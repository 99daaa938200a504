"""What the launcher adds per task: `python -m hpcjobs.launch -- python -c pass` vs `python -c pass`
vs `torchrun --standalone --nproc-per-node=1` on the same no-op, side by side.

    python benchmarks/launch_overhead.py [--python PY] [--repeat 30] [--torch-repeat 5]
                                         [--sysfs tests/fixtures/sysfs/ib-active] [--no-torchrun]

Rounds are interleaved (each round runs every command once) so that load on the machine hits all
rows alike; medians and minimums in ms, and the difference to the baseline. The launcher sees a
Slurm task environment as srun would set it (task 1 of a 3-node step on pve2 of the built-in
profile; and task 9999 of a 10,000-node step whose SLURM_JOB_NODELIST is fragmented, ~60 KB),
reads the native-InfiniBand sysfs fixture (the cluster's code path; --sysfs / for this machine)
and the built-in profile through its cache (warmed once, as on any node after the first task).
The cold-cache row shows the first task after a profile change.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def task_env(tmp: str, sysfs: str, nodes: int) -> dict:
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("SLURM", "MASTER_", "NCCL_", "HPCJOBS_")) or k in ("RANK", "WORLD_SIZE"):
            del env[k]
    env.update(HPCJOBS_SYSFS_ROOT=sysfs, HPCJOBS_SANDBOX_STATE=os.path.join(tmp, "no-sandbox"),
               XDG_CONFIG_HOME=os.path.join(tmp, "config"), XDG_CACHE_HOME=os.path.join(tmp, "cache"),
               SLURM_JOB_ID="123456", SLURM_STEP_ID="0", SLURM_LOCALID="0")
    if nodes == 3:
        env.update(SLURM_PROCID="1", SLURM_NODEID="1", SLURM_NTASKS="3", SLURM_NNODES="3",
                   SLURM_TASKS_PER_NODE="1(x3)", SLURM_STEP_NODELIST="pve[1-3]",
                   SLURM_JOB_NODELIST="pve[1-3]", SLURMD_NODENAME="pve2")
    else:
        # Every other node of gpu[00001-19999]: Slurm cannot compress it into ranges.
        nl = "gpu[" + ",".join(f"{i:05d}" for i in range(1, 2 * nodes, 2)) + "]"
        env.update(SLURM_PROCID=str(nodes - 1), SLURM_NODEID=str(nodes - 1), SLURM_NTASKS=str(nodes),
                   SLURM_NNODES=str(nodes), SLURM_TASKS_PER_NODE=f"1(x{nodes})",
                   SLURM_STEP_NODELIST=nl, SLURM_JOB_NODELIST=nl,
                   SLURMD_NODENAME=f"gpu{2 * nodes - 1:05d}")
    return env


def run(argv, env) -> tuple[float, float]:
    """(wall ms, CPU ms) of one run. CPU time (user+sys of the process and everything it waited
    for) is what the task itself costs; it varies far less than wall time on a shared machine."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = (time.perf_counter() - t0) * 1000
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter for launcher and no-op")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--torch-repeat", type=int, default=5, help="torchrun takes seconds per run")
    ap.add_argument("--sysfs", default=os.path.join(REPO, "tests/fixtures/sysfs/ib-active"))
    ap.add_argument("--no-torchrun", action="store_true")
    args = ap.parse_args()
    py = args.python
    noop = [py, "-c", "pass"]
    launcher = [py, "-m", "hpcjobs.launch"]
    with tempfile.TemporaryDirectory() as tmp:
        env3 = task_env(tmp, args.sysfs, 3)
        env10k = task_env(tmp, args.sysfs, 10000)
        cold = os.path.join(tmp, "cold")
        rows = {
            "python -c pass (baseline)": (noop, env3),
            "hpcjobs.launch --dry-run (no exec: launcher alone)": ([*launcher, "--dry-run"], env3),
            "hpcjobs.launch -- python -c pass (3 nodes)": ([*launcher, "--", *noop], env3),
            "hpcjobs.launch -- python -c pass (10,000 nodes)": ([*launcher, "--", *noop], env10k),
            "  same, cold profile cache (first task after a change)": (
                [*launcher, "--", *noop], dict(env3, XDG_CACHE_HOME=cold)),
        }
        run([*launcher, "--", *noop], env3)  # warm the profile cache, as any earlier task would
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in rows}
        for _ in range(args.repeat):
            for label, (argv, env) in rows.items():
                if "cold" in label:
                    shutil.rmtree(cold, ignore_errors=True)
                samples[label].append(run(argv, env))
        torchrun = shutil.which("torchrun", path=os.path.dirname(py)) or shutil.which("torchrun")
        if torchrun and not args.no_torchrun:
            label = "torchrun --standalone --nproc-per-node=1 --no-python python -c pass"
            argv = [torchrun, "--standalone", "--nproc-per-node=1", "--no-python", *noop]
            samples[label] = [run(argv, env3) for _ in range(args.torch_repeat)]

    def med(label, i):
        return statistics.median(s[i] for s in samples[label])

    base_wall, base_cpu = med("python -c pass (baseline)", 0), med("python -c pass (baseline)", 1)
    load = os.getloadavg()[0]
    print(f"python: {py}\nsysfs: {args.sysfs}\nrepeat: {args.repeat} interleaved rounds "
          f"(torchrun: {args.torch_repeat}); load average at the end: {load:.2f} on "
          f"{os.cpu_count()} CPUs\n")
    print(f"| {'command':<62} | wall median | wall min | added (wall) | CPU median | added (CPU) |")
    print(f"|{'-' * 64}|------------:|---------:|-------------:|-----------:|------------:|")
    for label, s in samples.items():
        wall, cpu = med(label, 0), med(label, 1)
        wmin = min(x[0] for x in s)
        aw = "" if "baseline" in label else f"{wall - base_wall:+.1f} ms"
        ac = "" if "baseline" in label else f"{cpu - base_cpu:+.1f} ms"
        print(f"| {label:<62} | {wall:8.1f} ms | {wmin:5.1f} ms | {aw:>12} | {cpu:7.1f} ms | {ac:>11} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
