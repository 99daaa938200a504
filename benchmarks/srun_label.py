"""What `srun --label` costs a job's output: the same step with and without it, side by side.

    python benchmarks/srun_label.py [--nodes 3] [--lines 100000] [--repeat 5]

Each task prints ``--lines`` lines of 60 bytes to stdout (and every 1000th to stderr, as a
program's warnings would); the step's output goes to a file in a temporary directory, as a
batch job's does. Rounds are interleaved (each round runs both forms once), so the load of the
shared machine hits both alike; medians and minimums of the step's wall time (srun started to
srun gone) and of srun's own CPU time (user+sys; srun is what prefixes the lines, on the batch
node), and the output's size. The question it answers for `hpcjobs why` (point 9 of issue 11):
can every template run its steps with --label so that a traceback names its rank?
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

PROG = ("import sys\n"
        "n = int(sys.argv[1]); line = 'x' * 59 + '\\n'\n"
        "w = sys.stdout.write; e = sys.stderr.write\n"
        "for i in range(n):\n"
        "    w(line)\n"
        "    if i % 1000 == 0: e('warning: something at step %d\\n' % i)\n")


def one(nodes: int, lines: int, label: bool, out: str) -> tuple[float, float, int]:
    argv = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1"]
    if label:
        argv.append("--label")
    argv += [sys.executable, "-c", PROG, str(lines)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(out, "wb") as f:
        subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, os.path.getsize(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--lines", type=int, default=100_000, help="lines per task")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    rows: dict[str, list[tuple[float, float, int]]] = {"plain": [], "--label": []}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "step.out")
        one(a.nodes, 100, False, out)  # warm up: the nodes' first step start is slower
        for _ in range(a.repeat):
            for name in rows:
                rows[name].append(one(a.nodes, a.lines, name == "--label", out))
    print(f"srun --nodes={a.nodes} --ntasks={a.nodes}: {a.lines} lines of 60 B per task "
          f"(stderr every 1000th), {a.repeat} interleaved rounds; load "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'form':<9} {'wall median':>12} {'wall min':>9} {'srun CPU median':>16} "
          f"{'output MB':>10}")
    base = statistics.median(w for w, _, _ in rows["plain"])
    for name, r in rows.items():
        wall = statistics.median(w for w, _, _ in r)
        print(f"{name:<9} {wall:>10.2f} s {min(w for w, _, _ in r):>7.2f} s "
              f"{statistics.median(c for _, c, _ in r):>14.2f} s {r[0][2] / 1e6:>10.2f}"
              + ("" if name == "plain" else f"   ({wall / base:.2f}x the plain wall time)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
