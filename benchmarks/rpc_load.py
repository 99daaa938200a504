"""What watching jobs costs slurmctld: RPCs per poll, per job-minute, counted by ``sdiag``.

    python benchmarks/rpc_load.py [--jobs 1 100] [--seconds 30] [--commands wait status follow]
                                  [--src DIR] [--repeat 1]
    python benchmarks/rpc_load.py --status-queue 10000 [--src DIR] [--repeat 31]

For each job count N it submits N one-node jobs (``sbatch --wrap``, a line a second for
``--seconds`` s), resets slurmctld's counters (``sdiag -r``), runs the hpcjobs command on them
as a user would, and reads ``sdiag``'s "RPC statistics by message type" when it returns.
Commands: ``wait`` (until the jobs end), ``status`` (one call), ``follow`` (``logs --follow``
of one job), ``held`` (``wait`` on jobs held in the queue, stopped with Ctrl-C after
``--seconds``: what a long wait costs).
``--src DIR`` runs the hpcjobs code in DIR (e.g. ``git archive HEAD | tar -x -C DIR`` of an
older commit) instead of the installed one: the before/after figures of one change.

Needs the sandbox (or any Slurm where you may run sdiag -r: it resets the counters for
everyone). Other people's commands land in the same counters: the benchmark checks that the
queue held nothing but its own jobs before and after, names the RPC types nobody watching
would cause (a foreign sbatch, srun) and marks such a run "disturbed". Repeat and compare.

Printed per run: the RPCs the watcher caused (job/partition/federation queries), the
lifecycle RPCs the jobs cause anyway (node registration, batch-script completion: the same
with or without a watcher), the wall time, RPCs per minute and per job-minute.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

PY = sys.executable
# What a job watcher asks slurmctld (squeue: JOB_INFO + PARTITION_INFO; scontrol show job ID
# and squeue -j ID: JOB_INFO_SINGLE + FED_INFO; scontrol show config: BUILD_INFO).
QUERIES = {"REQUEST_JOB_INFO", "REQUEST_JOB_INFO_SINGLE", "REQUEST_FED_INFO",
           "REQUEST_PARTITION_INFO", "REQUEST_JOB_USER_INFO", "REQUEST_BUILD_INFO",
           "REQUEST_NODE_INFO", "REQUEST_JOB_STEP_INFO", "REQUEST_PING", "REQUEST_JOB_STATE",
           "REQUEST_JOB_READY", "REQUEST_JOB_ALLOCATION_INFO", "REQUEST_KILL_JOB",
           "REQUEST_CANCEL_JOB_STEP"}
# Someone else is using the cluster (our jobs are --wrap batch jobs without steps).
FOREIGN = {"REQUEST_SUBMIT_BATCH_JOB", "REQUEST_RESOURCE_ALLOCATION", "REQUEST_JOB_STEP_CREATE",
           "REQUEST_HET_JOB_ALLOCATION", "REQUEST_UPDATE_JOB", "REQUEST_JOB_REQUEUE"}
IGNORED = {"REQUEST_STATS_INFO"}  # sdiag itself


def sdiag_counts() -> dict[str, int]:
    """RPC counts by message type since the last ``sdiag -r``."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    part = out.split("by message type", 1)[-1].split("by user", 1)[0]
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^\s*(\w+)\s+\(\s*\d+\)\s+count:(\d+)", part, re.M)}


def queue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True).stdout
    return set(out.split())


def wait_quiet(limit: float = 600.0) -> bool:
    """Wait (up to ``limit`` s) until the queue is empty; say so while waiting."""
    t0 = time.monotonic()
    told = False
    while queue_ids():
        if time.monotonic() - t0 > limit:
            return False
        if not told:
            print(f"  (queue not empty: waiting for it to drain, up to {limit:.0f} s)")
            told = True
        time.sleep(5)
    return True


def submit(n: int, seconds: int, outdir: str, held: bool = False) -> list[str]:
    body = f"for i in $(seq {seconds}); do echo tick $i; sleep 1; done"
    ids = []
    for _ in range(n):
        p = subprocess.run(["sbatch", "--parsable", "-N1", "-n1", "-c1", "--mem=64M", "-t", "5",
                            "-J", "rpcload", "-o", os.path.join(outdir, "slurm-%j.out"),
                            *(["--hold"] if held else []), "--wrap", body],
                           capture_output=True, text=True, check=True)
        ids.append(p.stdout.strip().split(";")[0])
    return ids


def hpcjobs_argv(src: str | None) -> tuple[list[str], dict]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.path.abspath(src) + os.pathsep + env.get("PYTHONPATH", "")
    return [PY, "-m", "hpcjobs"], env


def measure(command: str, n: int, seconds: int, src: str | None, tmp: str) -> dict:
    outdir = tempfile.mkdtemp(dir=tmp)
    os.chmod(outdir, 0o777)
    quiet_before = wait_quiet()
    held = command == "held"
    ids = submit(n, seconds, outdir, held=held)
    base, env = hpcjobs_argv(src)
    env["HPCJOBS_RUNS_DIR"] = os.path.join(outdir, "runs")
    argv = {"wait": [*base, "wait", *ids], "status": [*base, "status", *ids],
            "follow": [*base, "logs", "--follow", ids[0]], "held": [*base, "wait", *ids]}[command]
    subprocess.run(["sdiag", "-r"], capture_output=True, check=True)
    t0 = time.monotonic()
    # Run from the scratch directory: ``python -m`` puts the current directory first on
    # sys.path, which would shadow --src with a checkout's own hpcjobs.
    if held:  # jobs that pend (held) for --seconds: the cost of a long wait, then Ctrl-C
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, cwd=outdir)
        try:
            p.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGINT)
        out, err = p.communicate()
        proc = subprocess.CompletedProcess(argv, p.returncode, out, err)
    else:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=outdir)
    wall = time.monotonic() - t0
    counts = sdiag_counts()
    foreign = queue_ids() - set(ids)
    if command != "wait":  # status / follow / held may return while the jobs still run
        subprocess.run(["scancel", *ids], capture_output=True)
    queries = {k: v for k, v in counts.items() if k in QUERIES}
    lifecycle = {k: v for k, v in counts.items() if k not in QUERIES and k not in IGNORED}
    disturbed = [k for k in lifecycle if k in FOREIGN] + (["foreign jobs in the queue"]
                                                         if foreign or not quiet_before else [])
    shutil.rmtree(outdir, ignore_errors=True)
    return {"command": command, "jobs": n, "rc": proc.returncode, "wall": wall,
            "queries": queries, "lifecycle": lifecycle, "disturbed": disturbed,
            "stderr": proc.stderr.strip().splitlines()[-1:] if proc.returncode not in (0, 1, 130)
            else []}


