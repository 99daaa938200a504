"""status, wait, logs, cancel and why on real jobs: unknown ids, arrays, another user's job,
progress lines off a terminal, Ctrl-C, --timeout, and one squeue per poll for many jobs.

Each test checks the exit code and the message, and what the jobs themselves printed. Slurm
calls are counted by stand-ins on PATH that log their arguments and exec the real command
(nothing is faked: the real squeue answers).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import hpcjobs, run_job, scontrol_job, wait_job

NO_SUCH = "no such job (not in the queue, not recorded"


def submit(env, *args, prog, rc: int = 0) -> str:
    r = hpcjobs("submit", "mpi", "--nodes", "1", *args, "--json", "--", "sh", "-c", prog, env=env)
    assert r.returncode == rc, r.stderr
    return json.loads(r.stdout.splitlines()[0])["job_id"]


def wait_running(job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while scontrol_job(job_id).get("JobState") != "RUNNING":
        assert time.monotonic() < deadline, f"job {job_id} never started"
        time.sleep(0.2)


def wait_output(job_id: str, words: str, env: dict, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while words not in hpcjobs("logs", job_id, env=env).stdout:
        assert time.monotonic() < deadline, f"job {job_id} never printed {words!r}"
        time.sleep(0.3)


def counting_path(tmp_path: Path) -> tuple[dict, Path]:
    """An environment whose squeue/scontrol/sacct/scancel log each call to a file, then run."""
    bindir, log = tmp_path / "bin", tmp_path / "calls.log"
    bindir.mkdir()
    for cmd in ("squeue", "scontrol", "sacct", "scancel"):
        real = subprocess.run(["which", cmd], capture_output=True, text=True).stdout.strip()
        if not real:
            continue
        (bindir / cmd).write_text(f'#!/bin/sh\nprintf "%s\\n" "{cmd} $*" >> {log}\nexec {real} "$@"\n')
        (bindir / cmd).chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}, log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


# --- 11.5, 11.4: ids nobody knows; what cancel really did -------------------------------------

@pytest.mark.parametrize("cmd", ["wait", "status", "cancel", "logs", "why"])
def test_a_job_nobody_knows_is_exit_2(sandbox, runs_env, cmd):
    r = hpcjobs(cmd, "99999999", env=runs_env)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert NO_SUCH in r.stderr or "nothing is known about job 99999999" in r.stderr, r.stderr
    assert "ended UNKNOWN" not in r.stdout + r.stderr and "cancelled" not in r.stdout
    assert "Traceback" not in r.stderr


def test_cancel_says_per_id_what_happened(sandbox, runs_env):
    done = submit(runs_env, "--wait", prog="echo done")
    live = submit(runs_env, prog="echo started; sleep 120 && echo finished")
    wait_output(live, "started", runs_env)
    r = hpcjobs("cancel", live, done, "99999999", env=runs_env)
    assert r.returncode == 2, r.stderr  # one id was not a job; the others were handled
    lines = r.stdout.splitlines()
    assert re.fullmatch(rf"{live}: cancelled \(was RUNNING on node\d\)", lines[0]), lines
    assert lines[1] == f"{done}: already ended COMPLETED, exit code 0; nothing to cancel"
    assert r.stderr.startswith(f"hpcjobs: error: 99999999: {NO_SUCH}")
    f = wait_job(live)
    assert f["JobState"] == "CANCELLED"
    out = hpcjobs("logs", live, env=runs_env).stdout
    assert "started" in out and "finished" not in out
    again = hpcjobs("cancel", live, env=runs_env)
    assert again.returncode == 0 and f"{live}: already ended CANCELLED" in again.stdout


# --- 11.6: another user's job -----------------------------------------------------------------

def as_nobody(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI as user nobody: the system python with this checkout and its site-packages."""
    site = sysconfig.get_paths()["purelib"]
    runs_dir = tmp_path / "runs"  # tmp_path: a directory nobody may enter (the fixture)
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env",
                           "-i", f"PATH={os.environ['PATH']}", "HOME=/tmp",
                           f"PYTHONPATH={ROOT}{os.pathsep}{site}",
                           f"HPCJOBS_RUNS_DIR={runs_dir}", "/usr/bin/python3", "-m", "hpcjobs",
                           *args], capture_output=True, text=True, timeout=120, cwd="/")


