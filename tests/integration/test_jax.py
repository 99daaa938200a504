"""The jax kind on the real sandbox: CPU JAX (PyPI's jax, pinned in scripts/install) across 3
nodes, jax.distributed from the launcher's values, gloo collectives between the processes. Each
process's report, the psum and a falling loss are read from what the job printed; once through
``hpcjobs submit`` and once through the shipped direct script with a 2-D mesh."""

import json
import os
import re
import sys

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import hpcjobs, run_job

pytest.importorskip("jax", reason="jax is installed by scripts/install --frameworks")

EXAMPLE = str(ROOT / "examples" / "jax_allreduce.py")


def check_run(out: str, nodes: int, per_process: int, steps: int) -> None:
    procs = re.findall(r"^process (\d+) of (\d+) on (\S+): local devices (\d+), global devices "
                       r"(\d+), backend (\w+), coordinator (\S+)$", out, re.M)
    assert sorted(int(p[0]) for p in procs) == list(range(nodes)), out
    assert {(int(p[1]), int(p[3]), int(p[4]), p[5]) for p in procs} == {
        (nodes, per_process, nodes * per_process, "cpu")}, out
    assert len({p[2] for p in procs}) == nodes, f"processes not on {nodes} distinct nodes:\n{out}"
    # The coordinator is the first node's sandbox address and the step's port, for everyone.
    assert len({p[6] for p in procs}) == 1 and procs[0][6].startswith("10.200.0.1:"), out
    devices = nodes * per_process
    expected = per_process * nodes * (nodes + 1) // 2  # each device adds its process index + 1
    sums = re.findall(rf"^process \d+: psum over {devices} devices of \(process index \+ 1\) = "
                      rf"{expected} \(expected {expected}\): OK$", out, re.M)
    assert len(sums) == nodes, out
    losses = [float(x) for x in re.findall(r"^step \d+/\d+ loss (\S+)", out, re.M)]
    assert len(losses) == steps, out
    assert losses[-1] < losses[0] * 0.1, f"loss did not fall: {losses}"


def test_submit_jax_three_nodes(sandbox, runs_env):
    """The issue's command: hpcjobs submit jax --nodes 3 --wait -- examples/jax_allreduce.py."""
    sandbox.need(3)
    r = hpcjobs("submit", "jax", "--nodes", "3", "--wait", "--json", "--", EXAMPLE, env=runs_env)
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = json.loads(r.stdout.splitlines()[0])["job_id"]
    out = hpcjobs("logs", job_id, env=runs_env).stdout
    check_run(out, 3, 1, 6)


def test_direct_script_with_a_two_axis_mesh(sandbox, shared_tmp):
    """sbatch job_templates/jax.sbatch with two CPU devices per process and a data x model mesh."""
    sandbox.need(3)
    env = {**os.environ, "HPCJOBS_PYTHON": sys.executable, "HPCJOBS_JAX_MESH": "data=3,model=2",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    job = run_job(["--nodes=3", "--gres=none", f"--output={shared_tmp}/slurm-%j.out",
                   str(ROOT / "job_templates" / "jax.sbatch"), EXAMPLE, "--steps", "4"],
                  env=env, timeout=240)
    assert job.ok, str(job)
    check_run(job.output, 3, 2, 4)
