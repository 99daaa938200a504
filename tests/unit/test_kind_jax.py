"""The jax kind without Slurm: the mesh and layout refusals, the rendered script, the CLI's
one-line refusal that submits nothing."""

import os
import subprocess
import sys

import pytest

from hpcjobs.api import prepare
from hpcjobs.cluster import builtin, load_file
from hpcjobs.errors import BadInput
from hpcjobs.kinds.jax import parse_mesh
from hpcjobs.rendering import materialize
from hpcjobs.spec import JobSpec
from tests.conftest import FIXTURES, ROOT

H100 = FIXTURES / "profiles" / "one_node_8gpu.toml"  # one node, 8 GPUs
PROG = [str(ROOT / "examples" / "jax_allreduce.py")]


def prep(cluster=None, **kw):
    options = {k: kw.pop(k) for k in ("mesh",) if k in kw}
    return prepare(JobSpec(kind="jax", program=PROG, options=options, **kw), cluster or builtin())


@pytest.mark.parametrize("text, shape", [
    ("data=3", {"data": 3}), ("data=2,model=4", {"data": 2, "model": 4}),
    (" data = 6 ", {"data": 6}), ("x_1=1,y=3", {"x_1": 1, "y": 3}),
])
def test_mesh_shapes(text, shape):
    assert parse_mesh(text) == shape


@pytest.mark.parametrize("text, needle", [
    ("3", "'3' is not AXIS=SIZE"), ("data=two", "is not AXIS=SIZE"), ("1x=2", "is not AXIS=SIZE"),
    ("data=2,data=3", "axis 'data' is named twice"), ("data=0", "sizes start at 1"),
    ("data=2,", "'' is not AXIS=SIZE"),
])
def test_bad_mesh_texts_are_refused(text, needle):
    with pytest.raises(BadInput) as e:
        parse_mesh(text)
    assert e.value.field == "--mesh" and needle in str(e.value)


def test_mesh_must_hold_the_jobs_devices(isolated):
    prep(nodes=3, mesh="data=3")  # 3 nodes x 1 V100S
    with pytest.raises(BadInput) as e:
        prep(nodes=3, mesh="data=2")
    assert e.value.field == "--mesh"
    assert "data=2 holds 2 devices but the job has 3 (3 nodes x 1 GPU each)" in str(e.value)
    assert "e.g. data=3" in str(e.value)
    with pytest.raises(BadInput) as e:
        prep(nodes=2, mesh="data=3,model=2")
    assert "holds 6 devices but the job has 2" in str(e.value)


def test_cpu_devices_per_process_come_from_xla_flags(isolated):
    flags = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    prep(nodes=3, gpus_per_node=0, env=flags, mesh="data=3,model=2")
    with pytest.raises(BadInput) as e:
        prep(nodes=3, gpus_per_node=0, mesh="data=3,model=2")
    assert "holds 6 devices but the job has 3 (3 nodes x 1 CPU process each)" in str(e.value)
    with pytest.raises(BadInput) as e:
        prep(nodes=3, gpus_per_node=0, env=flags, mesh="data=4")
    assert "has 6 (3 nodes x 2 CPU devices each)" in str(e.value)
    assert "data=6 or data=3,model=2" in str(e.value)


def test_one_process_per_gpu(isolated):
    c = load_file(H100)
    job = prep(c, nodes=1, mesh="data=4,model=2")
    assert "#SBATCH --ntasks-per-node=8" in materialize(job, run_dir="/tmp/run").script
    for n, why in ((1, "leave GPUs idle"), (16, "put several processes on one GPU")):
        with pytest.raises(BadInput) as e:
            prep(c, nodes=1, ntasks_per_node=n)
        assert e.value.field == "--ntasks-per-node" and why in str(e.value)


def test_rendered_script(isolated):
    text = materialize(prep(nodes=3, mesh="data=3"), run_dir="/tmp/run").script
    assert "export HPCJOBS_KIND=jax" in text and "export HPCJOBS_JAX_MESH=data=3" in text
    assert 'export JAX_CPU_COLLECTIVES_IMPLEMENTATION="${JAX_CPU_COLLECTIVES_IMPLEMENTATION:-gloo}"' in text
    assert 'hpcjobs_step --kill-on-bad-exit=1 "$HPCJOBS_PYTHON" -m hpcjobs.launch -- "$@"' in text
    assert "#SBATCH --nodes=3" in text and "#SBATCH --ntasks-per-node=1" in text
    assert "HPCJOBS_JAX_MESH" not in materialize(prep(nodes=3), run_dir="/tmp/run").script
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


def test_cli_refuses_a_wrong_mesh_in_one_line_and_writes_nothing(isolated):
    env = {**os.environ, "HPCJOBS_RUNS_DIR": str(isolated / "runs")}
    env.pop("HPCJOBS_CLUSTER", None)
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "submit", "jax", "--nodes", "3",
                        "--mesh", "data=2", "--", *PROG], capture_output=True, text=True,
                       cwd=ROOT, env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "--mesh: data=2 holds 2 devices" in r.stderr
    assert not (isolated / "runs").exists() or not any((isolated / "runs").iterdir())