@pytest.fixture
def nobody():
    """A scratch directory user nobody owns (pytest's own tmp_path is root's, 0700)."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="hpcjobs-nobody-"))
    os.chown(d, 65534, 65534)
    try:
        probe = as_nobody(d, "--help")
        if probe.returncode != 0 or f"{sys.version_info.major}.{sys.version_info.minor}" not in \
                subprocess.run(["/usr/bin/python3", "-V"], capture_output=True, text=True).stdout:
            pytest.skip(f"cannot run the CLI as nobody here: {probe.stderr.strip()[-200:]}")
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_another_users_job(sandbox, runs_env, nobody):
    """root's job, output in its 0700 run record: logs and why say so in one line (exit 2);
    cancel is refused by Slurm with its own message (exit 3); status still works."""
    jid = submit(runs_env, "--wait", prog="echo secret-output")
    live = submit(runs_env, prog="sleep 120")
    try:
        wait_running(live)
        for cmd in ("logs", "why"):
            r = as_nobody(nobody, cmd, jid)
            assert r.returncode == 2, (cmd, r.stderr)
            assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
            assert "permission denied" in r.stderr and "another user's job" in r.stderr
            assert "secret-output" not in r.stdout
        r = as_nobody(nobody, "logs", jid)
        assert "(it belongs to root)" in r.stderr
        c = as_nobody(nobody, "cancel", live)
        assert c.returncode == 3, c.stderr
        assert c.stderr == f"hpcjobs: error: {live}: not cancelled: Access/permission denied\n"
        assert scontrol_job(live)["JobState"] == "RUNNING"
        s = as_nobody(nobody, "status", jid, "--json")
        assert s.returncode == 0 and json.loads(s.stdout)[0]["state"] == "COMPLETED"
    finally:
        hpcjobs("cancel", live, env=runs_env)


# --- 11.8: arrays -----------------------------------------------------------------------------

def test_arrays_in_logs_why_and_status(sandbox, runs_env):
    a = submit(runs_env, "--array", "0-3", "--wait",
               prog='echo "task $SLURM_ARRAY_TASK_ID says hi"; exit $((SLURM_ARRAY_TASK_ID % 2))',
               rc=1)
    # logs ARRAYID: each task's output under a header with its state, exit code, run time
    r = hpcjobs("logs", a, env=runs_env)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.splitlines()[0] == f"job {a}: array of 4 tasks"
    for k in range(4):
        state = "COMPLETED, exit code 0" if k % 2 == 0 else "FAILED, exit code 1"
        assert re.search(rf"^==> {a}_{k}: {state}, ran \d:\d\d:\d\d \(.*slurm-{a}_{k}\.out\) <==$",
                         out, re.M), out
        assert f"task {k} says hi" in out
    assert out.index(f"==> {a}_1") < out.index("task 1 says hi") < out.index(f"==> {a}_2")
    # logs ID_3: that task alone
    one = hpcjobs("logs", f"{a}_3", env=runs_env)
    assert one.returncode == 0 and "task 3 says hi" in one.stdout and "task 2" not in one.stdout
    # why ARRAYID: a summary per task, then the failed tasks' verdicts
    w = hpcjobs("why", a, env=runs_env)
    assert w.returncode == 0, w.stderr
    lines = w.stdout.splitlines()
    assert lines[0] == f"job {a}: FAILED, array of 4 tasks: 2 COMPLETED, 2 FAILED"
    assert re.fullmatch(rf"  {a}_1  FAILED     exit 1\s+\d:\d\d:\d\d", lines[2]), lines
    # then each failed task's verdict (its cause is hpcjobs.triage's business, tested there)
    blocks = w.stdout.split("\n\n")
    assert [b.splitlines()[0].split("  ")[0] for b in blocks[1:]] == \
        [f"job {a}_1: FAILED", f"job {a}_3: FAILED"], w.stdout
    assert all(b.splitlines()[1].startswith("cause:    ") for b in blocks[1:])
    j = json.loads(hpcjobs("why", a, "--json", env=runs_env).stdout)
    assert [t["exit_code"] for t in j["tasks"]] == [0, 1, 0, 1] and len(j["verdicts"]) == 2
    assert hpcjobs("why", f"{a}_2", env=runs_env).stdout.splitlines()[1] == \
        "cause:    the job completed successfully (exit code 0)"
    # status: one aligned row for the array; --expand: one per task
    plain = submit(runs_env, "--wait", prog="true")
    s = hpcjobs("status", a, plain, env=runs_env).stdout.splitlines()
    assert len(s) == 3 and s[1].startswith(a + " ") and "4 tasks: 2 COMPLETED, 2 FAILED" in s[1]
    cols = [m.start() for m in re.finditer(r"\S+", s[0])]
    for row in s[1:]:  # every column starts where its header does
        starts = {m.start() for m in re.finditer(r"(?<=  )\S|^\S", row)}
        assert {cols[0], cols[1], cols[2]} <= starts, (s[0], row)
    e = hpcjobs("status", a, "--expand", env=runs_env).stdout.splitlines()
    assert [ln.split()[0] for ln in e[1:]] == [f"{a}_{k}" for k in range(4)]
    assert [ln.split()[2] for ln in e[1:]] == ["COMPLETED", "FAILED", "COMPLETED", "FAILED"]


def test_logs_of_an_array_hpcjobs_did_not_submit(sandbox, runs_env, shared_tmp):
    """sbatch --array with slurm-%A_%a.out: the files come from Slurm's StdOut per task."""
    job = run_job([f"--output={shared_tmp}/slurm-%A_%a.out", "--array=0-2", "--wrap",
                   'echo "plain task $SLURM_ARRAY_TASK_ID"'])
    base = job.job_id.split("_")[0]
    for t in range(3):
        wait_job(f"{base}_{t}")
    r = hpcjobs("logs", base, env=runs_env)
    assert r.returncode == 0, r.stderr
    for t in range(3):
        assert f"==> {base}_{t}: COMPLETED, exit code 0" in r.stdout
        assert f"plain task {t}" in r.stdout


