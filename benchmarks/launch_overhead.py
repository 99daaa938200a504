"""What the launcher adds per task: `python -m hpcjobs.launch -- python -c pass` vs `python -c pass`
vs `torchrun --standalone --nproc-per-node=1` on the same no-op, side by side.

    /usr/bin/python3 -m venv /tmp/lv && /tmp/lv/bin/pip install -q .     # a fresh venv (not -e)
    python3 benchmarks/launch_overhead.py --python /tmp/lv/bin/python [--repeat 40]
        [--torch-repeat 5] [--sysfs tests/fixtures/sysfs/ib-active] [--no-torchrun]
        [--against /tmp/lv-old/bin/python]   # e.g. an older commit: git archive C | tar -x -C DIR

Rounds are interleaved (each round runs every command once) so that load on the machine hits all
rows alike; medians and minimums in ms, the difference to a bare start and the ratio to it. Wall
time and CPU time (user+sys of the process and all it waited for, which varies far less on a
shared machine) are both given, with the load average before and after.

Rows: the bare start (`python -c pass`); `python -m noop`, an empty package with an empty
`__main__.py` (byte-compiled), i.e. what any `python -m PACKAGE` entry point costs before its own
code runs (runpy imports importlib.util, contextlib, collections, functools and finds the
package and its __main__); the launcher alone
(`--dry-run`: imports, Slurm variables, sysfs, profile cache, no exec), whose difference to the
`-m` row is the launcher's own work; the launcher started with `-c` instead of `-m` (no runpy);
and the launcher exec'ing the no-op. The launcher sees a Slurm task environment as srun sets it
(task 1 of a 3-node step on pve2 of the built-in profile; task 9999 of a 10,000-node step whose
SLURM_JOB_NODELIST is fragmented, ~60 KB, with and without SLURMD_NODENAME: without it the whole
list is expanded) and the variables a rendered job script exports (HPCJOBS_KIND=train,
HPCJOBS_SIGNAL=USR2: the exec path sets the warning signal's disposition), reads the
native-InfiniBand sysfs fixture (the cluster's code path; --sysfs / for this machine) and the
built-in profile through its cache (warmed once, as on any node after the first task). The
cold-cache row shows the first task after a profile change.
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
BASELINE = "python -c pass (bare start: the floor)"
DASH_M = "python -m noop (an empty package's __main__: runpy)"
ALONE = "hpcjobs.launch --dry-run (launcher alone, 3 nodes)"
# The launcher without runpy: what a template could run instead of `-m hpcjobs.launch`.
DASH_C = "from hpcjobs.launch.__main__ import main; raise SystemExit(main())"
IN_PROCESS = """
import io, sys, time
c = time.process_time_ns
t0 = c()
import hpcjobs.launch.__main__ as m, hpcjobs.launch.environment
t1 = c()
out, sys.stdout = sys.stdout, io.StringIO()
m.main(["--dry-run"])
t2 = c()
out.write(f"{(t1 - t0) / 1e6} {(t2 - t1) / 1e6}")
"""


def task_env(tmp: str, sysfs: str, nodes: int, nodename: bool = True) -> dict:
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("SLURM", "MASTER_", "NCCL_", "HPCJOBS_", "OMP_")) or k in ("RANK", "WORLD_SIZE"):
            del env[k]
    env.update(HPCJOBS_BENCH_DIR=tmp, HPCJOBS_SYSFS_ROOT=sysfs,
               HPCJOBS_SANDBOX_STATE=os.path.join(tmp, "no-sandbox"),
               XDG_CONFIG_HOME=os.path.join(tmp, "config"), XDG_CACHE_HOME=os.path.join(tmp, "cache"),
               SLURM_JOB_ID="123456", SLURM_STEP_ID="0", SLURM_LOCALID="0",
               # As every templated job sets them: the exec path sets the signal's disposition.
               HPCJOBS_KIND="train", HPCJOBS_SIGNAL="USR2", HPCJOBS_SIGNAL_HANDLER="hpcjobs")
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
    if not nodename:
        del env["SLURMD_NODENAME"]
    return env


def run(argv, env) -> tuple[float, float]:
    """(wall ms, CPU ms) of one run. In the temporary directory: from the repository root,
    `python -m` and `-c` (cwd first on sys.path) would import the checkout's hpcjobs, not the
    installed one, and recompile every edited module when bytecode is not written."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, cwd=env["HPCJOBS_BENCH_DIR"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    wall = (time.perf_counter() - t0) * 1000
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1000


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter for launcher and no-op")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--torch-repeat", type=int, default=5, help="torchrun takes seconds per run")
    ap.add_argument("--sysfs", default=os.path.join(REPO, "tests/fixtures/sysfs/ib-active"))
    ap.add_argument("--no-torchrun", action="store_true")
    ap.add_argument("--against", metavar="PY", help="also run the key rows with this interpreter "
                    "(e.g. a venv with an older commit installed), interleaved in the same rounds")
    args = ap.parse_args()
    py = args.python
    bare = [py, "-c", "pass"]
    launcher = [py, "-m", "hpcjobs.launch"]
    load_before = load()
    with tempfile.TemporaryDirectory() as tmp:
        env3 = task_env(tmp, args.sysfs, 3)
        env10k = task_env(tmp, args.sysfs, 10000)
        env10k_noname = task_env(tmp, args.sysfs, 10000, nodename=False)
        cold = os.path.join(tmp, "cold")
        os.mkdir(os.path.join(tmp, "noop"))  # found through the working directory (tmp)
        for name in ("__init__.py", "__main__.py"):
            open(os.path.join(tmp, "noop", name), "w").close()
        subprocess.run([py, "-m", "compileall", "-q", os.path.join(tmp, "noop")], check=True)
        rows = {
            BASELINE: (bare, env3),
            DASH_M: ([py, "-m", "noop"], env3),
            ALONE: ([*launcher, "--dry-run"], env3),
            "  same, 10,000-node list": ([*launcher, "--dry-run"], env10k),
            "  same, 10,000 nodes without SLURMD_NODENAME": ([*launcher, "--dry-run"], env10k_noname),
            "  same, started with -c (no runpy)": ([py, "-c", DASH_C, "--dry-run"], env3),
            "hpcjobs.launch -- python -c pass (3 nodes)": ([*launcher, "--", *bare], env3),
            "hpcjobs.launch -- python -c pass (10,000 nodes)": ([*launcher, "--", *bare], env10k),
            "  same, cold profile cache (first task after a change)": (
                [*launcher, "--", *bare], dict(env3, XDG_CACHE_HOME=cold)),
        }
        other = {}
        if args.against:
            o = args.against
            other = {
                BASELINE: [o, "-c", "pass"], DASH_M: [o, "-m", "noop"],
                ALONE: [o, "-m", "hpcjobs.launch", "--dry-run"],
                "  same, 10,000 nodes without SLURMD_NODENAME": [o, "-m", "hpcjobs.launch", "--dry-run"],
                "hpcjobs.launch -- python -c pass (3 nodes)": [o, "-m", "hpcjobs.launch", "--", o, "-c",
                                                               "pass"],
            }
            for label, argv in other.items():
                rows["against: " + label] = (argv, rows[label][1])
            run(other["hpcjobs.launch -- python -c pass (3 nodes)"], env3)  # its own profile cache
        run([*launcher, "--", *bare], env3)  # warm the profile cache, as any earlier task would
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in rows}
        for _ in range(args.repeat):
            for label, (argv, env) in rows.items():
                if "cold" in label:
                    shutil.rmtree(cold, ignore_errors=True)
                samples[label].append(run(argv, env))
        # Inside one interpreter: CPU time of the launcher's imports and of main() (a dry run),
        # without the interpreter's start and exit around them: the least disturbed figure.
        inside = [subprocess.run([py, "-c", IN_PROCESS], env=env3, cwd=tmp, capture_output=True,
                                 text=True, check=True).stdout.split() for _ in range(args.repeat)]
        torchrun = shutil.which("torchrun", path=os.path.dirname(py)) or shutil.which("torchrun")
        if torchrun and not args.no_torchrun:
            label = "torchrun --standalone --nproc-per-node=1 --no-python python -c pass"
            argv = [torchrun, "--standalone", "--nproc-per-node=1", "--no-python", *bare]
            samples[label] = [run(argv, env3) for _ in range(args.torch_repeat)]

    def med(label, i):
        return statistics.median(s[i] for s in samples[label])

    base_wall, base_cpu = med(BASELINE, 0), med(BASELINE, 1)
    print(f"python: {py}\nsysfs: {args.sysfs}\nrepeat: {args.repeat} interleaved rounds "
          f"(torchrun: {args.torch_repeat}); load average before: {load_before}, after: {load()} "
          f"on {os.cpu_count()} CPUs\n")
    def low(label, i):
        return min(s[i] for s in samples[label])

    base_cmin = low(BASELINE, 1)
    print(f"| {'command':<58} | wall median | wall min | added (wall) | x bare | CPU median "
          f"| CPU min | added (CPU) | x bare |")
    print(f"|{'-' * 60}|------------:|---------:|-------------:|-------:|-----------:|--------:"
          "|------------:|-------:|")
    for label in (k for k in samples if not k.startswith("against: ")):
        wall, cpu = med(label, 0), med(label, 1)
        wmin, cmin = low(label, 0), low(label, 1)
        base = label == BASELINE
        aw = "" if base else f"{wall - base_wall:+.1f} ms"
        ac = "" if base else f"{cpu - base_cpu:+.1f} ms"
        print(f"| {label:<58} | {wall:8.1f} ms | {wmin:5.1f} ms | {aw:>12} | {wall / base_wall:5.2f}x "
              f"| {cpu:7.1f} ms | {cmin:4.1f} ms | {ac:>11} | {cpu / base_cpu:5.2f}x |")
    # Minimum CPU time is the least disturbed by other load: the best guess of a quiet machine.
    for what, f, bw, bc in (("medians", med, base_wall, base_cpu), ("minimums", low, low(BASELINE, 0),
                                                                    base_cmin)):
        own_w, own_c = f(ALONE, 0) - f(DASH_M, 0), f(ALONE, 1) - f(DASH_M, 1)
        m_w, m_c = f(DASH_M, 0) - bw, f(DASH_M, 1) - bc
        print(f"\n{what}: the launcher's own work (--dry-run minus `python -m noop`) "
              f"{own_w:+.1f} ms wall ({own_w / bw:.2f}x a bare start), {own_c:+.1f} ms CPU "
              f"({own_c / bc:.2f}x); `python -m` itself {m_w:+.1f} ms wall, {m_c:+.1f} ms CPU")
        for label in ("  same, 10,000-node list", "  same, 10,000 nodes without SLURMD_NODENAME"):
            dw, dc = f(label, 0) - f(ALONE, 0), f(label, 1) - f(ALONE, 1)
            print(f"  {label.strip()}: {dw:+.1f} ms wall, {dc:+.1f} ms CPU beyond the 3-node dry run")
    imp, work = [float(x[0]) for x in inside], [float(x[1]) for x in inside]
    tot = [a + b for a, b in zip(imp, work)]
    print(f"\ninside one interpreter (CPU, median (min) of {len(inside)}): imports "
          f"{statistics.median(imp):.2f} ({min(imp):.2f}) ms, main() --dry-run {statistics.median(work):.2f} "
          f"({min(work):.2f}) ms, together {statistics.median(tot):.2f} ({min(tot):.2f}) ms = "
          f"{statistics.median(tot) / base_cpu:.2f}x a bare start")
    if other:
        print(f"\nCPU time, interleaved: {py} (this) against {args.against}; median (min), and the "
              "ratio to that interpreter's bare start")
        print(f"| {'command':<58} | this | x bare | against | x bare |")
        print(f"|{'-' * 60}|-----:|-------:|--------:|-------:|")
        ob = med("against: " + BASELINE, 1)
        for label in other:
            a, b = med(label, 1), med("against: " + label, 1)
            print(f"| {label.strip():<58} | {a:.1f} ({low(label, 1):.1f}) ms | {a / base_cpu:.2f}x "
                  f"| {b:.1f} ({low('against: ' + label, 1):.1f}) ms | {b / ob:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
