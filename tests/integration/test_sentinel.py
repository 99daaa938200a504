"""The hang sentinel on the real sandbox: a 3-node gloo job whose rank 1 stops before an
all_reduce (it sleeps, or takes SIGSTOP) is found within the timeout + 30 s, every rank's stacks
are in the run record and name the right lines, the step is cancelled (or the job requeued, and
the second run completes when the fault was one-off); a slow job that progresses only by its
heartbeats, then only by its output, is never stopped.

Each test is one short job (a 20 s or 10 s timeout); the times are in the sentinel's report and
docs/benchmarks.md, never asserted beyond the issue's bound.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import hpcjobs, scontrol_job, wait_job

pytest.importorskip("torch")

EXAMPLE = ROOT / "examples" / "hang_gloo.py"
TIMEOUT = 20


def line_of(marker: str) -> int:
    """The example's line that carries ``# sentinel-test: MARKER``."""
    for i, text in enumerate(EXAMPLE.read_text().splitlines(), 1):
        if text.rstrip().endswith(f"# sentinel-test: {marker}"):
            return i
    raise AssertionError(marker)


def submit(env: dict, *args: str) -> tuple[str, Path]:
    r = hpcjobs("submit", "train", "--nodes", "3", "--time", "4", "--json", *args, env=env)
    assert r.returncode == 0, r.stderr
    sub = json.loads(r.stdout)
    return sub["job_id"], Path(sub["run_dir"])


def sentinel_dir(run_dir: Path, job_id: str, restart: int = 0) -> Path:
    return run_dir / "sentinel" / job_id / f"run-{restart}"


def fault_time(output: str) -> float:
    m = re.search(r"^rank 1: hanging \((?:sleep|stop)\) before step \d+ at ([\d.]+)$", output, re.M)
    assert m, output
    return float(m.group(1))


def test_rank_sleeping_before_all_reduce_is_found_named_and_cancelled(sandbox, runs_env):
    sandbox.need(3)
    job_id, run_dir = submit(runs_env, "--hang-timeout", f"{TIMEOUT}s", "--", str(EXAMPLE),
                             "--hang-rank", "1", "--hang-at", "5", "--steps", "1000")
    f = wait_job(job_id, timeout=180)
    out = (run_dir / f"slurm-{job_id}.out").read_text()
    assert f["JobState"] == "FAILED", out  # stopped by the sentinel, long before its 4 minutes
    d = sentinel_dir(run_dir, job_id)
    report = json.loads((d / "report.json").read_text())
    ranks = {r["rank"]: r for r in report["ranks"]}
    assert sorted(ranks) == [0, 1, 2] and {r["host"] for r in ranks.values()} == {"node1", "node2", "node3"}
    a, s = line_of("all_reduce"), line_of("sleep")
    assert report["summary"] == (f"hung: ranks 0,2 in all_reduce (hang_gloo.py:{a}), rank 1 in "
                                 f"time.sleep (hang_gloo.py:{s})")
    assert report["stragglers"] == [1]
    stacks = (d / "stacks.txt").read_text()
    assert stacks.count(f'hang_gloo.py", line {a}, in main') == 2
    assert stacks.count(f'hang_gloo.py", line {s}, in fault') == 1
    t = report["timings"]
    assert t["stacks_in_record"] - fault_time(out) <= TIMEOUT + 30, t
    assert t["stacks_in_record"] <= t["cancel_sent"] <= float((d / "ended").read_text()), t
    assert f"cancelling step {job_id}." in out and "CANCELLED AT" in out
    assert "step 999" not in out  # it never got far

    why = hpcjobs("why", job_id, env=runs_env)
    assert f"cause:    hung: ranks 0,2 in all_reduce (hang_gloo.py:{a}), rank 1 in time.sleep " \
           f"(hang_gloo.py:{s})" in why.stdout, why.stdout
    assert "never reached the collective" in why.stdout and str(d / "stacks.txt") in why.stdout


def test_stopped_rank_requeued_then_completes(sandbox, runs_env, shared_tmp):
    sandbox.need(3)
    once = shared_tmp / "hung-once"
    job_id, run_dir = submit(runs_env, "--hang-timeout", f"{TIMEOUT}s", "--requeue", "--",
                             str(EXAMPLE), "--hang-rank", "1", "--hang-at", "3", "--hang-how",
                             "stop", "--once", str(once), "--steps", "12")
    deadline, released = time.monotonic() + 240, False
    while time.monotonic() < deadline:
        f = scontrol_job(job_id)
        if f.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            break
        if f.get("JobState") == "PENDING" and f.get("Reason") == "BeginTime" and not released:
            time.sleep(3)  # a release within the second of the requeue is refused
            subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True)
            released = True
        time.sleep(0.5)
    out = (run_dir / f"slurm-{job_id}.out").read_text()
    assert f.get("JobState") == "COMPLETED" and f.get("Restarts") == "1", out
    report = json.loads((sentinel_dir(run_dir, job_id, 0) / "report.json").read_text())
    stopped = [r for r in report["ranks"] if r["state"] == "T"]
    assert [r["rank"] for r in stopped] == [1] and stopped[0]["pyspy"] == "nonblocking"
    assert report["summary"] == (f"hung: ranks 0,2 in all_reduce (hang_gloo.py:{line_of('all_reduce')}), "
                                 f"rank 1 stopped in os.kill (hang_gloo.py:{line_of('stop')})")
    assert report["timings"]["stacks_in_record"] - fault_time(out) <= TIMEOUT + 30
    assert f"hpcjobs: requeueing job {job_id} after a hang" in out
    assert "done: 12 steps on 3 ranks" in out  # the second run, without the fault
    assert not (sentinel_dir(run_dir, job_id, 1) / "hung").exists()


def test_slow_but_progressing_job_is_never_stopped(sandbox, runs_env):
    """4 s steps under a 10 s timeout: steps 0-3 tell only by heartbeats (no prints), steps 4-7
    only by their output (no heartbeats)."""
    sandbox.need(3)
    job_id, run_dir = submit(runs_env, "--hang-timeout", "10s", "--", str(EXAMPLE), "--steps", "8",
                             "--step-seconds", "4", "--quiet-until", "4", "--heartbeat-until", "4")
    f = wait_job(job_id, timeout=180)
    out = (run_dir / f"slurm-{job_id}.out").read_text()
    assert f["JobState"] == "COMPLETED", out
    assert "done: 8 steps on 3 ranks" in out and "step 3:" not in out and "step 7:" in out
    d = sentinel_dir(run_dir, job_id)
    assert not (d / "hung").exists() and not (d / "report.json").exists()
    assert "hpcjobs: sentinel: hung" not in out
    beats = sorted(p.name for p in (d / "heartbeat").iterdir())
    assert beats == ["rank-0", "rank-1", "rank-2"]
    watch = json.loads((d / "watch.json").read_text())
    assert watch["polls"] >= 10  # it watched the whole run