def report(r: dict) -> None:
    q = sum(r["queries"].values())
    minutes = r["wall"] / 60
    per_min = q / minutes if minutes else 0.0
    per_job_min = q / (r["jobs"] * minutes) if minutes else 0.0
    kinds = ", ".join(f"{k.removeprefix('REQUEST_')} {v}" for k, v in sorted(r["queries"].items()))
    print(f"  {r['command']:<7} {r['jobs']:>4} jobs  rc {r['rc']}  {r['wall']:6.1f} s  "
          f"watcher RPCs {q:5d} ({kinds})")
    rate = (f"{q / r['jobs']:7.2f} RPCs per job, one call" if r["command"] == "status" else
            f"{per_min:7.1f} RPCs/min  {per_job_min:7.2f} RPCs per job-minute")
    print(f"  {'':<7} {'':>4}       {rate}  lifecycle {sum(r['lifecycle'].values())}"
          + (f"  DISTURBED: {', '.join(r['disturbed'])}" if r["disturbed"] else "  (quiet)"))
    if r["stderr"]:
        print(f"  {'':<7} stderr: {r['stderr'][0]}")


def status_queue(n: int, repeat: int, src: str | None, tmp: str) -> None:
    """``hpcjobs status --queue`` over an n-job queue: one squeue call, replayed from a stand-in
    ``squeue`` on PATH that prints n lines in hpcjobs.slurm.WATCH_FORMAT's fields (as
    benchmarks/cli_overhead.py does); with ``--src``, that tree and the installed one
    interleaved. Wall medians and minimums in ms (the minimum is the quiet machine's figure)."""
    import statistics

    sep = "\x1f"
    states = ["RUNNING", "PENDING", "PENDING", "COMPLETING"]
    lines = []
    for i in range(n):
        st = states[i % 4]
        reason = "None" if st == "RUNNING" else "Priority" if i % 3 else "Resources"
        lines.append(sep.join([str(100000 + i), st, reason, "1:23" if st == "RUNNING" else "0:00",
                               f"node[{1 + i % 3}-3]" if st == "RUNNING" else "", "gpu", "root",
                               "0", "0", f"train-{i}"]))
    data = os.path.join(tmp, "squeue.out")
    with open(data, "w") as f:
        f.write("\n".join(lines) + "\n")
    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir, exist_ok=True)
    with open(os.path.join(bindir, "squeue"), "w") as f:
        f.write(f"#!/bin/sh\nexec cat {data}\n")
    os.chmod(os.path.join(bindir, "squeue"), 0o755)
    trees = {"installed": None, **({f"--src {src}": src} if src else {})}
    times: dict[tuple[str, bool], list[float]] = {}
    for _ in range(repeat):
        for label, tree in trees.items():
            base, env = hpcjobs_argv(tree)
            env.update(PATH=bindir + os.pathsep + env["PATH"], HPCJOBS_RUNS_DIR=os.path.join(tmp, "none"))
            for as_json in (False, True):
                t0 = time.perf_counter()
                subprocess.run([*base, "status", "--queue", *(["--json"] if as_json else [])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                               cwd=tmp, check=True)
                times.setdefault((label, as_json), []).append((time.perf_counter() - t0) * 1000)
    print(f"hpcjobs status --queue over a {n}-job squeue output ({repeat} runs each, interleaved; "
          f"load average {os.getloadavg()[0]:.1f})")
    for (label, as_json), v in times.items():
        print(f"  {label:<40} {'--json' if as_json else '':<6} median {statistics.median(v):7.1f} ms"
              f"  min {min(v):7.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 100])
    ap.add_argument("--seconds", type=int, default=30, help="how long each job runs")
    ap.add_argument("--commands", nargs="+", default=["wait", "status", "follow"],
                    choices=["wait", "status", "follow", "held"],
                    help="held: wait on held (pending) jobs for --seconds, then Ctrl-C")
    ap.add_argument("--src", metavar="DIR", help="run the hpcjobs package found in DIR")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--status-queue", type=int, metavar="N",
                    help="instead: time `hpcjobs status --queue` over an N-job queue (no Slurm)")
    args = ap.parse_args()
    if args.status_queue:
        with tempfile.TemporaryDirectory() as tmp:
            status_queue(args.status_queue, args.repeat, args.src, tmp)
        return
    if not shutil.which("sdiag"):
        sys.exit("sdiag not found: run this where the Slurm client is installed")
    print(f"hpcjobs from {args.src or 'the installed package'}; jobs of {args.seconds} s; "
          f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        for _ in range(args.repeat):
            for command in args.commands:
                for n in args.jobs:
                    if command == "follow" and n != 1:
                        continue  # logs --follow takes one job
                    report(measure(command, n, args.seconds, args.src, tmp))


if __name__ == "__main__":
    main()
