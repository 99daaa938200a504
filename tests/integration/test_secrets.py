"""`--env-pass NAME`: the job gets the value, and no file hpcjobs writes (script, spec, meta,
side files, by-id link), no output it prints and nothing in the job's output file that hpcjobs
or its templates write holds it. Run records are for their owner only."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PROG = ("import hashlib, os; v = os.environ['HPCJOBS_TEST_SECRET'].encode(); "
        "print('secret sha256', hashlib.sha256(v).hexdigest(), 'length', len(v))")


def hpcjobs(*args, env):
    return subprocess.run([sys.executable, "-m", "hpcjobs", *args], capture_output=True,
                          env=env, cwd=ROOT, timeout=300)


def test_env_pass_value_reaches_the_job_and_is_written_nowhere(sandbox, tmp_path):
    value = f"s3cr3t-{secrets.token_hex(16)}"
    env = {**os.environ, "HPCJOBS_RUNS_DIR": str(tmp_path / "runs"), "HPCJOBS_TEST_SECRET": value}
    seen = []  # everything hpcjobs printed
    dry = hpcjobs("submit", "mpi", "--nodes", "1", "--env-pass", "HPCJOBS_TEST_SECRET",
                  "--dry-run", "--", sys.executable, "-c", PROG, env=env)
    assert dry.returncode == 0 and b"printenv HPCJOBS_TEST_SECRET" in dry.stdout
    seen += [dry.stdout, dry.stderr]
    sub = hpcjobs("submit", "mpi", "--nodes", "1", "--env-pass", "HPCJOBS_TEST_SECRET", "--wait",
                  "--json", "--", sys.executable, "-c", PROG, env=env)
    seen += [sub.stdout, sub.stderr]
    assert sub.returncode == 0, sub.stdout + sub.stderr
    info = json.loads(sub.stdout.decode().splitlines()[0])
    job_id, run_dir = info["job_id"], Path(info["run_dir"])
    for args in (["status", job_id, "--json"], ["status", "--all"], ["why", job_id, "--json"],
                 ["logs", job_id], ["render", "mpi", "--env-pass", "HPCJOBS_TEST_SECRET", "--",
                                   "true"]):
        r = hpcjobs(*args, env=env)
        assert r.returncode == 0, (args, r.stderr)
        seen += [r.stdout, r.stderr]

    # The job had the value (its digest, printed by the program itself).
    out = (run_dir / f"slurm-{job_id}.out").read_text()
    digest = hashlib.sha256(value.encode()).hexdigest()
    assert f"secret sha256 {digest} length {len(value)}" in out

    # Nowhere in what hpcjobs wrote or printed, nor in the job's output.
    secret = value.encode()
    for blob in seen:
        assert secret not in blob
    files = [p for p in Path(env["HPCJOBS_RUNS_DIR"]).rglob("*") if p.is_file()]
    assert len(files) >= 4
    for p in files:
        assert secret not in p.read_bytes(), p
    # By contrast, a plain --env value is part of the script, by design (docs/reliability.md).
    plain = hpcjobs("render", "mpi", "--env", f"X={value}", "--", "true", env=env)
    assert secret in plain.stdout


def test_run_records_are_owner_only(sandbox, tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "HPCJOBS_RUNS_DIR": str(runs)}
    old = os.umask(0o022)  # a usual umask: group and others could read new files
    try:
        # --preflight: its directory in the record too (the monitor's is there by default).
        sub = hpcjobs("submit", "mpi", "--nodes", "1", "--preflight", "--wait", "--json", "--", "true",
                      env=env)
    finally:
        os.umask(old)
    assert sub.returncode == 0, sub.stderr
    info = json.loads(sub.stdout.decode().splitlines()[0])
    job_id = info["job_id"]
    checked = 0
    for p in [runs, *runs.rglob("*")]:
        mode = stat.S_IMODE(os.lstat(p).st_mode)
        if p.is_symlink():
            continue  # by-id links: the mode of a symlink means nothing; its directory is 0700
        if p.is_dir():
            assert mode == 0o700, (p, oct(mode))
        elif p.name == f"slurm-{job_id}.out":
            # Written by Slurm with the job's umask; inside a 0700 directory, so owner-only.
            assert stat.S_IMODE(os.stat(p.parent).st_mode) == 0o700
        else:
            assert mode & 0o077 == 0, (p, oct(mode))
        checked += 1
    assert checked >= 6
