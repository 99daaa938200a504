"""OMP_NUM_THREADS: the task's CPUs (issue 11.20), decided by the launcher for every entry path."""

from __future__ import annotations

import re

import pytest

from hpcjobs.errors import BadInput
from hpcjobs.launch import environment, threads
from tests.conftest import ROOT
from tests.unit.test_launch_slurmenv import read_env


def test_cpus_per_task_wins():
    assert threads.omp_threads({"SLURM_CPUS_PER_TASK": "4", "SLURM_CPUS_ON_NODE": "32"}, 8, 64)[0] == "4"


@pytest.mark.parametrize("on_node,tasks,usable,want", [
    ("32", 4, 64, "8"),    # unbound tasks see the whole node: its CPUs shared by its tasks
    ("16", 4, 4, "4"),     # bound to its own 4 cores: the same answer
    ("2", 4, 64, "1"),     # fewer CPUs than tasks: at least one thread
    ("32", 1, 2, "2"),     # Slurm was told 32 CPUs, the machine has 2 (the sandbox): capped
    (None, 2, 16, "8"),    # no SLURM_CPUS_ON_NODE (hand-made step): the usable CPUs
])
def test_node_cpus_divided_by_its_tasks(on_node, tasks, usable, want):
    env = {} if on_node is None else {"SLURM_CPUS_ON_NODE": on_node}
    value, why = threads.omp_threads(env, tasks, usable, "SLURM_STEP_TASKS_PER_NODE")
    assert value == want
    assert f"{tasks} task(s) on this node (SLURM_STEP_TASKS_PER_NODE)" in why


def test_cpus_per_task_is_capped_at_the_usable_cpus():
    value, why = threads.omp_threads({"SLURM_CPUS_PER_TASK": "8"}, 1, 2)
    assert value == "2" and "capped at the 2 CPU(s)" in why


@pytest.mark.parametrize("bad", ["0", "four", "-1"])
def test_bad_slurm_cpu_counts_are_named(bad):
    with pytest.raises(BadInput) as e:
        threads.omp_threads({"SLURM_CPUS_PER_TASK": bad}, 1, 4)
    assert e.value.field == "SLURM_CPUS_PER_TASK"


def _base(tmp_path) -> dict:
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "HPCJOBS_SANDBOX_STATE": str(tmp_path / "none"),
            "HPCJOBS_SYSFS_ROOT": str(ROOT / "tests/fixtures/sysfs/no-rdma")}


def test_the_launcher_sets_it_from_a_recorded_step(tmp_path):
    """A recorded sandbox step of 2 tasks per node (SLURM_CPUS_ON_NODE=2): one thread each."""
    env = {**_base(tmp_path), **read_env("sandbox-srun-N3-tpn2-rank0.env")}
    env.pop("SLURM_CPUS_PER_TASK", None)
    task = environment.build(env)
    want = min(int(env["SLURM_CPUS_ON_NODE"]) // 2, threads.usable_cpus()) or 1
    assert task.additions()["OMP_NUM_THREADS"] == str(want)
    text = environment.explain(task)
    line = next(x for x in text.splitlines() if x.startswith("OMP_NUM_THREADS="))
    assert "SLURM_CPUS_ON_NODE=2 / 2 task(s) on this node" in line and "OpenMP" in line


def test_the_users_value_is_kept(tmp_path):
    env = {**_base(tmp_path), **read_env("sandbox-srun-N3-rank0.env"), "OMP_NUM_THREADS": "7",
           "SLURM_CPUS_PER_TASK": "1"}
    task = environment.build(env)
    assert "OMP_NUM_THREADS" not in task.additions()
    assert "# kept OMP_NUM_THREADS=7 (already set; the launcher would set 1:" in environment.explain(task)


@pytest.mark.parametrize("template", ["train", "deepspeed", "megatron", "horovod", "bench-allreduce"])
def test_templates_leave_it_to_the_launcher(template):
    """A batch script that exported OMP_NUM_THREADS would look like the user's choice, and the
    launcher would keep it: the launcher decides for rendered scripts, direct sbatch and plain
    srun alike."""
    text = (ROOT / "job_templates" / f"{template}.sbatch.j2").read_text()
    assert not re.search(r"^\s*(export\s+)?OMP_NUM_THREADS=", text, re.M)
