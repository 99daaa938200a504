"""Horovod 0.28.1 (built by scripts/build-horovod) for real on the sandbox: srun --mpi=pmix
across 3 nodes, an allreduce with a known sum and DistributedOptimizer steps whose loss falls
and whose replicas stay identical, through `hpcjobs submit` and the shipped sbatch script."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import run_job


@pytest.fixture(scope="module", autouse=True)
def horovod_installed():
    r = subprocess.run([sys.executable, "-c", "import horovod.torch as h; assert h.mpi_built()"],
                       capture_output=True, text=True)
    if r.returncode:
        why = (r.stderr.strip().splitlines() or ["?"])[-1]
        if os.environ.get("CI"):
            pytest.fail(f"CI must build Horovod (scripts/build-horovod via scripts/install --frameworks): {why}")
        pytest.skip(f"horovod.torch not importable ({why}): run scripts/build-horovod")


def check_horovod(output: str, world: int = 3) -> None:
    ranks = re.findall(r"^rank (\d+) of (\d+) local_rank \d+ on (\S+) horovod 0\.28\.1 controller MPI",
                       output, re.M)
    assert len(ranks) == world, output
    assert {int(r) for r, _, _ in ranks} == set(range(world))
    assert len({h for _, _, h in ranks}) == world, "one rank per node"
    assert f"allreduce sum = {world * (world + 1) // 2} (expected {world * (world + 1) // 2}): OK" in output
    assert re.search(r"pml=ob1 btl=(tcp,self,vader|tcp,self,sm|\^openib)", output), output
    losses = [float(x) for x in re.findall(r"^step \d+/\d+ loss ([\d.]+)$", output, re.M)]
    assert len(losses) == 10 and losses[-1] < 0.5 * losses[0], losses
    assert re.search(r"replicas identical \(spread [\d.e+-]+\): OK", output), output


def test_submit_horovod_three_nodes(sandbox, shared_tmp):
    sandbox.need(3)
    env = {**os.environ, "HPCJOBS_RUNS_DIR": str(shared_tmp / "runs")}
    env.pop("HPCJOBS_CLUSTER", None)
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "submit", "horovod", "--nodes", "3",
                        "--wait", "--follow", "--", "examples/horovod_allreduce.py"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ended COMPLETED" in r.stdout
    check_horovod(r.stdout)


def test_direct_sbatch_horovod(sandbox, shared_tmp):
    sandbox.need(3)
    job = run_job(["-N3", str(ROOT / "job_templates" / "horovod.sbatch"),
                   str(ROOT / "examples" / "horovod_allreduce.py")],
                  cwd=shared_tmp, env={**os.environ, "HPCJOBS_PYTHON": sys.executable}, timeout=240)
    assert job.ok, str(job)
    check_horovod(job.output)
