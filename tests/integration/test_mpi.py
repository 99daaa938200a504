"""The mpi kind on the real sandbox: through the CLI, through the shipped template, and the
status / logs / cancel / wait commands on real jobs."""

import json
import os
import re
import sys
import time
from pathlib import Path


from tests.conftest import ROOT
from tests.integration.conftest import hpcjobs, run_job, scontrol_job

EXAMPLE = str(ROOT / "examples" / "mpi_allreduce.py")


def check_allreduce_output(out: str, n: int) -> None:
    ranks = re.findall(r"^rank (\d+) of (\d+) on (\S+)", out, re.M)
    assert sorted(int(r) for r, _, _ in ranks) == list(range(n)), out
    assert {int(s) for _, s, _ in ranks} == {n}, out
    assert len({h for _, _, h in ranks}) == n, f"ranks not on {n} distinct nodes:\n{out}"
    assert f"allreduce sum = {n * (n - 1) // 2} (expected {n * (n - 1) // 2})" in out
    assert ": OK" in out


def test_submit_mpi_wait_three_nodes(sandbox, runs_env):
    sandbox.need(3)
    r = hpcjobs("submit", "mpi", "--nodes", "3", "--wait", "--", sys.executable, EXAMPLE, env=runs_env)
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = re.search(r"Submitted batch job (\d+)", r.stdout).group(1)
    assert f"job {job_id} ended COMPLETED, exit code 0" in r.stdout
    out = hpcjobs("logs", job_id, env=runs_env).stdout
    check_allreduce_output(out, 3)
    # The record holds the exact script Slurm ran, the spec and the job id.
    st = json.loads(hpcjobs("status", "--json", env=runs_env).stdout)
    mine = [s for s in st if s["job_id"] == job_id]
    assert mine and mine[0]["state"] == "COMPLETED" and mine[0]["kind"] == "mpi"
    run_dir = mine[0]["run_dir"]
    meta = json.loads(Path(run_dir, "meta.json").read_text())
    assert meta["job_id"] == job_id and "git_commit" in meta
    assert "set -- " in Path(run_dir, "job.sbatch").read_text()
    assert oct(os.stat(run_dir).st_mode & 0o777) == "0o700"


def test_submit_mpi_more_tasks_per_node(sandbox, runs_env):
    sandbox.need(2)
    r = hpcjobs("submit", "mpi", "--nodes", "2", "--ntasks-per-node", "2", "--wait", "--json", "--",
                sys.executable, EXAMPLE, env=runs_env)
    assert r.returncode == 0, r.stderr
    job_id = json.loads(r.stdout.splitlines()[0])["job_id"]
    out = hpcjobs("logs", job_id, env=runs_env).stdout
    ranks = re.findall(r"^rank (\d+) of 4 on (\S+)", out, re.M)
    assert sorted(int(r) for r, _ in ranks) == [0, 1, 2, 3] and len({h for _, h in ranks}) == 2
    assert "allreduce sum = 6 (expected 6)" in out


def test_shipped_template_with_plain_sbatch(sandbox, shared_tmp):
    sandbox.need(3)
    job = run_job([f"--output={shared_tmp}/slurm-%j.out", str(ROOT / "job_templates" / "mpi.sbatch"),
                   sys.executable, EXAMPLE], env={**os.environ, "HPCJOBS_PYTHON": sys.executable})
    assert job.ok, str(job)
    check_allreduce_output(job.output, 3)


def test_failed_job_exits_1_with_state_and_code(sandbox, runs_env):
    r = hpcjobs("submit", "mpi", "--nodes", "1", "--wait", "--", "sh", "-c", "exit 3", env=runs_env)
    assert r.returncode == 1
    assert re.search(r"ended FAILED, exit code 3", r.stdout + r.stderr), r.stdout + r.stderr


def test_status_logs_cancel_wait_on_a_running_job(sandbox, runs_env):
    r = hpcjobs("submit", "mpi", "--nodes", "1", "--json", "--", "sh", "-c",
                "echo started; sleep 120", env=runs_env)
    assert r.returncode == 0, r.stderr
    job_id = json.loads(r.stdout)["job_id"]
    try:
        deadline = time.monotonic() + 60
        while scontrol_job(job_id).get("JobState") != "RUNNING":
            assert time.monotonic() < deadline, "job never started"
            time.sleep(0.2)
        st = json.loads(hpcjobs("status", job_id, "--json", env=runs_env).stdout)
        assert st[0]["state"] == "RUNNING" and st[0]["nodes"].startswith("node")
        deadline = time.monotonic() + 30
        while "started" not in hpcjobs("logs", job_id, env=runs_env).stdout:
            assert time.monotonic() < deadline, "no output from the running job"
            time.sleep(0.2)
    finally:
        c = hpcjobs("cancel", job_id, env=runs_env)
    assert c.returncode == 0, c.stderr
    w = hpcjobs("wait", job_id, env=runs_env)
    assert w.returncode == 1 and "CANCELLED" in (w.stdout + w.stderr)
    st = json.loads(hpcjobs("status", job_id, "--json", env=runs_env).stdout)
    assert st[0]["state"] == "CANCELLED"


def test_follow_streams_output_until_the_end(sandbox, runs_env):
    r = hpcjobs("submit", "mpi", "--nodes", "1", "--follow", "--", "sh", "-c",
                "for i in 1 2 3; do echo tick $i; sleep 0.5; done", env=runs_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.index("tick 1") < r.stdout.index("tick 3") < r.stdout.index("ended COMPLETED")


def test_array_tasks_know_their_index(sandbox, runs_env):
    r = hpcjobs("submit", "mpi", "--nodes", "1", "--array", "0-2", "--wait", "--json", "--",
                "sh", "-c", 'echo "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID"', env=runs_env)
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = json.loads(r.stdout.splitlines()[0])["job_id"]
    for task in range(3):
        out = hpcjobs("logs", f"{job_id}_{task}", env=runs_env).stdout
        assert f"task {task} of {job_id}" in out


def test_after_dependency_chain(sandbox, runs_env, shared_tmp):
    marker = shared_tmp / "order.txt"
    a = hpcjobs("submit", "mpi", "--nodes", "1", "--json", "--", "sh", "-c",
                f"sleep 1; echo first >> {marker}", env=runs_env)
    first = json.loads(a.stdout)["job_id"]
    b = hpcjobs("submit", "mpi", "--nodes", "1", "--after", first, "--wait", "--", "sh", "-c",
                f"echo second >> {marker}", env=runs_env)
    assert b.returncode == 0, b.stdout + b.stderr
    assert marker.read_text().split() == ["first", "second"]
