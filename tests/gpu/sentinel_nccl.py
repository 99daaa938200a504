"""The hang sentinel's NCCL half on real GPUs (no Slurm needed): N ranks of examples/hang_gloo.py
(NCCL, one GPU each) with the environment _sentinel.j2 gives a job, and the sentinel's own node
code (hpcjobs.runners.stacks) run against them.

Checks, printed one per line as PASS/FAIL, exit 0 only if all pass:
  1. torch opened each rank's flight recorder pipe (TORCH_NCCL_DEBUG_INFO_PIPE_FILE<rank>.pipe:
     the variable names torch reads are the ones the template sets);
  2. a write to the pipe makes each rank dump its flight recorder, which the sentinel reads
     (pg_status, the last entries);
  3. while the ranks run, two looks 3 s apart see the completed count grow: progress that the
     sentinel counts without heartbeats or output;
  with N >= 2 (rank N-1 sleeps before an all_reduce):
  4. two looks 3 s apart see no rank complete anything: the sentinel would declare the hang;
  5. py-spy reads every rank, and the analysis names rank N-1 the straggler (by the flight
     recorder: it enqueued one collective fewer) with its time.sleep line.

    python tests/gpu/sentinel_nccl.py --gpus 2      # tests/gpu/run_sentinel_gpu.sh wraps it
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hpcjobs.runners import hangreport, stacks  # noqa: E402
from hpcjobs.runners.sentinel import fr_completed  # noqa: E402

results: list[tuple[bool, str]] = []


def check(ok: bool, what: str) -> bool:
    results.append((ok, what))
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    return ok


def wait_for(predicate, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpus", type=int, default=1, help="ranks, one GPU each")
    args = p.parse_args()
    n = args.gpus
    work = Path(tempfile.mkdtemp(prefix="sentinel-gpu-"))
    job = f"gpu{os.getpid()}"
    (work / "heartbeat").mkdir()
    base = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000),
            "WORLD_SIZE": str(n), "SLURM_JOB_ID": job, "SLURM_STEP_ID": "0",
            "SLURMD_NODENAME": "gpuhost", "PYTHONUNBUFFERED": "1",
            # as job_templates/_sentinel.j2 sets them
            "TORCH_FR_BUFFER_SIZE": "2000", "TORCH_NCCL_DUMP_ON_TIMEOUT": "1",
            "TORCH_FR_DUMP_TEMP_FILE": str(work / "nccl_trace_rank_"),
            "TORCH_NCCL_DEBUG_INFO_PIPE_FILE": str(work / "nccl_pipe_rank_"),
            "HPCJOBS_HEARTBEAT_DIR": str(work / "heartbeat")}
    prog = [sys.executable, str(ROOT / "examples" / "hang_gloo.py"), "--steps", "100000",
            "--step-seconds", "0.02"]
    if n >= 2:
        prog += ["--hang-rank", str(n - 1), "--hang-at", "300"]
    procs = []
    for r in range(n):
        env = {**base, "RANK": str(r), "LOCAL_RANK": str(r), "SLURM_PROCID": str(r)}
        out = open(work / f"rank{r}.out", "w")  # noqa: SIM115 (the rank's own, for its life)
        procs.append(subprocess.Popen(prog, env=env, stdout=out, stderr=subprocess.STDOUT))
    os.environ["SLURMD_NODENAME"] = "gpuhost"
    try:
        pipes = [work / f"nccl_pipe_rank_{r}.pipe" for r in range(n)]
        check(wait_for(lambda: all(x.exists() for x in pipes), 120),
              f"torch opened the flight recorder pipe of each of {n} rank(s) ({pipes[0].name}, ...)")
        if n >= 2:
            wait_for(lambda: "hanging" in (work / f"rank{n - 1}.out").read_text(), 120)
            time.sleep(2)
        first = stacks.node_ranks(job, {"0"}, stacks=False)
        dumped = [r for r in first if (r.get("nccl") or {}).get("pg_status")]
        check(len(dumped) == n, f"a write to each pipe made each rank dump its flight recorder "
              f"({len(dumped)} of {n}; e.g. {json.dumps((first[0].get('nccl') or {}), default=str)[:300]})")
        time.sleep(3)
        second = stacks.node_ranks(job, {"0"}, stacks=False)
        a, b = fr_completed(first), fr_completed(second)
        if n == 1:
            check(bool(a) and b.get(0, -1) > a.get(0, -1),
                  f"the completed count grows while the rank runs ({a} -> {b})")
        else:
            check(bool(a) and a == b, f"no rank completes a collective while rank {n - 1} sleeps "
                  f"({a} -> {b}): the sentinel would declare the hang")
            ranks = stacks.node_ranks(job, {"0"})
            report = hangreport.analyse(ranks, n)
            print(report["summary"])
            for h in report["fix"]:
                print("  fix:", h)
            sleeper = next(r for r in ranks if r["rank"] == n - 1)
            check(all(r["threads"] for r in ranks), "py-spy read every rank")
            check(report["stragglers"] == [n - 1] and f"rank {n - 1} in time.sleep" in report["summary"],
                  f"rank {n - 1} is named the straggler, in time.sleep "
                  f"({sleeper.get('nccl', {}).get('last_entries')})")
    finally:
        for pr in procs:
            pr.send_signal(signal.SIGKILL)
            pr.wait()
    failed = [w for ok, w in results if not ok]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed (work dir {work})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
