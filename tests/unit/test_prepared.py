"""prepare() builds one Prepared per job: the kind's checks and plan run once, and render and
submit use that value as it is (nothing is planned or defaulted again)."""

from __future__ import annotations

import os

import pytest

import hpcjobs.planner as planner
from hpcjobs import api, kinds
from hpcjobs.cluster import builtin
from hpcjobs.kinds import megatron as megatron_kind
from hpcjobs.prepared import Prepared
from hpcjobs.spec import JobSpec
from tests.conftest import ROOT

PRETRAIN = ["pretrain_gpt.py", "--num-layers", "4", "--hidden-size", "256",
            "--num-attention-heads", "8", "--max-position-embeddings", "512", "--seq-length", "512",
            "--micro-batch-size", "1", "--train-iters", "10", "--mock-data",
            "--tokenizer-type", "NullTokenizer", "--vocab-size", "1024"]


@pytest.fixture
def counted(monkeypatch):
    """Counts of the kinds' plan() and of the planner's and Megatron's checks."""
    counts = {"plan": 0, "check_training": 0, "check_serving": 0, "check_required": 0}

    def wrap(owner, name, key):
        real = getattr(owner, name)

        def counting(*a, **kw):
            counts[key] += 1
            return real(*a, **kw)

        monkeypatch.setattr(owner, name, counting)

    for k in kinds.names():
        kind = kinds.get(k)
        monkeypatch.setattr(kind, "plan", _counting(kind.plan, counts))
    # the package's names (kinds call them) and the modules' own (the *_from_spec helpers do)
    for owner in (planner, planner.training):
        wrap(owner, "check_training", "check_training")
    for owner in (planner, planner.serving):
        wrap(owner, "check_serving", "check_serving")
    wrap(megatron_kind, "check_required", "check_required")
    return counts


def _counting(fn, counts):
    def plan(spec, cluster):
        counts["plan"] += 1
        return fn(spec, cluster)
    return plan


@pytest.mark.parametrize("kind, program, options", [
    ("megatron", PRETRAIN, {}),
    ("vllm", [], {"model": "meta-llama/Llama-2-7b-hf"}),
    ("deepspeed", ["examples/ds_zero3.py"], {"model": "llama-2-7b", "offload_optimizer": "cpu"}),
    ("train", ["examples/train_ddp.py"], {}),
])
def test_a_dry_run_submit_plans_once(kind, program, options, counted, isolated, monkeypatch):
    monkeypatch.chdir(ROOT)
    (ROOT / "pretrain_gpt.py").exists() or monkeypatch.chdir(_with_pretrain(isolated))
    sub = api.submit(JobSpec(kind=kind, program=program, options=options), builtin(), dry_run=True)
    assert counted["plan"] == 1
    assert counted["check_training"] + counted["check_serving"] == (0 if kind == "train" else 1)
    assert counted["check_required"] == (1 if kind == "megatron" else 0)
    assert isinstance(sub.rendered.job, Prepared) and sub.rendered.job.kind.name == kind


def _with_pretrain(tmp):
    """A directory holding a pretrain_gpt.py (the checks look for the program file) and examples/."""
    (tmp / "pretrain_gpt.py").write_text("")
    os.symlink(ROOT / "examples", tmp / "examples")
    return tmp


def test_render_takes_the_prepared_job_as_it_is(counted, isolated):
    job = api.prepare(JobSpec(kind="vllm", options={"model": "meta-llama/Llama-2-7b-hf"}), builtin())
    assert counted["plan"] == 1
    text = api.render(job).script
    assert counted["plan"] == 1  # rendering reads job.plan
    assert f"--tensor-parallel-size {job.plan.params['tp']}" in text
    # every option of the kind is filled once, in prepare
    assert set(job.spec.options) == set(kinds.get("vllm").defaults())


def test_a_direct_script_has_no_plan(counted):
    job = api.render(JobSpec(kind="megatron"), builtin(), direct=True).job
    assert job.direct and job.plan is None and counted["plan"] == 0
