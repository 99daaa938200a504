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
