"""Arrays past MaxArraySize: the split's cost, and a real submission, status and cancel of a
100,000-task array (100 chunks under the sandbox's MaxArraySize 1001) against a 1,000-task one.

    python benchmarks/big_arrays.py [--tasks 100000] [--repeat 3] [--sandbox-repeat 1] [--skip-sandbox]

The sandbox part needs `hpcjobs sandbox up`; its arrays are held by --begin now+1hour (nothing
runs) and cancelled at once. Mind that a cancelled array's tasks stay job records until
MinJobAge (600 s on the sandbox) and count against MaxJobCount (10000) for everyone: each
sandbox round leaves 1,000 + 2,002 of them. Prints medians.
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

HPCJOBS = [sys.executable, "-m", "hpcjobs"]


def split_ms(text: str, repeat: int) -> tuple[float, int]:
    from hpcjobs import arrays
    from hpcjobs.spec import parse_array

    samples, n = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        spec = parse_array(text)
        chunks = arrays.split(spec.indices, 1001, 1001)
        samples.append((time.perf_counter() - t0) * 1000)
        n = len(chunks)
    return statistics.median(samples), n


def run(argv, env) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, proc


def sandbox(tasks: int, repeat: int) -> None:
    env = {**os.environ, "HPCJOBS_RUNS_DIR": tempfile.mkdtemp(prefix="bench-arrays-")}
    for n in (1000, tasks):
        sub_s, status_s, cancel_s, chunks, queued = [], [], [], 0, 0
        for _ in range(repeat):
            t, p = run([*HPCJOBS, "submit", "mpi", "--nodes", "1", "--no-monitor", "--json",
                        "--array", f"0-{n - 1}%10", "--begin", "now+1hour", "--", "true"], env)
            if p.returncode != 0:
                sys.exit(p.stderr)
            sub_s.append(t)
            out = json.loads(p.stdout)
            chunks = out.get("array_chunk_count", 1)
            queued = len(out.get("array_chunks") or [out["job_id"]])
            t, p = run([*HPCJOBS, "status", out["job_id"], "--json"], env)
            status_s.append(t)
            assert len(json.loads(p.stdout)[0]["tasks"]) == n, p.stdout[:300]
            t, p = run([*HPCJOBS, "cancel", out["job_id"]], env)
            cancel_s.append(t)
        print(f"{n:7d} tasks ({chunks:3d} Slurm array{'s' * (chunks != 1)}, {queued} queued at "
              f"submission): submit "
              f"{statistics.median(sub_s):6.2f} s, status {statistics.median(status_s):6.2f} s, "
              f"cancel {statistics.median(cancel_s):6.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=100000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sandbox-repeat", type=int, default=1)
    ap.add_argument("--skip-sandbox", action="store_true")
    args = ap.parse_args()
    for text in (f"0-{args.tasks - 1}", f"0-{args.tasks * 10 - 1}:10", "0-3999999"):
        ms, n = split_ms(text, args.repeat)
        print(f"split {text:>16}: {n:5d} chunks in {ms:7.1f} ms (parse_array included)")
    if not args.skip_sandbox:
        sandbox(args.tasks, args.sandbox_repeat)


if __name__ == "__main__":
    main()
