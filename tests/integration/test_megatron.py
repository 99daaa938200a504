"""megatron-core's parallel_state for real on the sandbox: TP and DP groups across 3 nodes over
gloo, group membership asserted from what each rank printed. (The model itself needs CUDA:
tests/gpu/run_megatron_gpu.sh.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import run_job, wait_job

LINE = re.compile(r"^rank (\d+) on (\S+): tp_rank (\d+) dp_rank (\d+) pp_rank (\d+); "
                  r"TP group \[([\d, ]+)\] DP group \[([\d, ]+)\] PP group \[([\d, ]+)\]; "
                  r"all_reduce TP (\d+) DP (\d+); ok$", re.M)


@pytest.fixture(scope="module", autouse=True)
def megatron_core():
    r = subprocess.run([sys.executable, "-c", "import megatron.core"], capture_output=True,
                       check=False)
    if r.returncode != 0:
        pytest.skip("megatron-core is not installed for the jobs' Python (pip install megatron-core)")


@pytest.fixture
def env(shared_tmp):
    e = {k: v for k, v in os.environ.items() if k != "HPCJOBS_CLUSTER"}
    e["HPCJOBS_RUNS_DIR"] = str(shared_tmp / "runs")
    return e


def groups(out: str) -> dict[int, dict]:
    ranks = {}
    for m in LINE.finditer(out):
        ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
        ranks[int(m[1])] = {"host": m[2], "tp_rank": int(m[3]), "dp_rank": int(m[4]),
                            "tp": ints(m[6]), "dp": ints(m[7]), "pp": ints(m[8]),
                            "sum_tp": int(m[9]), "sum_dp": int(m[10])}
    return ranks


def check_tp2(out: str, nodes: list[str]) -> None:
    """TP 2 inside each node (ranks 2k, 2k+1 on node k), DP across all nodes."""
    n = len(nodes)
    ranks = groups(out)
    assert sorted(ranks) == list(range(2 * n)), out
    for r, g in ranks.items():
        base = r - r % 2
        assert g["host"] == nodes[r // 2]
        assert g["tp"] == [base, base + 1] and g["tp_rank"] == r % 2
        assert g["dp"] == list(range(r % 2, 2 * n, 2)) and g["dp_rank"] == r // 2
        assert g["pp"] == [r]
        assert g["sum_tp"] == 2 * base + 1 and g["sum_dp"] == sum(g["dp"])
        # a TP group never leaves its node; a DP group spans every node
        assert {ranks[x]["host"] for x in g["tp"]} == {nodes[r // 2]}
        assert {ranks[x]["host"] for x in g["dp"]} == set(nodes)
    assert (f"TP 2 x PP 1 x CP 1 x DP {n} = {2 * n} ranks on {n} node(s) ({', '.join(nodes)}), "
            "backend gloo: groups ok; CUDA_DEVICE_MAX_CONNECTIONS=1") in out


def test_parallel_state_tp_and_dp_groups_across_three_nodes(sandbox, env):
    sandbox.need(3)
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "submit", "megatron", "--json",
                        "--nodes", "3", "--gpus-per-node", "0", "--ntasks-per-node", "2",
                        "--tensor-parallel-size", "2", "--time", "10", "--",
                        "examples/megatron_parallel_state.py"],
                       capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert r.returncode == 0, r.stderr
    sub = json.loads(r.stdout)
    f = wait_job(sub["job_id"], 240)
    out = Path(sub["run_dir"], f"slurm-{sub['job_id']}.out").read_text()
    assert f["JobState"] == "COMPLETED" and f["ExitCode"] == "0:0", out
    check_tp2(out, sandbox.nodes[:3])
    script = Path(sub["run_dir"], "job.sbatch").read_text()
    assert "export HPCJOBS_TP_SIZE=2\n" in script and "export HPCJOBS_DP_SIZE=3\n" in script


def test_direct_script_runs_the_same(sandbox, shared_tmp):
    sandbox.need(3)
    job = run_job(["-N3", "--ntasks-per-node=2", f"--output={shared_tmp}/slurm-%j.out",
                   "job_templates/megatron.sbatch", "examples/megatron_parallel_state.py",
                   "--tensor-model-parallel-size", "2"], timeout=240)
    assert job.ok, str(job)
    check_tp2(job.output, sandbox.nodes[:3])


def test_pretrain_gpt_without_its_required_arguments_never_reaches_slurm(sandbox, env, tmp_path):
    (tmp_path / "pretrain_gpt.py").write_text("raise SystemExit('must not run')\n")
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "submit", "megatron", "--megatron-path",
                        str(tmp_path), "--", "--num-layers", "2", "--hidden-size", "64"],
                       capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    # The sandbox's GPUs are placeholders: pretrain_gpt.py cannot run there whatever its
    # arguments, and that is said first.
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("hpcjobs: error: --megatron-path: pretrain_gpt.py needs CUDA GPUs"), r.stderr
    assert r.stderr.count("\n") == 1
    # For a cluster with real GPUs (the built-in profile), the missing argument is the refusal.
    builtin = ROOT / "hpcjobs" / "data" / "default_cluster.toml"
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "submit", "megatron", "--cluster", str(builtin),
                        "--megatron-path", str(tmp_path), "--", "--num-layers", "2", "--hidden-size", "64"],
                       capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("hpcjobs: error: --num-attention-heads: pretrain_gpt.py needs it"), r.stderr
    assert not Path(env["HPCJOBS_RUNS_DIR"]).exists()


def test_direct_script_refuses_pretrain_gpt_before_any_rank_starts(sandbox, shared_tmp):
    # `sbatch job_templates/megatron.sbatch pretrain_gpt.py ...` has no hpcjobs in front of it:
    # the job checks the arguments itself (python -m hpcjobs.runners.megatron complete), exit 2.
    (shared_tmp / "pretrain_gpt.py").write_text("raise SystemExit('must not run')\n")
    job = run_job(["-N1", f"--output={shared_tmp}/slurm-%j.out", "job_templates/megatron.sbatch",
                   str(shared_tmp / "pretrain_gpt.py"), "--num-layers", "2"], timeout=120)
    assert job.state == "FAILED" and job.exit_code == "2:0", str(job)
    assert "hpcjobs: error: --hidden-size: pretrain_gpt.py needs it" in job.output
    assert "must not run" not in job.output and "hpcjobs: megatron on" not in job.output
