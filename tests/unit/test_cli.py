"""The CLI without Slurm: bad input exits 2 with one line and leaves nothing behind."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def cli(*args, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "hpcjobs", *args], capture_output=True, text=True,
                          env=env or os.environ.copy(), cwd=cwd)


def nothing_written(tmp_path):
    runs = tmp_path / "runs"
    return not runs.exists() or not any(runs.rglob("*"))


BAD_INPUT = [
    (["submit", "mpi", "--nodes", "9", "--", "true"], "--nodes"),
    (["submit", "mpi", "--time", "soon", "--", "true"], "--time"),
    (["submit", "mpi", "--env", "NOEQUALS", "--", "true"], "--env"),
    (["submit", "mpi", "--partition", "debug", "--", "true"], "--partition"),
    (["submit", "mpi"], "PROG"),
    (["submit", "mpi", "--", "python3", "no/such/file.py"], "PROG"),
    (["submit", "mpi", "--", "./missing-binary"], "PROG"),
    (["submit", "nosuchkind", "--", "true"], "KIND"),
    (["submit", "mpi", "--array", "x", "--", "true"], "--array"),
    (["submit", "mpi", "--after", "x:y", "--", "true"], "--after"),
    (["render", "mpi", "--gpus-per-node", "4", "--", "true"], "--gpus-per-node"),
]


@pytest.mark.parametrize("args,field", BAD_INPUT)
def test_bad_input_exit_2_one_line_nothing_written(isolated, args, field):
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("hpcjobs: error: " + field), r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stdout == ""
    assert nothing_written(isolated)


def test_unknown_option_is_a_usage_error(isolated):
    r = cli("submit", "mpi", "--bogus", "--", "true")
    assert r.returncode == 2 and "No such option" in r.stderr and nothing_written(isolated)


def test_dry_run_prints_the_script_and_writes_nothing(isolated):
    r = cli("submit", "mpi", "--nodes", "2", "--dry-run", "--", "hostname", "-s")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("#!/bin/bash") and "set -- hostname -s" in r.stdout
    assert "#SBATCH --nodes=2" in r.stdout
    assert nothing_written(isolated)


def test_render_matches_dry_run_but_for_the_output_path(isolated):
    a = cli("render", "mpi", "--output-dir", "/tmp/o", "--", "true").stdout
    b = cli("submit", "mpi", "--output-dir", "/tmp/o", "--dry-run", "--", "true").stdout
    assert a == b


def test_slurm_missing_is_exit_3_and_leaves_no_record(isolated):
    env = os.environ.copy()
    env["PATH"] = os.path.dirname(sys.executable)  # python, but no sbatch
    r = cli("submit", "mpi", "--", "true", env=env)
    assert r.returncode == 3, r.stderr
    assert "sbatch" in r.stderr and "Traceback" not in r.stderr
    assert nothing_written(isolated)


def test_help_and_kinds(isolated):
    r = cli("--help")
    assert r.returncode == 0 and "submit" in r.stdout and "sandbox" in r.stdout
    r = cli("kinds")
    assert "mpi" in r.stdout and "train" in r.stdout
    r = cli("submit", "train", "--help")
    assert "--gpus-per-node" in r.stdout and "--dry-run" in r.stdout


# --- status / logs / wait / cancel / why: bad input before any Slurm call -------------------

def no_slurm_env():
    """PATH with python but no Slurm command: a test passes only if nothing reached Slurm
    (else it would exit 3, "command not found")."""
    env = os.environ.copy()
    env["PATH"] = os.path.dirname(sys.executable)
    return env


WATCH_BAD_INPUT = [
    (["cancel", "abc"], "JOBID: 'abc' is not a job id"),
    (["cancel", "12", "abc"], "JOBID: 'abc' is not a job id"),  # nothing cancelled, not even 12
    (["wait", "12_x"], "JOBID: '12_x' is not a job id"),
    (["status", "1.5"], "JOBID: '1.5' is not a job id"),
    (["logs", "abc"], "JOBID: 'abc' is not a job id"),
    (["why"], "JOBID: no job id given"),
    (["status", "--state", "RUNING"], "--state: 'RUNING' is not a Slurm job state"),
    (["status", "--kind", "nope"], "--kind: unknown job kind 'nope'"),
    (["wait", "--timeout", "-1", "12"], "Invalid value for '--timeout'"),
    (["logs", "--tail", "-3", "12"], "Invalid value for '--tail'"),
]


@pytest.mark.parametrize("args,message", WATCH_BAD_INPUT)
def test_watch_commands_bad_input_exit_2_before_slurm(isolated, args, message):
    r = cli(*args, env=no_slurm_env())
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("hpcjobs: error: ") and message in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("args", [["status", "12"], ["wait", "12"], ["cancel", "12"],
                                  ["status", "--queue"]])
def test_watch_commands_without_slurm_exit_3(isolated, args):
    r = cli(*args, env=no_slurm_env())
    assert r.returncode == 3, r.stderr
    assert "squeue: command not found" in r.stderr and "Traceback" not in r.stderr


def test_job_ids_in_shell_completion(isolated):
    from hpcjobs import runs

    for jid in ("101", "1009", "2001"):
        runs.link_job(runs.create(runs.new_run_path("mpi"), "#!/bin/bash\n", {}, {}, {}), jid)
    env = {**os.environ, "_HPCJOBS_COMPLETE": "bash_complete", "COMP_WORDS": "hpcjobs wait 10",
           "COMP_CWORD": "2"}
    r = subprocess.run([sys.executable, "-c", "from hpcjobs.cli import main; main(prog_name='hpcjobs')"],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["plain,1009", "plain,101"]  # newest first, prefix "10"
    for cmd in ("logs", "cancel", "status", "why"):
        env["COMP_WORDS"] = f"hpcjobs {cmd} 2"
        r = subprocess.run([sys.executable, "-c", "from hpcjobs.cli import main; main(prog_name='hpcjobs')"],
                           capture_output=True, text=True, env=env, cwd=ROOT)
        assert r.stdout.split() == ["plain,2001"], (cmd, r.stdout)


def test_why_log_without_a_job_id(isolated, tmp_path):
    log = tmp_path / "train.log"
    log.write_text("epoch 1\nModuleNotFoundError: No module named 'nosuch'\n")
    r = cli("why", "--log", str(log), env=no_slurm_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1] == "cause:    a module or command is missing on the nodes"
    assert "train.log:2: ModuleNotFoundError" in r.stdout
    assert "no job id given" in r.stdout


def test_watch_help_texts(isolated):
    assert "exit 124" in cli("wait", "--help").stdout
    assert "--expand" in cli("status", "--help").stdout and "--state" in cli("status", "--help").stdout
    assert "--tail" in cli("logs", "--help").stdout
    assert "already ended" in cli("cancel", "--help").stdout
