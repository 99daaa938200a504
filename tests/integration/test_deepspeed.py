"""DeepSpeed ZeRO-3 for real on the sandbox: 3 nodes, CPU accelerator over gloo, with and
without optimizer offload, through `hpcjobs submit` and through the shipped sbatch script.
Asserts what the job printed: one rank per node, each holding about 1/3 of every parameter,
and a falling loss."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import run_job


@pytest.fixture(scope="module", autouse=True)
def deepspeed_installed():
    missing = [m for m in ("torch", "deepspeed") if importlib.util.find_spec(m) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must install {' and '.join(missing)} (scripts/install)")
        pytest.skip(f"{' and '.join(missing)} not installed: scripts/install --frameworks installs them")


def check_zero3(output: str, *, world: int = 3, offload: bool) -> list[float]:
    ranks = re.findall(r"^rank (\d+) of (\d+) local_rank \d+ on (\S+) device cpu backend gloo", output, re.M)
    assert len(ranks) == world, output
    assert {int(r) for r, _, _ in ranks} == set(range(world)) and {w for _, w, _ in ranks} == {str(world)}
    assert len({h for _, _, h in ranks}) == world, "one rank per node"
    assert f"optimizer offload {offload}" in output, output
    parts = re.findall(r"^rank (\d+) partition: (\d+) of (\d+) parameters", output, re.M)
    assert len(parts) == world, output
    total = int(parts[0][2])
    for _, mine, full in parts:
        assert int(full) == total
        # ZeRO-3 pads each parameter to a multiple of the world size: about 1/3, never all.
        assert abs(int(mine) / total - 1 / world) < 0.01, parts
    assert sum(int(m) for _, m, _ in parts) >= total
    losses = [float(x) for x in re.findall(r"^step \d+/\d+ loss ([\d.]+) time", output, re.M)]
    assert len(losses) >= 5, output
    assert losses[-1] < 0.8 * losses[0], f"loss did not fall: {losses}"
    return losses


def submit(tmp, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HPCJOBS_RUNS_DIR": str(tmp / "runs")}
    env.pop("HPCJOBS_CLUSTER", None)
    return subprocess.run([sys.executable, "-m", "hpcjobs", "submit", "deepspeed", *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


@pytest.mark.parametrize("offload", ["none", "cpu"])
def test_submit_zero3_three_nodes(sandbox, shared_tmp, offload):
    sandbox.need(3)
    r = submit(shared_tmp, "--nodes", "3", "--precision", "fp32", "--offload-optimizer", offload,
               "--env", "DS_ACCELERATOR=cpu", "--wait", "--follow", "--",
               "examples/ds_zero3.py", "--steps", "12")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ended COMPLETED" in r.stdout, r.stdout
    check_zero3(r.stdout, offload=offload == "cpu")
    # The config the job used is the one in its run record.
    (cfg,) = (shared_tmp / "runs").rglob("ds_config.json")
    assert f"config {cfg}:" in r.stdout
    assert ("offload_optimizer" in cfg.read_text()) == (offload == "cpu")


def test_direct_sbatch_writes_its_config_at_run_time(sandbox, shared_tmp):
    sandbox.need(3)
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "HPCJOBS_PYTHON": sys.executable,
           "HPCJOBS_DS_OFFLOAD_OPTIMIZER": "cpu", "HPCJOBS_DS_PIN_MEMORY": "no"}
    job = run_job(["-N3", str(ROOT / "job_templates" / "deepspeed.sbatch"),
                   str(ROOT / "examples" / "ds_zero3.py"), "--steps", "10"],
                  cwd=shared_tmp, env=env, timeout=240)
    assert job.ok, str(job)
    check_zero3(job.output, offload=True)
    cfg = shared_tmp / f"ds_config-{job.job_id}.json"
    assert cfg.exists() and f"config {cfg}:" in job.output
    assert "locked-memory limit" not in job.output  # pin_memory off: no memlock warning
