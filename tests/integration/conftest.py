"""Fixtures for every integration test: the real Slurm sandbox and real jobs on it.

Every test here is marked ``integration`` and is skipped, with the reason, when the sandbox is
not up (start it with ``hpcjobs sandbox up`` as root; ``scripts/test`` does). Jobs are real:
``run_job`` submits with sbatch and polls ``scontrol`` every 0.1 s (``sbatch --wait`` polls
at 2 s, then 10 s: much slower), then returns what the job printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpcjobs import slurm
from tests.conftest import ROOT

FINAL = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
         "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT", "SPECIAL_EXIT", "REVOKED"}


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@dataclass
class Job:
    job_id: str
    state: str  # COMPLETED, FAILED, ...
    exit_code: str  # Slurm's "rc:signal", e.g. "0:0"
    nodes: str  # NodeList, e.g. node[1-3]
    output: str  # what the job wrote to its StdOut file
    fields: dict  # everything `scontrol show job -o` said at the end

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED" and self.exit_code == "0:0"

    def __str__(self) -> str:
        return f"job {self.job_id} {self.state} exit {self.exit_code} on {self.nodes}:\n{self.output}"


def scontrol_job(job_id: str) -> dict[str, str]:
    """Key=Value fields of ``scontrol show job -o`` (one job, the first line)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                         text=True).stdout.splitlines()
    if not out:
        return {}
    # hpcjobs' own parser: values with blanks (Command=, Reason=), 22.05's and 24.11's keys, and
    # the blank 24.11 ends the line with.
    return slurm.parse_kv(out[0], job=True)


def wait_job(job_id: str, timeout: float = 120.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        f = scontrol_job(job_id)
        state = f.get("JobState", "")
        if state in FINAL:
            return f
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job_id], capture_output=True)
            pytest.fail(f"job {job_id} still {state or 'unknown'} after {timeout:.0f} s "
                        f"({f.get('Reason', '')}); cancelled")
        time.sleep(0.1)


def run_job(args: list[str], *, timeout: float = 120.0, cwd: str | Path = ROOT,
            env: dict | None = None) -> Job:
    """``sbatch --parsable ARGS...``, wait for the end, return the state and the output.

    ARGS is what follows ``sbatch`` (options, script, script arguments), e.g.
    ``["-N3", "job_templates/mpi.sbatch", "python", "examples/mpi_allreduce.py"]``
    or ``["--wrap", "srun hostname"]``. The job's output is read from its StdOut file.
    """
    proc = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True,
                          cwd=cwd, env=env)
    assert proc.returncode == 0, f"sbatch {' '.join(args)}: {proc.stderr.strip()}"
    job_id = proc.stdout.strip().split(";")[0]
    f = wait_job(job_id, timeout)
    out_path = f.get("StdOut", "")
    out_path = out_path.replace("%j", job_id).replace("%A", job_id)  # 22.05 leaves %j in it
    try:
        output = Path(out_path).read_text(errors="replace") if out_path else ""
    except OSError:
        output = ""
    return Job(job_id, f.get("JobState", ""), f.get("ExitCode", ""), f.get("NodeList", ""),
               output, f)


def srun(args: list[str], *, timeout: float = 120.0, cwd: str | Path = ROOT,
         env: dict | None = None) -> subprocess.CompletedProcess:
    """``srun ARGS...`` from the root namespace; stdout/stderr as text."""
    return subprocess.run(["srun", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def hpcjobs(*args: str, env: dict | None = None, timeout: float = 300,
            cwd: str | Path = ROOT) -> subprocess.CompletedProcess:
    """Run the real CLI (``python -m hpcjobs ARGS``) as a user would; output as text."""
    return subprocess.run([sys.executable, "-m", "hpcjobs", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=cwd)


@pytest.fixture
def runs_env(tmp_path) -> dict:
    """The environment with run records under this test's tmp_path."""
    return {**os.environ, "HPCJOBS_RUNS_DIR": str(tmp_path / "runs")}


@dataclass
class Sandbox:
    nodes: list[str]  # node1..nodeN
    profile_path: Path

    @property
    def n(self) -> int:
        return len(self.nodes)

    def need(self, n: int) -> None:
        """Skip a test that needs more nodes than the sandbox has."""
        if self.n < n:
            pytest.skip(f"needs {n} nodes; the sandbox has {self.n} (hpcjobs sandbox up --nodes {n})")


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    """The running sandbox; skips the test when it is not up."""
    from hpcjobs.sandbox import lifecycle
    from hpcjobs.sandbox.layout import layout

    if os.geteuid() != 0:
        pytest.skip("integration tests need root (the sandbox runs as root)")
    h = lifecycle.health()
    if not h.up:
        if os.environ.get("HPCJOBS_REQUIRE_SANDBOX") == "1":  # scripts/test: never skip silently
            pytest.fail(f"Slurm sandbox is not up ({'; '.join(h.problems)})")
        pytest.skip(f"Slurm sandbox is not up ({'; '.join(h.problems)}): "
                    "run `hpcjobs sandbox up` as root, or scripts/test")
    return Sandbox([f"node{k}" for k in range(1, h.nodes + 1)], layout().profile)


@pytest.fixture
def shared_tmp(tmp_path) -> Path:
    """A directory the jobs can read and write: the nodes share this host's filesystem (only
    /etc/hosts differs), and jobs may run as any user."""
    os.chmod(tmp_path, 0o777)
    return tmp_path
