"""What the monitor costs a job: a CPU-bound program's own time with and without it, on the
sandbox, in interleaved rounds; and what the monitor itself used (from the receipts).

    python benchmarks/monitor_overhead.py [--rounds 7] [--nodes 1] [--work 3.0]
        [--intervals 5,1,0.5] [--steady 30] [--json FILE]

Each round submits one job per setting (``--no-monitor``, then ``--monitor-interval`` for each
interval) in an order that rotates from round to round, so that the machine's load (the sandbox
is shared) hits every setting alike. The program times its own fixed work (pure-Python loop,
calibrated to about --work seconds on this machine before the rounds), so job start-up and
Slurm's scheduling are not in the figure; it gives its wall time and its CPU time (less
sensitive to the machine's load). Printed: per setting the median, min and max of both, the
medians' ratios to the no-monitor medians, and the monitors' own CPU time per
sample and per hour of job from their samples (``own``); then, finely resolved, the steady
cost per sample in a job that only sleeps for --steady seconds. Needs the sandbox
(`hpcjobs sandbox up`); run records go to a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PROGRAM = """
import sys, time
n = int(sys.argv[1])
t, c = time.perf_counter(), time.process_time()
x = 0
for i in range(n):
    x += i * i
print(f"WORK-SECONDS {time.perf_counter() - t:.4f} {time.process_time() - c:.4f}", flush=True)
"""


def calibrate(seconds: float) -> int:
    n, took = 1_000_000, 0.0
    while took < 0.3:
        n *= 2
        t = time.perf_counter()
        x = 0
        for i in range(n):
            x += i * i
        took = time.perf_counter() - t
    return int(n * seconds / took)


def hpcjobs(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpcjobs", *args], capture_output=True, text=True,
                          env=env)


def one_job(setting: str, prog: str, n: int, nodes: int, env, marker: bool = True) -> dict:
    opts = ["--no-monitor"] if setting == "off" else ["--monitor-interval", setting]
    sub = hpcjobs("submit", "mpi", "--nodes", str(nodes), *opts, "--json", "--wait", "--",
                  prog, str(n), env=env)
    if sub.returncode != 0:
        raise SystemExit(f"job failed ({setting}): {sub.stderr.strip()}")
    info = json.loads(sub.stdout.splitlines()[0])
    with open(os.path.join(info["run_dir"], f"slurm-{info['job_id']}.out")) as f:
        out = f.read()
    row = {"setting": setting, "job_id": info["job_id"], "load": os.getloadavg()[0]}
    if marker:
        (line,) = [x for x in out.splitlines() if x.startswith("WORK-SECONDS")]
        row.update(work_s=float(line.split()[1]), work_cpu_s=float(line.split()[2]))
    if setting != "off":
        from hpcjobs.report.samples import read_dir

        # The monitor's own CPU ("own" in each line): at its first sample (Python's start-up and
        # imports, paid once per job) and per sample after that (the steady cost).
        start, steady, samples = [], [], 0
        for ns in read_dir(os.path.join(info["run_dir"], "monitor", info["job_id"])):
            for seg in ns.segments:
                if len(seg.samples) >= 2:
                    first = seg.samples[0]["own"]
                    last = (seg.stop or seg.samples[-1]).get("own", seg.samples[-1]["own"])
                    start.append(first)
                    steady.append((last - first) / (len(seg.samples) - 1))
                samples += len(seg.samples)
        row.update(start_cpu_s=statistics.mean(start) if start else None,
                   per_sample_cpu_s=statistics.mean(steady) if steady else None, samples=samples)
    return row


def table(rows: list[dict], settings: list[str]) -> None:
    base = statistics.median(x["work_s"] for x in rows if x["setting"] == "off")
    base_cpu = statistics.median(x["work_cpu_s"] for x in rows if x["setting"] == "off")
    print("\n| monitor | program's wall time, median (min-max) | ratio | program's CPU time, "
          "median (min-max) | ratio | monitor start-up CPU | monitor CPU per sample | = per hour "
          "of job |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for s in settings:
        xs = [x for x in rows if x["setting"] == s]
        w = [x["work_s"] for x in xs]
        cw = [x["work_cpu_s"] for x in xs]
        med, cmed = statistics.median(w), statistics.median(cw)
        label = "off (--no-monitor)" if s == "off" else f"every {s} s"
        start = per_sample = per_hour = "-"
        st = [x["start_cpu_s"] for x in xs if x.get("start_cpu_s") is not None]
        ps = [x["per_sample_cpu_s"] for x in xs if x.get("per_sample_cpu_s") is not None]
        if st:
            start = f"{1000 * statistics.median(st):.0f} ms"
        if ps:
            m = statistics.median(ps)
            per_sample = f"{1000 * m:.2f} ms"
            per_hour = f"{m * 3600 / float(s):.1f} s ({100 * m / float(s):.3f}% of a core)"
        print(f"| {label} | {med:.3f} s ({min(w):.3f}-{max(w):.3f}) | {med / base:.3f} | "
              f"{cmed:.3f} s ({min(cw):.3f}-{max(cw):.3f}) | {cmed / base_cpu:.3f} | "
              f"{start} | {per_sample} | {per_hour} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--work", type=float, default=3.0, help="seconds of work per job")
    ap.add_argument("--intervals", default="5,1,0.5")
    ap.add_argument("--steady", type=float, default=30.0,
                    help="seconds of a sleeping job sampled every 0.5 s (0: none)")
    ap.add_argument("--json", help="write every row here")
    args = ap.parse_args()
    settings = ["off"] + [s.strip() for s in args.intervals.split(",") if s.strip()]
    tmp = tempfile.mkdtemp(prefix="hpcjobs-monoverhead-")
    prog = os.path.join(tmp, "work.py")
    with open(prog, "w") as f:
        f.write(PROGRAM)
    env = {**os.environ, "HPCJOBS_RUNS_DIR": os.path.join(tmp, "runs")}
    n = calibrate(args.work)
    print(f"machine: {os.uname().nodename}, {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}; "
          f"work n={n} (~{args.work:g} s); {args.rounds} rounds x {settings}")
    rows = []
    for r in range(args.rounds):
        order = settings[r % len(settings):] + settings[:r % len(settings)]
        for s in order:
            rows.append(one_job(s, prog, n, args.nodes, env))
            print(f"  round {r + 1} {s:>4}: {rows[-1]['work_s']:.3f} s wall, "
                  f"{rows[-1]['work_cpu_s']:.3f} s CPU (load {rows[-1]['load']:.1f})", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if rows:
        table(rows, settings)
    if args.steady:
        # The steady cost per sample, resolved finely: a job that only sleeps, sampled every
        # 0.5 s for --steady seconds (os.times() counts in 10 ms ticks: many samples needed).
        sleeper = os.path.join(tmp, "sleep.py")
        with open(sleeper, "w") as f:
            f.write(f"import time; time.sleep({args.steady})\n")
        row = one_job("0.5", sleeper, 0, args.nodes, env, marker=False)
        print(f"\nsteady: a {args.steady:g} s job sampled every 0.5 s on {args.nodes} node(s): "
              f"{row['samples']} samples, start-up {1000 * row['start_cpu_s']:.0f} ms CPU, then "
              f"{1000 * row['per_sample_cpu_s']:.2f} ms CPU per sample "
              f"(= {100 * row['per_sample_cpu_s'] / 5:.3f}% of a core at the default 5 s)")
        rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