# --- 11.12: progress off a terminal, Ctrl-C, --timeout ---------------------------------------

def test_wait_prints_one_line_per_state_change_off_a_terminal(sandbox, runs_env):
    r = hpcjobs("submit", "mpi", "--nodes", "1", "--wait", "--", "sh", "-c",
                "sleep 4; echo slept", env=runs_env)
    assert r.returncode == 0, r.stderr
    jid = re.search(r"Submitted batch job (\d+)", r.stdout).group(1)
    err = r.stderr.splitlines()
    running = [ln for ln in err if ln.startswith(f"job {jid}: RUNNING on node")]
    assert len(running) == 1 and re.search(r"\+\d:\d\d:\d\d$", running[0]), err
    assert "\r" not in r.stderr and "\033[K" not in r.stderr  # no live line off a terminal
    assert re.search(rf"job {jid} ended COMPLETED, exit code 0, ran 0:00:0[4-9]", r.stdout)
    assert "slept" in hpcjobs("logs", jid, env=runs_env).stdout


def _ctrl_c_as_at_a_terminal() -> None:
    # Tests started in the background by a non-interactive shell (`./.ci/run &`, nohup) inherit
    # SIGINT ignored, and Python then keeps it ignored (no KeyboardInterrupt: right for such a
    # process). The user this test plays pressed Ctrl-C at a terminal: SIGINT at its default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_on_submit_wait_leaves_the_job_running(sandbox, runs_env):
    p = subprocess.Popen([sys.executable, "-m", "hpcjobs", "submit", "mpi", "--nodes", "1", "--wait",
                          "--", "sh", "-c", "sleep 20; echo finished anyway"], cwd=ROOT,
                         env=runs_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=_ctrl_c_as_at_a_terminal)
    jid = None
    try:
        jid = re.search(r"Submitted batch job (\d+)", p.stdout.readline()).group(1)
        wait_running(jid)
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert re.search(rf"hpcjobs: stopped watching \(Ctrl-C\); job {jid} is (RUNNING on node\d|"
                     r"COMPLETING on node\d) and was not cancelled", err), err
    assert f"hpcjobs wait {jid}" in err and f"hpcjobs cancel {jid}" in err
    w = hpcjobs("wait", jid, env=runs_env)
    assert w.returncode == 0 and "ended COMPLETED" in w.stdout, w.stderr
    assert "finished anyway" in hpcjobs("logs", jid, env=runs_env).stdout


