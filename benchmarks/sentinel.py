"""The hang sentinel's figures on the sandbox (docs/benchmarks.md, "Hang sentinel").

1. Detection latency: RUNS jobs of examples/hang_gloo.py (3 nodes, gloo) whose rank 1 sleeps
   before an all_reduce, --hang-timeout TIMEOUT; from the sentinel's report: the deadline (last
   progress + timeout) to detected, to the stacks in the record, to the cancel, to the step's end.
2. Overhead on a healthy job: the same program without a fault (STEPS all_reduce steps, a
   heartbeat each) with and without --hang-timeout, interleaved; the program's own loop time;
   the watcher's CPU time from its watch.json.
3. hpcjobs.heartbeat() itself: a call between writes, and a call that writes.

    python benchmarks/sentinel.py [--runs 3] [--timeout 20] [--steps 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.conftest import wait_job  # noqa: E402

EXAMPLE = str(ROOT / "examples" / "hang_gloo.py")


def submit(env: dict, *args: str) -> tuple[str, Path]:
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "submit", "train", "--nodes", "3", "--time",
                        "5", "--json", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode:
        sys.exit(r.stderr)
    sub = json.loads(r.stdout)
    return sub["job_id"], Path(sub["run_dir"])


def latency(env: dict, runs: int, timeout: int) -> None:
    rows = []
    for _ in range(runs):
        job, run = submit(env, "--hang-timeout", f"{timeout}s", "--", EXAMPLE, "--hang-rank", "1",
                          "--hang-at", "5", "--steps", "100000")
        wait_job(job, 300)
        d = run / "sentinel" / job / "run-0"
        t = json.loads((d / "report.json").read_text())["timings"]
        out = (run / f"slurm-{job}.out").read_text()
        fault = float(re.search(r"hanging \(sleep\) before step \d+ at ([\d.]+)", out).group(1))
        ended = float((d / "ended").read_text())
        b = t["deadline"]
        rows.append((t["detected"] - b, t["stacks_in_record"] - b, t["cancel_sent"] - b, ended - b,
                     t["stacks_in_record"] - fault, ended - fault))
        print(f"job {job}: deadline->detected {rows[-1][0]:.2f} s, ->stacks in record "
              f"{rows[-1][1]:.2f} s, ->cancel sent {rows[-1][2]:.2f} s, ->step ended "
              f"{rows[-1][3]:.2f} s; fault->stacks {rows[-1][4]:.2f} s, fault->ended {rows[-1][5]:.2f} s",
              flush=True)
    med = [statistics.median(c) for c in zip(*rows)]
    print(f"median of {runs}: deadline->detected {med[0]:.2f} s, ->stacks {med[1]:.2f} s, ->cancel "
          f"{med[2]:.2f} s, ->ended {med[3]:.2f} s; fault->stacks {med[4]:.2f} s (timeout {timeout} s), "
          f"fault->ended {med[5]:.2f} s")


def overhead(env: dict, runs: int, steps: int) -> None:
    times: dict[str, list[float]] = {"off": [], "on": []}
    cpu = []
    for _ in range(runs):
        for mode in ("off", "on"):
            extra = ["--hang-timeout", "4m"] if mode == "on" else []
            job, run = submit(env, *extra, "--", EXAMPLE, "--steps", str(steps), "--step-seconds",
                              "0", "--quiet-until", str(steps))
            f = wait_job(job, 300)
            out = (run / f"slurm-{job}.out").read_text()
            m = re.search(r"^done: \d+ steps on \d+ ranks in ([\d.]+) s$", out, re.M)
            if f["JobState"] != "COMPLETED" or not m:
                sys.exit(f"job {job} {f['JobState']}:\n{out}")
            times[mode].append(float(m.group(1)))
            if mode == "on":
                w = json.loads((run / "sentinel" / job / "run-0" / "watch.json").read_text())
                cpu.append((w["cpu_user_s"] + w["cpu_system_s"], w["polls"] * w["poll_s"]))
            print(f"{mode:>3}: job {job}: {steps} all_reduce steps in {times[mode][-1]:.3f} s", flush=True)
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    print(f"loop time, median of {runs}: without sentinel {off:.3f} s "
          f"(min {min(times['off']):.3f}, max {max(times['off']):.3f}), with {on:.3f} s "
          f"(min {min(times['on']):.3f}, max {max(times['on']):.3f}); ratio {on / off:.3f}")
    c = sum(x for x, _ in cpu) / max(1e-9, sum(y for _, y in cpu))
    print(f"watcher CPU: {sum(x for x, _ in cpu):.2f} s over {sum(y for _, y in cpu):.0f} s watched "
          f"({100 * c:.2f} % of one core; start-up included)")


def heartbeat_cost() -> None:
    with tempfile.TemporaryDirectory() as d:
        code = (
            "import time, hpcjobs\n"
            "hb = hpcjobs.heartbeat\n"
            "hb(step=0)\n"
            "n = 1_000_000\n"
            "t = time.perf_counter()\n"
            "for i in range(n): hb(step=i)\n"
            "between = (time.perf_counter() - t) / n\n"
            "import sys; m = sys.modules['hpcjobs.progress']\n"
            "m._state[1] = m._state[2] = 0.0  # every call writes\n"
            "n2 = 5000\n"
            "t = time.perf_counter()\n"
            "for i in range(n2): hb(step=i)\n"
            "writing = (time.perf_counter() - t) / n2\n"
            "assert m._state[3] > n + n2 - 10\n"
            "def empty(step=None): pass\n"
            "t = time.perf_counter()\n"
            "for i in range(n): empty(step=i)\n"
            "call = (time.perf_counter() - t) / n\n"
            "t = time.perf_counter()\n"
            "for i in range(n): time.monotonic()\n"
            "clock = (time.perf_counter() - t) / n\n"
            "print(f'heartbeat(): {between * 1e9:.0f} ns a call between writes (on this machine an "
            "empty function call: {call * 1e9:.0f} ns, time.monotonic(): {clock * 1e9:.0f} ns); "
            "{writing * 1e6:.1f} us a call that writes')\n")
        env = {**os.environ, "HPCJOBS_HEARTBEAT_DIR": d, "RANK": "0"}
        subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT)
        t0 = time.perf_counter()
        for _ in range(20):
            subprocess.run([sys.executable, "-c", "import hpcjobs; hpcjobs.heartbeat(step=1)"],
                           env=env, check=True, cwd=ROOT)
        t1 = time.perf_counter()
        for _ in range(20):
            subprocess.run([sys.executable, "-c", "import hpcjobs"], env=env, check=True, cwd=ROOT)
        t2 = time.perf_counter()
        print(f"import hpcjobs + first heartbeat: {(t1 - t0) / 20 * 1e3:.1f} ms a process vs "
              f"import hpcjobs alone {(t2 - t1) / 20 * 1e3:.1f} ms (mean of 20)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=int, default=20)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--only", choices=("latency", "overhead", "heartbeat"))
    a = p.parse_args()
    env = {**os.environ, "HPCJOBS_RUNS_DIR": tempfile.mkdtemp(prefix="sentinel-bench-")}
    if a.only in (None, "heartbeat"):
        heartbeat_cost()
    if a.only in (None, "latency"):
        latency(env, a.runs, a.timeout)
    if a.only in (None, "overhead"):
        overhead(env, a.runs, a.steps)


if __name__ == "__main__":
    main()
