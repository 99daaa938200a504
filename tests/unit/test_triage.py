"""`hpcjobs why`: the classification over recorded job output (tests/fixtures/triage/, most of
it real output of jobs failed on purpose on the sandbox; README.md there says which) and over
Slurm states alone. Real jobs: tests/integration/test_why.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hpcjobs.triage import RULES, Facts, classify, read_log
from tests.conftest import FIXTURES, ROOT

TRIAGE = FIXTURES / "triage"


def verdict(name: str, **facts) -> list[str]:
    path = TRIAGE / name
    found = classify(Facts(job_id="1", log_path=str(path), log=read_log(path), **facts))
    return [f.key for f in found]


# (fixture, Slurm's state and exit code as scontrol reported them, primary cause, remarks)
CASES = [
    ("time_limit.out", dict(state="TIMEOUT", exit_code=0, signal=15), "time_limit", []),
    ("warning_unhandled.out", dict(state="FAILED", exit_code=140), "warning_unhandled",
     ["not_requeueable"]),
    ("requeued_resumed.out", dict(state="COMPLETED", exit_code=0, restarts=1), "completed",
     ["requeued"]),
    ("host_memoryerror.out", dict(state="FAILED", exit_code=1), "oom_host", []),
    ("host_killed.out", dict(state="FAILED", exit_code=137), "oom_killed", []),
    ("credential_revoked.out", dict(state="FAILED", exit_code=168, restarts=1), "cred_revoked",
     ["requeued"]),
    ("cgroup_oom.out", dict(state="OUT_OF_MEMORY", exit_code=0, signal=9), "oom_host", []),
    ("cuda_oom_then_nccl_timeout.out", dict(state="FAILED", exit_code=1), "oom_cuda",
     ["nccl_timeout"]),
    ("nccl_timeout.out", dict(state="FAILED", exit_code=134), "nccl_timeout", []),
    ("nccl_socket_completed.out", dict(state="COMPLETED", exit_code=0), "completed",
     ["nccl_socket"]),
    ("eaddrinuse_torch.out", dict(state="FAILED", exit_code=1), "port_in_use", []),
    ("port_in_use_launcher.out", dict(state="FAILED", exit_code=2), "port_in_use", []),
    ("missing_module.out", dict(state="FAILED", exit_code=1), "missing_module", []),
    ("command_not_found.out", dict(state="FAILED", exit_code=127), "missing_module", []),
    ("plain_exit.out", dict(state="FAILED", exit_code=3), "exit_code", []),
    ("node_failure.out", dict(state="NODE_FAIL", exit_code=0), "node_fail", []),
    ("abort_at_exit.out", dict(state="FAILED", exit_code=143), "abort_at_exit", ["nccl_socket"]),
]


@pytest.mark.parametrize("name,facts,cause,remarks", CASES, ids=[c[0] for c in CASES])
def test_recorded_output_is_classified(name, facts, cause, remarks):
    keys = verdict(name, **facts)
    assert keys[0] == cause, keys
    for r in remarks:
        assert r in keys[1:], keys


@pytest.mark.parametrize("name,facts,cause,remarks", CASES, ids=[c[0] for c in CASES])
def test_the_log_alone_is_enough_without_slurm(name, facts, cause, remarks):
    """Slurm forgot the job and there is no accounting: the output still tells the cause
    (time limit, node failure and the rest print their own line)."""
    if name == "cgroup_oom.out" or cause == "completed":
        pytest.skip("the success of a job is Slurm's word, not the log's")
    assert verdict(name, state="UNKNOWN")[0] == cause


def test_every_finding_has_evidence_and_a_fix():
    for name, facts, _, _ in CASES:
        path = TRIAGE / name
        for f in classify(Facts(job_id="1", log_path=str(path), log=read_log(path), **facts)):
            assert f.evidence and f.fix and f.cause, (name, f)
            assert "\n" not in f.evidence
    # Evidence from the output names the file and line.
    first = classify(Facts(job_id="1", log_path=str(TRIAGE / "missing_module.out"),
                           log=read_log(TRIAGE / "missing_module.out"), state="FAILED"))[0]
    assert first.evidence.startswith("missing_module.out:6: ModuleNotFoundError")


@pytest.mark.parametrize("state,reason,restarts,cause", [
    ("TIMEOUT", "TimeLimit", 0, "time_limit"),
    ("NODE_FAIL", "NodeDown", 0, "node_fail"),
    ("OUT_OF_MEMORY", "OutOfMemory", 0, "oom_host"),
    ("PREEMPTED", "", 0, "preempted"),
    ("CANCELLED", "", 0, "cancelled"),
    ("PENDING", "BeginTime", 1, "requeued"),
    ("RUNNING", "", 0, "running"),
    ("COMPLETED", "", 0, "completed"),
    ("FAILED", "NonZeroExitCode", 0, "exit_code"),
])
def test_slurm_state_alone(state, reason, restarts, cause):
    found = classify(Facts(job_id="9", state=state, reason=reason, restarts=restarts,
                           exit_code=0 if state != "FAILED" else 2, source="scontrol"))
    assert found[0].key == cause
    assert found[0].evidence.startswith("Slurm (scontrol): JobState=" + state)


def test_a_requeued_pending_job_says_how_to_release_it():
    f = classify(Facts(job_id="9", state="PENDING", reason="BeginTime", restarts=1))[0]
    assert "scontrol update jobid=9 StartTime=now" in f.fix


def test_cancelled_by_the_time_limit_is_a_time_limit():
    assert verdict("time_limit.out", state="CANCELLED")[0] == "time_limit"


def test_tasks_killed_by_srun_after_another_failure_are_not_oom():
    """--kill-on-bad-exit: srun kills the other ranks ("task 1: Killed") after one failed."""
    log = ["Traceback (most recent call last):", "ModuleNotFoundError: No module named 'x'",
           "srun: error: node1: task 0: Exited with exit code 1",
           "srun: launch/slurm: _step_signal: Terminating StepId=5.0",
           "srun: error: node2: task 1: Killed"]
    assert [f.key for f in classify(Facts(job_id="5", state="FAILED", exit_code=1, log=log))] \
        == ["missing_module"]


def test_completed_job_is_not_blamed_on_a_line_it_survived():
    """A MemoryError the program caught is not why a COMPLETED job ended."""
    found = classify(Facts(job_id="1", state="COMPLETED", exit_code=0,
                           log=["MemoryError", "retrying with smaller batches", "done"]))
    assert [f.key for f in found] == ["completed"]


def test_rules_are_unique_and_compile():
    import re

    assert len({r.key for r in RULES}) == len(RULES)
    for r in RULES:
        re.compile(r.pattern)


def test_cli_why_with_a_log_file_and_no_slurm(tmp_path):
    """`hpcjobs why JOBID --log FILE` on a machine whose Slurm does not answer: the log decides,
    Slurm's error is a note, exit 0; --json for scripts."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable),  # python, no Slurm commands
           "HPCJOBS_RUNS_DIR": str(tmp_path / "runs")}
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "why", "4711", "--log",
                        str(TRIAGE / "nccl_timeout.out"), "--json"], capture_output=True,
                       text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    assert v["cause"] == "nccl_timeout" and v["state"] == "UNKNOWN"
    assert any("Slurm did not answer" in n for n in v["notes"])
    text = subprocess.run([sys.executable, "-m", "hpcjobs", "why", "4711", "--log",
                           str(TRIAGE / "nccl_timeout.out")], capture_output=True, text=True,
                          env=env, cwd=ROOT).stdout
    assert "cause:    an NCCL collective timed out" in text
    assert "evidence: nccl_timeout.out:4: [rank0]" in text and "fix:      " in text


def test_cli_why_bad_job_id_is_exit_2(tmp_path):
    env = {**os.environ, "HPCJOBS_RUNS_DIR": str(tmp_path / "runs")}
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "why", "12;rm"], capture_output=True,
                       text=True, env=env, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.startswith("hpcjobs: error: JOBID")
    assert r.stderr.count("\n") == 1