def test_wait_timeout_is_124_and_leaves_the_job_alone(sandbox, runs_env):
    jid = submit(runs_env, prog="echo begun; sleep 60")
    try:
        wait_running(jid)
        r = hpcjobs("wait", jid, "--timeout", "2", env=runs_env)
        assert r.returncode == 124, r.stderr
        assert f"hpcjobs: still not ended after 2 s (--timeout); job {jid} is RUNNING" in r.stderr
        assert scontrol_job(jid)["JobState"] == "RUNNING"
    finally:
        hpcjobs("cancel", jid, env=runs_env)


# --- 13.3: one squeue per poll, whatever the number of jobs -----------------------------------

def test_wait_on_many_jobs_is_one_squeue_per_poll(sandbox, runs_env, tmp_path):
    env, log = counting_path(tmp_path)
    ids = [submit(runs_env, prog=f"sleep {2 + k % 3}; echo job {k} done") for k in range(6)]
    r = hpcjobs("wait", *ids, env={**runs_env, **env})
    assert r.returncode == 0, r.stderr
    made = calls(log)
    squeues = [c for c in made if c.startswith("squeue ")]
    assert squeues and len(squeues) == len(made), made  # no scontrol, no sacct
    first = squeues[0].split(" -j ")[1].split()[0].split(",")
    assert first == ids  # all of them in the first call
    for c in squeues:
        assert " -t all " in c and len(c.split(" -j ")) == 2
    assert len(squeues) <= 12, squeues  # ~6 s of jobs at 1, 1.5, 2.25... s: not one per job
    for k, jid in enumerate(ids):
        assert f"job {jid} ended COMPLETED" in r.stdout
        assert f"job {k} done" in hpcjobs("logs", jid, env=runs_env).stdout


def test_follow_reads_the_file_and_asks_slurm_rarely(sandbox, runs_env, tmp_path):
    env, log = counting_path(tmp_path)
    jid = submit(runs_env, prog="for i in 1 2 3 4 5 6; do echo tick $i; sleep 1; done")
    r = hpcjobs("logs", "--follow", jid, env={**runs_env, **env})
    assert r.returncode == 0, r.stderr
    ticks = [ln for ln in r.stdout.splitlines() if ln.startswith("tick ")]
    assert ticks == [f"tick {i}" for i in range(1, 7)]
    assert f"job {jid} ended COMPLETED" in r.stdout
    squeues = [c for c in calls(log) if c.startswith("squeue ")]
    # One scontrol to find the file is not needed (the record has it); squeue at the
    # watchers' pace: 0, 1, 2.5, 4.75, 8.1 s ...
    assert all(c.startswith("squeue ") for c in calls(log)) and len(squeues) <= 8, calls(log)


# --- 11.27: filters, --tail ---------------------------------------------------------------------

def test_status_filters_and_logs_tail(sandbox, runs_env):
    done = submit(runs_env, "--wait", prog="for i in 1 2 3 4 5; do echo line $i; done")
    live = submit(runs_env, prog="sleep 60")
    try:
        wait_running(live)
        r = hpcjobs("status", "--state", "RUNNING", "--kind", "mpi", env=runs_env)
        ids = [ln.split()[0] for ln in r.stdout.splitlines()[1:]]
        assert r.returncode == 0 and ids == [live], r.stdout
        assert r.stdout.splitlines()[1].split()[3] == "0"  # RESTARTS; no EXIT while running
        r = hpcjobs("status", "-t", "CD", env=runs_env)
        assert [ln.split()[0] for ln in r.stdout.splitlines()[1:]] == [done]
        assert r.stdout.splitlines()[1].split()[3] == "0"  # EXIT of the ended job
        r = hpcjobs("status", "--kind", "train", env=runs_env)
        assert r.returncode == 0 and r.stdout.strip() == "no such jobs"
        t = hpcjobs("logs", "--tail", "2", done, env=runs_env)
        assert t.returncode == 0 and t.stdout == "line 4\nline 5\n"
        q = hpcjobs("status", "--queue", "--state", "R", env=runs_env)
        assert live in q.stdout
    finally:
        hpcjobs("cancel", live, env=runs_env)
