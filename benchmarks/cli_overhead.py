"""CLI figures: start-up, render, submit latency against bare sbatch, status over 10,000 jobs.

    python benchmarks/cli_overhead.py [--repeat 15] [--skip-submit]

Prints medians in ms and ratios against the baseline run side by side. Submission figures
need the sandbox (hpcjobs sandbox up); the status figure replays a 10,000-job squeue output
built from real sandbox lines (a stand-in `squeue` on PATH prints it; nothing else is faked).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPCJOBS = [PY, "-m", "hpcjobs"]
SEP = "\x1f"


def timeit(argv, repeat, env=None, cwd=None) -> float:
    """Median wall time in ms of running argv (output discarded, must exit 0)."""
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                       env=env, cwd=cwd)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def row(label, ms, base=None):
    ratio = f"{ms / base:5.2f}x" if base else ""
    extra = f"  (+{ms - base:6.1f} ms)" if base else ""
    print(f"  {label:<52} {ms:8.1f} ms {ratio}{extra}")


def startup(repeat):
    print(f"start-up (median of {repeat})")
    base = timeit([PY, "-c", "pass"], repeat)
    row("python -c pass (baseline)", base)
    row("hpcjobs --help", timeit([*HPCJOBS, "--help"], repeat), base)
    row("hpcjobs render mpi -- true", timeit([*HPCJOBS, "render", "mpi", "--", "true"], repeat), base)
    row("hpcjobs render train -- t.py  (jinja2 + kind)",
        timeit([*HPCJOBS, "render", "train", "--", os.path.join(ROOT, "examples", "train_ddp.py")],
               repeat), base)


def submit(repeat, tmp):
    print(f"submission latency on the sandbox (median of {repeat}; job: `true` on 1 node)")
    script = os.path.join(tmp, "bare.sbatch")
    with open(script, "w") as f:
        f.write("#!/bin/bash\n#SBATCH --nodes=1\n#SBATCH --output=/dev/null\nsrun true\n")
    base = timeit(["sbatch", "--parsable", script], repeat)
    row("sbatch --parsable bare.sbatch (baseline)", base)
    env = dict(os.environ, HPCJOBS_RUNS_DIR=os.path.join(tmp, "runs"))
    row("hpcjobs submit mpi --nodes 1 -- true",
        timeit([*HPCJOBS, "submit", "mpi", "--nodes", "1", "--", "true"], repeat, env=env), base)
    subprocess.run(["scancel", "-u", os.environ.get("USER", "root"), "-n", "hpcjobs-mpi"])


def status(repeat, tmp, n=10000):
    print(f"hpcjobs status --queue over a {n}-job squeue output (median of {repeat})")
    lines = []
    states = ["RUNNING", "PENDING", "PENDING", "COMPLETING"]
    for i in range(n):
        st = states[i % 4]
        reason = "None" if st == "RUNNING" else "Priority" if i % 3 else "Resources"
        nodes = f"node[{1 + i % 3}-3]" if st == "RUNNING" else ""
        # The fields of hpcjobs.slurm.WATCH_FORMAT (squeue -O): id, state, reason, time used,
        # nodes, partition, user, exit code, restarts, name.
        lines.append(SEP.join([str(100000 + i), st, reason, "1:23" if st == "RUNNING" else "0:00",
                               nodes, "gpu", "root", "0", "0", f"train-{i}"]))
    data = os.path.join(tmp, "squeue.out")
    with open(data, "w") as f:
        f.write("\n".join(lines) + "\n")
    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir, exist_ok=True)
    fake = os.path.join(bindir, "squeue")
    with open(fake, "w") as f:
        f.write(f"#!/bin/sh\nexec cat {data}\n")
    os.chmod(fake, 0o755)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"],
               HPCJOBS_RUNS_DIR=os.path.join(tmp, "runs-empty"))
    base = timeit([fake], repeat, env=env)
    row("cat of the squeue output (baseline)", base)
    row("hpcjobs status --queue", timeit([*HPCJOBS, "status", "--queue"], repeat, env=env), base)
    row("hpcjobs status --queue --json",
        timeit([*HPCJOBS, "status", "--queue", "--json"], repeat, env=env), base)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--skip-submit", action="store_true")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]} at {PY}; {os.cpu_count()} CPUs; "
          f"{time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        startup(args.repeat)
        status(args.repeat, tmp)
        if not args.skip_submit and shutil.which("sbatch"):
            submit(args.repeat, tmp)


if __name__ == "__main__":
    main()
