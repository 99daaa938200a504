"""Time limit and preemption on the real sandbox: the warning signal reaches the program through
the batch shell's trap, srun and the launcher; examples/train_ddp.py checkpoints on
hpcjobs.preempted(); the batch script requeues the job; the restarted job resumes, and the step
count continues instead of starting over.

Slurm holds a requeued job about two minutes before it may run again (EligibleTime = requeue +
~121 s on 22.05); the tests release it at once with `scontrol update jobid=N StartTime=now`,
as a user in a hurry would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import hpcjobs, scontrol_job

pytest.importorskip("torch")

EXAMPLE = str(ROOT / "examples" / "train_ddp.py")


def follow_to_the_end(job_id: str, timeout: float) -> dict:
    """Wait for the job's end, releasing Slurm's requeue delay whenever it is held by it -- a
    few seconds after the requeue, not at once: a step started within the second the nodes
    dropped the old run is refused ("Job credential revoked")."""
    deadline = time.monotonic() + timeout
    held_since = None
    while time.monotonic() < deadline:
        f = scontrol_job(job_id)
        state = f.get("JobState", "")
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED"):
            return f
        if state == "PENDING" and f.get("Reason") == "BeginTime":
            held_since = held_since or time.monotonic()
            if time.monotonic() - held_since >= 3:
                subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"],
                               capture_output=True)
        else:
            held_since = None
        time.sleep(0.5)
    subprocess.run(["scancel", job_id], capture_output=True)
    pytest.fail(f"job {job_id} did not end within {timeout:.0f} s: {scontrol_job(job_id)}")


def wait_for_line(path: Path, pattern: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and re.search(pattern, path.read_text(), re.M):
            return
        time.sleep(0.2)
    pytest.fail(f"no line matching {pattern!r} in {path} after {timeout:.0f} s")


def check_resumed(out: str, epochs: int, steps_per_epoch: int = 20) -> int:
    """Every epoch ran exactly once, steps only grow, each resume starts where a checkpoint
    stopped; returns the number of resumes."""
    rows = [(int(e), int(s)) for e, s in re.findall(r"^epoch (\d+)/\d+ step (\d+) loss", out, re.M)]
    assert [e for e, _ in rows] == list(range(1, epochs + 1)), out
    assert [s for _, s in rows] == [e * steps_per_epoch for e, _ in rows], out
    stops = re.findall(r"^warning signal: checkpointed at epoch (\d+), step (\d+)", out, re.M)
    resumes = re.findall(r"^resumed from \S+: epoch (\d+), step (\d+)", out, re.M)
    assert stops and stops == resumes, out
    assert f"training done: {epochs} epochs, {epochs * steps_per_epoch} steps" in out
    losses = [float(x) for x in re.findall(r"^epoch \d+/\d+ step \d+ loss (\S+)", out, re.M)]
    assert losses[-1] < losses[0] * 0.5, f"loss did not fall across the restarts: {losses}"
    return len(resumes)


def test_time_limit_warning_checkpoint_requeue_resume(sandbox, runs_env, shared_tmp):
    """The real thing: --time 2 with the warning 60 s before; 60 epochs of 2 s cannot fit one
    run. Slurm checks time limits about every 30 s, so the warning comes 60-90 s in; the job may
    be warned more than once, and each run continues from the last checkpoint."""
    sandbox.need(2)
    ckpt = shared_tmp / "ckpt"
    epochs = 60
    sub = hpcjobs("submit", "train", "--nodes", "2", "--time", "2", "--signal-seconds", "60",
                  "--requeue", "--json", "--", EXAMPLE, "--epochs", str(epochs),
                  "--epoch-seconds", "2", "--checkpoint", str(ckpt), env=runs_env)
    assert sub.returncode == 0, sub.stderr
    job_id = json.loads(sub.stdout)["job_id"]
    out_file = Path(json.loads(sub.stdout)["run_dir"]) / f"slurm-{job_id}.out"
    end = follow_to_the_end(job_id, timeout=600)
    out = out_file.read_text()
    assert end["JobState"] == "COMPLETED", out
    assert int(end["Restarts"]) >= 1
    assert check_resumed(out, epochs) == int(end["Restarts"])
    assert "hpcjobs: SIGUSR2: time limit or preemption near; forwarding to the job step" in out
    assert "DUE TO TIME LIMIT" not in out
    why = json.loads(hpcjobs("why", job_id, "--json", env=runs_env).stdout)
    keys = [f["key"] for f in why["findings"]]
    assert keys[0] == "completed" and "requeued" in keys, why


def test_preemption_signal_now_checkpoint_requeue_resume(sandbox, runs_env, shared_tmp):
    """The same path without waiting for a time limit: the signal Slurm would send
    (`scancel --batch --signal USR2`, what --signal=B: does) at a moment we choose."""
    sandbox.need(2)
    ckpt = shared_tmp / "ckpt"
    sub = hpcjobs("submit", "train", "--nodes", "2", "--requeue", "--json", "--", EXAMPLE,
                  "--epochs", "6", "--epoch-seconds", "1", "--checkpoint", str(ckpt), env=runs_env)
    assert sub.returncode == 0, sub.stderr
    job_id = json.loads(sub.stdout)["job_id"]
    out_file = Path(json.loads(sub.stdout)["run_dir"]) / f"slurm-{job_id}.out"
    wait_for_line(out_file, r"^epoch 2/6 ")
    subprocess.run(["scancel", "--batch", "--signal=USR2", job_id], check=True)
    wait_for_line(out_file, r"^hpcjobs: requeueing job")
    # hpcjobs status sees the requeue while Slurm holds the job.
    deadline = time.monotonic() + 30
    while True:
        st = json.loads(hpcjobs("status", job_id, "--json", env=runs_env).stdout)[0]
        if st["restarts"] >= 1:
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    end = follow_to_the_end(job_id, timeout=300)
    out = out_file.read_text()
    assert end["JobState"] == "COMPLETED", out
    assert check_resumed(out, 6) == int(end["Restarts"]) >= 1
    # The first run's output is still there: the template appends (--open-mode=append).
    assert out.count("all_reduce sum") == int(end["Restarts"]) + 1


@pytest.mark.parametrize("requeue", [True, False], ids=["sbatch--requeue", "sbatch--no-requeue"])
def test_direct_template_reads_the_jobs_own_requeue_flag(sandbox, shared_tmp, requeue):
    """`sbatch --requeue job_templates/train.sbatch ...`: the script has no HPCJOBS_REQUEUE baked
    in and asks Slurm for the job's Requeue flag when the warning comes."""
    ckpt = shared_tmp / f"ckpt-{int(requeue)}"
    env = {**os.environ, "HPCJOBS_PYTHON": sys.executable}
    env.pop("HPCJOBS_REQUEUE", None)
    p = subprocess.run(["sbatch", "--parsable", "--nodes=1",
                        "--requeue" if requeue else "--no-requeue",
                        f"--output={shared_tmp}/direct-%j.out",
                        str(ROOT / "job_templates" / "train.sbatch"), EXAMPLE, "--epochs", "5",
                        "--epoch-seconds", "1", "--checkpoint", str(ckpt)],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    job_id = p.stdout.strip().split(";")[0]
    out_file = shared_tmp / f"direct-{job_id}.out"
    wait_for_line(out_file, r"^epoch 2/5 ")
    subprocess.run(["scancel", "--batch", "--signal=USR2", job_id], check=True)
    end = follow_to_the_end(job_id, timeout=300)
    out = out_file.read_text()
    assert end["JobState"] == "COMPLETED", out
    if requeue:
        assert int(end["Restarts"]) == 1 and check_resumed(out, 5) == 1
    else:
        # Checkpointed and stopped; not requeued, and it says why.
        assert int(end["Restarts"]) == 0
        assert "is not requeueable (--no-requeue); resubmit to continue from a checkpoint" in out
        assert re.search(r"^warning signal: checkpointed at epoch \d, step \d+", out, re.M)


def test_scontrol_requeue_of_a_no_requeue_job_is_refused_by_slurm(sandbox, shared_tmp):
    """Why the template asks first: Slurm refuses to requeue a --no-requeue job."""
    script = shared_tmp / "rq.sh"
    script.write_text("#!/bin/bash\nscontrol requeue \"$SLURM_JOB_ID\"; echo \"rc=$?\"\n")
    p = subprocess.run(["sbatch", "--parsable", "--no-requeue", "-N1",
                        f"--output={shared_tmp}/rq-%j.out", str(script)],
                       capture_output=True, text=True)
    job_id = p.stdout.strip()
    end = follow_to_the_end(job_id, timeout=60)
    out = (shared_tmp / f"rq-{job_id}.out").read_text()
    assert end["JobState"] == "COMPLETED" and int(end["Restarts"]) == 0
    assert "Requested operation is presently disabled" in out and "rc=1" in out
