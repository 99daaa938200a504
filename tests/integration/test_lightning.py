"""PyTorch Lightning's own SLURM auto-requeue under hpcjobs (issue 11.19), on the real sandbox.

A 3-node CPU Lightning Trainer (examples/train_lightning.py, no hpcjobs code in it) runs into its
time limit. `--signal-handler program` makes the launcher leave SIGUSR1 at its default
disposition, so Lightning installs its handler; at the warning the batch shell forwards the
signal to the step, Lightning saves <root>/hpc_ckpt_1.ckpt and runs `scontrol requeue` itself;
the batch script does not requeue a second time; the restarted job (SLURM_RESTART_COUNT=1)
resumes from the saved epoch and step and completes.

Timing: Slurm checks limits about every 30 s, so a warning due at T comes T to T+30 s into the
run, and the kill for the limit itself one check after the limit. Lightning's handler must be in
place when the warning comes: a signal that arrives while torch and Lightning are still
importing kills the tasks (SIGUSR1's default action), and on this shared 2-core machine three
such starts took more than 30 s under load (a first version with `--time 1 --signal-seconds 30`
failed that way once). So `--time 2 --signal-seconds 60`: the warning comes 60-90 s in, and the
9 x 20 steps of 0.5 s (90 s) cannot finish before it. Slurm holds a requeued job ~2 minutes
(BeginTime); the test releases it with `scontrol update StartTime=now`, as test_requeue.py does,
and raises the restarted run's limit to 4 minutes (`TimeLimit=4`, as an operator may), so that
it finishes instead of being warned and requeued again: one restart, exactly.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import hpcjobs, scontrol_job

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

EXAMPLE = str(ROOT / "examples" / "train_lightning.py")
EPOCHS, STEPS = 9, 20  # steps per epoch on each rank


def follow(job_id: str, timeout: float) -> dict:
    """Wait for the end; once the job is requeued and held, give the next run more time and
    release it (a few seconds after the requeue: a step started within the second the nodes
    dropped the old run is refused, "Job credential revoked")."""
    deadline = time.monotonic() + timeout
    held_since = None
    while time.monotonic() < deadline:
        f = scontrol_job(job_id)
        state = f.get("JobState", "")
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED"):
            return f
        if state == "PENDING" and f.get("Reason") == "BeginTime":
            if held_since is None:
                held_since = time.monotonic()
                subprocess.run(["scontrol", "update", f"jobid={job_id}", "TimeLimit=4"],
                               capture_output=True, check=True)
            if time.monotonic() - held_since >= 3:
                subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"],
                               capture_output=True)
        else:
            held_since = None
        time.sleep(0.5)
    subprocess.run(["scancel", job_id], capture_output=True)
    pytest.fail(f"job {job_id} did not end within {timeout:.0f} s: {scontrol_job(job_id)}")


def test_lightning_checkpoints_and_requeues_itself_at_the_time_limit(sandbox, runs_env, shared_tmp):
    sandbox.need(3)
    root = shared_tmp / "lightning"
    root.mkdir()
    sub = hpcjobs("submit", "train", "--nodes", "3", "--time", "2", "--signal", "USR1",
                  "--signal-seconds", "60", "--signal-handler", "program", "--requeue", "--json", "--",
                  EXAMPLE, "--epochs", str(EPOCHS), "--steps-per-epoch", str(STEPS),
                  "--step-seconds", "0.5", "--root", str(root), env=runs_env)
    assert sub.returncode == 0, sub.stderr
    job_id = json.loads(sub.stdout)["job_id"]
    out_file = Path(json.loads(sub.stdout)["run_dir"]) / f"slurm-{job_id}.out"
    end = follow(job_id, timeout=600)
    out = out_file.read_text()
    warned = out.find("hpcjobs: SIGUSR1: time limit or preemption near")
    if 0 <= warned < out.find("SLURM auto-requeueing enabled") or (
            warned >= 0 and "SLURM auto-requeueing enabled" not in out):
        pytest.fail("the warning came before Lightning had installed its handler (its start took "
                    f"longer than the 60 s to the warning; load {os.getloadavg()}):\n{out}")
    assert end["JobState"] == "COMPLETED", out
    assert int(end["Restarts"]) == 1, out

    # The warning came from the time limit, through the batch shell, to every rank.
    assert "hpcjobs: SIGUSR1: time limit or preemption near; forwarding to the job step" in out
    # Lightning's handler, not hpcjobs', acted on it: checkpoint, then its own requeue.
    assert "Handling auto-requeue signal: 10" in out, out
    assert f"Requeued SLURM job: {job_id}" in out, out
    assert "hpcjobs: requeueing job" not in out and "DUE TO TIME LIMIT" not in out, out

    # The checkpoint is Lightning's, written at the signal, and the only one.
    assert sorted(p.name for p in root.glob("hpc_ckpt_*.ckpt")) == ["hpc_ckpt_1.ckpt"]
    ckpt = torch.load(root / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=False)
    saved = re.findall(r"^checkpoint: epoch (\d+) step (\d+)$", out, re.M)
    assert saved == [(str(ckpt["epoch"]), str(ckpt["global_step"]))], out
    assert 0 < ckpt["global_step"] < EPOCHS * STEPS

    # Two runs of 3 ranks on 3 nodes: the first from scratch, the second (SLURM_RESTART_COUNT=1)
    # from that checkpoint's epoch and step, to the end.
    starts = re.findall(r"^start: epoch (\d+) step (\d+) restart (\d+) from (\S+)$", out, re.M)
    assert starts == [("0", "0", "0", "scratch"),
                      (str(ckpt["epoch"]), str(ckpt["global_step"]), "1", str(root / "hpc_ckpt_1.ckpt"))], out
    hosts = re.findall(r"^rank (\d)/3 on (\S+)$", out, re.M)
    assert len(hosts) == 6 and len({h for _, h in hosts}) == 3, hosts
    done = re.search(r"^training done: (\d+) epochs, (\d+) steps, loss (\S+)$", out, re.M)
    assert done and done.group(1, 2) == (str(EPOCHS), str(EPOCHS * STEPS)), out
    first_loss = float(re.search(r"^step 1 loss (\S+)$", out, re.M).group(1))
    assert float(done.group(3)) < first_loss * 0.2, out  # and it learned across the restart
