"""Golden scripts: one rendered job per kind, with many options set, compared byte for byte.

A review then sees what a template or kind change does to the scripts Slurm really gets (as
submitit pins its sbatch output with a recorded file). The files live in tests/golden/: the
script as ``<kind>.sbatch`` and each side file of the record as ``<kind>.<name>``.

When a change to the output is intended, refresh them and commit the diff with the change:

    HPCJOBS_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_golden.py
"""

from __future__ import annotations

import os

import pytest

from hpcjobs.cluster import builtin
from hpcjobs.spec import JobSpec
from tests.conftest import ROOT

GOLDEN = ROOT / "tests" / "golden"
RUN_DIR = "/runs/20261201-120000-golden-0000"
UPDATE = os.environ.get("HPCJOBS_UPDATE_GOLDEN") == "1"
REFRESH = "HPCJOBS_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_golden.py"

# Options shared by every kind's golden spec: the common ones a user sets most.
COMMON = dict(
    nodes=2, time="01:30:00", job_name="golden run", account="proj-1", qos="normal",
    env={"MY_FLAG": "a b", "SEED": "7"}, output_dir="/scratch/out", array="0-3%2",
    after=["1234:any"], signal="USR1", signal_seconds=90, requeue=True, nccl_debug=True,
    python="/opt/venv/bin/python3", cpus_per_task=4,
    # sbatch's own options and the runtime checks (preflight, sentinel, monitor)
    mem="64G", exclude="pve3", comment="golden", mail_type="END,FAIL", mail_user="me@example.org",
    sbatch_args=["--nice=10"], preflight=True, on_bad_node="exclude", hang_timeout="10m",
    monitor_interval=10,
)

SPECS: dict[str, dict] = {
    "mpi": dict(program=["python3", "examples/mpi_allreduce.py", "--size", "1M"],
                options={"mpi": "pmix"}, ntasks_per_node=2),
    "train": dict(program=["examples/train_ddp.py", "--epochs", "3", "--lr", "0.1"]),
    "deepspeed": dict(program=["examples/ds_zero3.py", "--steps", "5"],
                      options={"offload_optimizer": "cpu", "micro_batch": 2, "grad_accum": 4,
                               "config_arg": "--deepspeed_config"}),
    "megatron": dict(program=["examples/megatron_gpt_tp.py", "--iters", "4"],
                     options={"tensor_parallel_size": 1, "pipeline_parallel_size": 2}),
    "horovod": dict(program=["examples/horovod_allreduce.py"]),
    "vllm": dict(program=["--enforce-eager"],
                 options={"model": "meta-llama/Llama-2-7b-hf", "backend": "ray", "port": 8123,
                          "dtype": "float16", "max_model_len": 2048,
                          "health_timeout": 600}),
    "jax": dict(program=["examples/jax_allreduce.py", "--steps", "8"],
                options={"mesh": "data=2"}),
    "ray": dict(program=["examples/ray_tasks.py", "--tasks", "8"],
                options={"nodes_timeout": 120}),
    "bench-allreduce": dict(program=[], options={}),
    "bench-mpi": dict(program=[], options={}),
}


def rendered(kind: str):
    """The script and side files a submission of SPECS[kind] would record (no Slurm)."""
    from hpcjobs import api
    from hpcjobs.rendering import materialize

    spec = JobSpec(kind=kind, **{**COMMON, **SPECS[kind]})
    cwd = os.getcwd()
    os.chdir(ROOT)  # program paths are relative to the repository
    try:
        cluster = builtin()
        prepared = api.prepare(spec, cluster)
        return materialize(prepared, run_dir=RUN_DIR)
    finally:
        os.chdir(cwd)


def _compare(path, text: str) -> None:
    if UPDATE:
        path.write_text(text)
        return
    assert path.exists(), f"{path.name} has no golden file yet; create it with: {REFRESH}"
    expected = path.read_text()
    assert text == expected, (
        f"the rendered {path.name} differs from tests/golden/{path.name}. If the change is "
        f"intended, refresh the golden files and commit them with it: {REFRESH}")


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_golden_script(kind, isolated):
    r = rendered(kind)
    GOLDEN.mkdir(exist_ok=True)
    _compare(GOLDEN / f"{kind}.sbatch", r.script)
    for name, text in sorted(r.files.items()):
        _compare(GOLDEN / f"{kind}.{name}", text)


def test_every_kind_has_a_golden_spec():
    from hpcjobs import kinds

    assert sorted(SPECS) == sorted(kinds.names()), "add the new kind to SPECS in this file"
