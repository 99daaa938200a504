"""`hpcjobs why` on real jobs made to fail each way the sandbox can produce: a time limit, the
warning signal ending a program that ignores hpcjobs.preempted(), host memory (Python's
MemoryError; a SIGKILL as the kernel's OOM killer sends it), a missing module, a missing
command, the master port already taken (torch's own EADDRINUSE), a plain non-zero exit, a
cancel, and a success. The sandbox has no accounting: the state comes from scontrol.

Issue 11, points 9-10: a 3-node job whose last rank raises KeyError (srun then SIGTERMs the
others: the job's exit code is 143, the rank's own 1); a job whose --after job fails, so that
Slurm cancels it (--kill-on-invalid-dep=yes); a held job and one waiting for its --begin; a
requeued job whose first run ran out of memory and whose second exited 3.

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

KEYERROR_PROG = """\
import os, sys, time
rank, last = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"]) - 1
print(f"rank {rank} on {os.uname().nodename}", flush=True)
time.sleep(1)
if rank == last:
    config = {"lr": 0.1}
    config["batch_size"]
time.sleep(120)  # the others wait until srun ends them
"""
# Run 1 (no restart yet) runs out of memory; run 2, after `scontrol requeue`, exits 3.
REQUEUED_PROG = ('if [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then exec python3 -c '
                 '"bytearray(10**15)"; else echo "error: input file is empty" >&2; exit 3; fi')

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
    # point 9: up to 3 nodes, one rank each; the last rank fails
    "rank_keyerror": (["mpi", "--nodes", "{nodes}"], [PY, "{keyerror_prog}"]),
    # point 10: the job the dependent one waits for is held until the test releases it
    "dep_parent": (["mpi", "--sbatch-arg=--hold"], ["sh", "-c", "echo 'error: no data' >&2; "
                                                     "exit 3"]),
    "dep_child": (["mpi", "--after", "{dep_parent}"], ["echo", "never"]),
    "held": (["mpi", "--sbatch-arg=--hold"], ["echo", "held"]),
    "begin": (["mpi", "--begin", "now+1hour"], ["echo", "later"]),
    "requeued": (["mpi", "--requeue"], ["sh", "-c", REQUEUED_PROG]),
}


@pytest.fixture(scope="module")
def jobs(sandbox, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("why")
    os.chmod(tmp, 0o777)
    (tmp / "port_prog.py").write_text(PORT_PROG)
    (tmp / "keyerror_prog.py").write_text(KEYERROR_PROG)
    env = {**os.environ, "HPCJOBS_RUNS_DIR": str(tmp / "runs")}
    ids = {}
    fill = {"{port_prog}": str(tmp / "port_prog.py"), "{keyerror_prog}":
            str(tmp / "keyerror_prog.py"), "{nodes}": str(min(3, sandbox.n))}
    for name, (kind, prog) in JOBS.items():
        if name == "port_in_use":
            try:
                import torch  # noqa: F401
            except ImportError:
                continue
        fill["{dep_parent}"] = ids.get("dep_parent", "")
        prog = [fill.get(a, a) for a in prog]
        opts = [fill.get(a, a) for a in kind[1:]]
        if "--nodes" not in opts:
            opts = ["--nodes", "1", *opts]
        r = hpcjobs("submit", kind[0], *opts, "--json", "--", *prog, env=env)
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
        assert r["findings"][0]["key"] == r["state"].lower()


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


# --- issue 11, point 9 ----------------------------------------------------------------------

def test_the_rank_that_failed_first_is_named_not_the_peers_srun_killed(jobs, sandbox):
    """The last rank raises KeyError (exit 1); srun ends the others with SIGTERM, so the job's
    exit code is 143. `why` names that rank, its node, its own exit code and its traceback."""
    ids, env = jobs
    v = why(ids["rank_keyerror"], env)
    n = min(3, sandbox.n)
    st = json.loads(hpcjobs("status", ids["rank_keyerror"], "--json", env=env).stdout)[0]
    import hostlist

    node = hostlist.expand_hostlist(st["nodes"])[n - 1]  # one task per node, in node order
    assert v["state"] == "FAILED" and v["exit_code"] == 143, v
    first = v["findings"][0]
    assert first["key"] == "exit_code", v
    assert first["cause"].startswith(f"rank {n - 1} on {node} failed first: exited with code 1 "
                                     "(KeyError: 'batch_size')"), first
    assert "exited with code 143" not in first["cause"]
    f = v["failure"]
    assert (f["rank"], f["node"], f["exit_code"]) == (n - 1, node, 1), f
    assert f["traceback"][-1] == "KeyError: 'batch_size'"
    assert 'config["batch_size"]' in "\n".join(f["traceback"])


# --- point 10 -------------------------------------------------------------------------------

def test_a_dependency_that_failed_is_named_not_scancel(jobs):
    """While its --after job is held, the child pends on Dependency and `why` names that job;
    once the parent fails (exit 3), Slurm cancels the child (--kill-on-invalid-dep=yes, which
    the templates set): JobState=CANCELLED Reason=DependencyNeverSatisfied on 22.05."""
    ids, env = jobs
    parent, child = ids["dep_parent"], ids["dep_child"]
    r = hpcjobs("why", child, "--json", env=env)
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    assert v["state"] == "PENDING" and v["cause"] == "pending", v
    assert f"it waits for job {parent}, which is PENDING" in v["findings"][0]["cause"], v
    subprocess.run(["scontrol", "release", parent], check=True)
    assert hpcjobs("wait", parent, env=env, timeout=120).returncode == 1
    v = why(child, env)
    assert (v["state"], v["reason"], v["cause"]) == ("CANCELLED", "DependencyNeverSatisfied",
                                                     "dependency"), v
    first = v["findings"][0]
    assert first["cause"].startswith(f"the job never ran: its dependency can never be "
                                     f"satisfied: afterok:{parent} needs job {parent} to have "
                                     f"ended successfully (COMPLETED), but it ended FAILED, "
                                     f"exit code 3"), first
    assert f"Dependency=afterok:{parent}(failed)" in first["evidence"]
    assert f"--after {parent}:any" in first["fix"]


@pytest.mark.parametrize("name,reason,words,fix", [
    ("held", "JobHeldUser", "it is held by its owner", "`scontrol release {id}`"),
    ("begin", "BeginTime", "its earliest start time has not come yet",
     "`scontrol update jobid={id} StartTime=now`"),
])
def test_a_pending_job_says_why_it_pends(jobs, name, reason, words, fix):
    ids, env = jobs
    r = hpcjobs("why", ids[name], "--json", env=env)
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    first = v["findings"][0]
    assert (v["state"], v["reason"], first["key"]) == ("PENDING", reason, "pending"), v
    assert first["cause"].startswith(f"the job is pending: {words}"), first
    assert f"(Slurm's reason: {reason})" in first["cause"]
    assert fix.format(id=ids[name]) in first["fix"]
    if name == "begin":
        assert "Slurm expects it to start at " in first["cause"]


def test_after_a_requeue_the_last_run_is_judged(jobs):
    """Run 1 dies of MemoryError (FAILED), `scontrol requeue` (Restarts=1), released after 3 s
    (sooner: "Job credential revoked"), run 2 exits 3. The output holds both runs; the restart
    line the script prints splits them: the cause is run 2's, run 1's is a remark."""
    ids, env = jobs
    jid = ids["requeued"]
    assert hpcjobs("wait", jid, env=env, timeout=120).returncode == 1
    subprocess.run(["scontrol", "requeue", jid], check=True)
    time.sleep(3)
    subprocess.run(["scontrol", "update", f"jobid={jid}", "StartTime=now"], check=True)
    deadline = time.monotonic() + 120
    while True:  # wait sees the requeued job once Slurm has it pending again
        st = json.loads(hpcjobs("status", jid, "--json", env=env).stdout)[0]
        if st["restarts"] == 1 and st["state"] in ("FAILED", "COMPLETED"):
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.5)
    v = why(jid, env)
    assert (v["state"], v["exit_code"], v["runs"]) == ("FAILED", 3, 2), v
    first = v["findings"][0]
    assert first["key"] == "exit_code" and first["run"] is None, v
    assert "exited with code 3 (error: input file is empty)" in first["cause"], first
    earlier = [f for f in v["findings"] if f["run"] is not None]
    assert [(f["key"], f["run"]) for f in earlier] == [("oom_host", 1)], v
    assert earlier[0]["cause"] == "run 1 of 2 ended: out of memory on the host (RAM)", v
    assert earlier[0]["evidence"].endswith(": MemoryError")
