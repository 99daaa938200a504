"""The train kind and the launcher on the real sandbox: ranks agree, all_reduce is right,
the loss falls — through hpcjobs and through a plain sbatch script with srun + hpcjobs.launch."""

import json
import os
import re
import sys

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import hpcjobs, run_job

pytest.importorskip("torch")

EXAMPLE = str(ROOT / "examples" / "train_ddp.py")


def check_training(out: str, n: int, epochs: int) -> None:
    ranks = re.findall(r"^rank (\d+) of (\d+) local_rank (\d+) on (\S+) backend (\w+) master (\S+)",
                       out, re.M)
    assert sorted(int(r[0]) for r in ranks) == list(range(n)), out
    assert {int(r[1]) for r in ranks} == {n}, "ranks disagree on the world size:\n" + out
    assert len({r[3] for r in ranks}) == n, "ranks not on distinct nodes:\n" + out
    assert len({r[5] for r in ranks}) == 1, "ranks disagree on MASTER_ADDR:PORT:\n" + out
    assert f"all_reduce sum = {n * (n - 1) // 2:g} (expected {n * (n - 1) // 2:g}): OK" in out
    losses = [float(x) for x in re.findall(r"^epoch \d+/\d+ step \d+ loss (\S+)", out, re.M)]
    assert len(losses) == epochs, out
    assert losses[-1] < losses[0] * 0.5, f"loss did not fall: {losses}"


def test_submit_train_three_nodes(sandbox, tmp_path):
    """The user's main command, exactly: hpcjobs submit train --nodes 3 -- train.py --epochs 3."""
    sandbox.need(3)
    env = {**os.environ, "HPCJOBS_RUNS_DIR": str(tmp_path / "runs")}
    r = hpcjobs("submit", "train", "--nodes", "3", "--wait", "--json", "--", EXAMPLE,
                "--epochs", "3", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = json.loads(r.stdout.splitlines()[0])["job_id"]
    out = hpcjobs("logs", job_id, env=env).stdout
    check_training(out, 3, 3)
    # MASTER_ADDR is the first node's address from the sandbox profile, not a host name.
    assert re.search(r"master 10\.200\.0\.1:\d+", out), out


def test_launcher_in_a_plain_sbatch_script(sandbox, shared_tmp):
    """No hpcjobs rendering: a hand-written script runs srun python -m hpcjobs.launch."""
    sandbox.need(3)
    script = shared_tmp / "plain.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --nodes=3\n#SBATCH --ntasks-per-node=1\n"
        f"#SBATCH --output={shared_tmp}/slurm-%j.out\n"
        f"srun {sys.executable} -m hpcjobs.launch -- {sys.executable} {EXAMPLE} --epochs 2\n")
    job = run_job([str(script)], timeout=240)
    assert job.ok, str(job)
    check_training(job.output, 3, 2)


def test_two_tasks_per_node_get_local_ranks(sandbox, shared_tmp):
    sandbox.need(2)
    job = run_job(["--nodes=2", "--ntasks-per-node=2", f"--output={shared_tmp}/slurm-%j.out",
                   str(ROOT / "job_templates" / "train.sbatch"), EXAMPLE, "--epochs", "2"],
                  env={**os.environ, "HPCJOBS_PYTHON": sys.executable}, timeout=240)
    assert job.ok, str(job)
    ranks = re.findall(r"^rank (\d+) of 4 local_rank (\d+) on (\S+)", job.output, re.M)
    by_host = {}
    for _rank, local, host in ranks:
        by_host.setdefault(host, []).append(int(local))
    assert sorted(map(sorted, by_host.values())) == [[0, 1], [0, 1]], job.output
