"""`hpcjobs why` on real jobs made to fail each way the sandbox can produce: a time limit, the
warning signal ending a program that ignores hpcjobs.preempted(), host memory (Python's
MemoryError; a SIGKILL as the kernel's OOM killer sends it), a missing module, a missing
command, the master port already taken (torch's own EADDRINUSE), a plain non-zero exit, a
cancel, and a success. The sandbox has no accounting: the state comes from scontrol.

Requeue and node failure are classified in test_requeue.py and test_faults.py, on the jobs
those tests make; CUDA out-of-memory and NCCL need GPUs and are recorded logs
(tests/unit/test_triage.py).

All jobs are submitted at once (module fixture), so the two that wait for a time limit
overlap the others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import hpcjobs

PORT_PROG = """\
import os, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(os.environ["MASTER_PORT"]))); s.listen()  # taken before torch's turn
import torch.distributed as dist
dist.init_process_group("gloo")
"""

PY = sys.executable
# name -> (kind and options, program)
JOBS = {
    "time_limit": (["mpi", "--time", "1", "--signal-seconds", "30"],
                   ["sh", "-c", "trap '' USR2; sleep 300"]),
    "warning_unhandled": (["mpi", "--time", "1"], ["sleep", "300"]),
    "oom_host": (["mpi"], [PY, "-c", "bytearray(10**15)"]),
    "oom_host_killed": (["mpi"], [PY, "-c", "import os; os.kill(os.getpid(), 9)"]),
    "missing_module": (["mpi"], [PY, "-c", "import nosuchmodule_hpcjobs_why"]),
    "missing_command": (["mpi"], ["no-such-command-hpcjobs-why"]),
    "port_in_use": (["train"], ["{port_prog}"]),
    "exit_code": (["mpi"], ["sh", "-c", "echo 'error: input file is empty' >&2; exit 3"]),
    "cancelled": (["mpi"], ["sleep", "300"]),
    "completed": (["mpi"], ["echo", "fine"]),
}


@pytest.fixture(scope="module")
def jobs(sandbox, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("why")
    os.chmod(tmp, 0o777)
    (tmp / "port_prog.py").write_text(PORT_PROG)
    env = {**os.environ, "HPCJOBS_RUNS_DIR": str(tmp / "runs")}
    ids = {}
    for name, (kind, prog) in JOBS.items():
        if name == "port_in_use":
            try:
                import torch  # noqa: F401
            except ImportError:
                continue
        prog = [a.replace("{port_prog}", str(tmp / "port_prog.py")) for a in prog]
        r = hpcjobs("submit", kind[0], "--nodes", "1", *kind[1:], "--json", "--", *prog, env=env)
        assert r.returncode == 0, (name, r.stderr)
        ids[name] = json.loads(r.stdout)["job_id"]
    yield ids, env
    subprocess.run(["scancel", *ids.values()], capture_output=True)


def why(job_id: str, env: dict) -> dict:
    w = hpcjobs("wait", job_id, env=env, timeout=300)
    assert w.returncode in (0, 1), w.stderr
    r = hpcjobs("why", job_id, "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("name,cause,words", [
    ("oom_host", "oom_host", "MemoryError"),
    ("oom_host_killed", "oom_killed", "task 0: Killed"),
    ("missing_module", "missing_module", "No module named 'nosuchmodule_hpcjobs_why'"),
    ("missing_command", "missing_module", "no-such-command-hpcjobs-why: command not found"),
    ("port_in_use", "port_in_use", "EADDRINUSE"),
    ("exit_code", "exit_code", "error: input file is empty"),
    ("completed", "completed", "JobState=COMPLETED"),
])
def test_why_names_the_cause_with_its_evidence(jobs, name, cause, words):
    ids, env = jobs
    if name not in ids:
        pytest.skip("needs torch")
    v = why(ids[name], env)
    first = v["findings"][0]
    assert first["key"] == cause, v
    assert words in first["evidence"], v
    assert first["fix"]


def test_why_exit_code_is_in_the_cause(jobs):
    ids, env = jobs
    assert "exited with code 3" in why(ids["exit_code"], env)["findings"][0]["cause"]


def test_why_text_output(jobs):
    ids, env = jobs
    hpcjobs("wait", ids["missing_module"], env=env)
    r = hpcjobs("why", ids["missing_module"], env=env)
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"job {ids['missing_module']}: FAILED")
    assert lines[1] == "cause:    a module or command is missing on the nodes"
    assert lines[2].startswith("evidence: slurm-") and "ModuleNotFoundError" in lines[2]
    assert lines[3].startswith("fix:      install it into the Python the job uses")


def test_why_cancelled(jobs):
    ids, env = jobs
    deadline = time.monotonic() + 60
    while json.loads(hpcjobs("status", ids["cancelled"], "--json", env=env).stdout)[0][
            "state"] != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    hpcjobs("cancel", ids["cancelled"], env=env)
    assert why(ids["cancelled"], env)["findings"][0]["key"] == "cancelled"


def test_why_while_running_says_so(jobs):
    ids, env = jobs
    r = json.loads(hpcjobs("why", ids["time_limit"], "--json", env=env).stdout)
    if r["state"] in ("PENDING", "RUNNING"):
        assert r["findings"][0]["key"] == "running"


def test_warning_signal_does_not_kill_a_program_that_did_not_ask_for_it(jobs):
    """`sleep` does not handle SIGUSR2. hpcjobs.launch starts programs with the warning signal
    ignored (only hpcjobs.preempted() turns it on), so the forwarded warning 30 s before the
    1-minute limit does not end it early: it runs into the limit, and `why` says so. (Without
    the launcher it would die of SIGUSR2: the warning_unhandled rule, unit-tested on a log.)"""
    ids, env = jobs
    v = why(ids["warning_unhandled"], env)
    assert v["state"] == "TIMEOUT", v
    keys = [f["key"] for f in v["findings"]]
    assert keys[0] == "time_limit" and "warning_unhandled" not in keys, v


def test_why_time_limit(jobs):
    """A program that ignores the warning runs into the limit: TIMEOUT (Slurm checks limits
    about every 30 s, so this takes 60-90 s)."""
    ids, env = jobs
    v = why(ids["time_limit"], env)
    assert v["state"] == "TIMEOUT"
    first = v["findings"][0]
    assert first["key"] == "time_limit" and "DUE TO TIME LIMIT" in first["evidence"], v
