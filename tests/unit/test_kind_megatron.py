"""The megatron kind without Slurm: pretrain_gpt.py's required arguments checked before
submission, the old guide's settings refused by the plan, and what the script adds per GPU."""

import os
import subprocess
import sys

import pytest

from hpcjobs import kinds
from hpcjobs.api import prepare
from hpcjobs.cluster import builtin, load_file
from hpcjobs.errors import BadInput
from hpcjobs.runners import megatron as mg
from hpcjobs.rendering import direct_script, materialize
from hpcjobs.spec import JobSpec
from tests.conftest import FIXTURES, ROOT

H100 = FIXTURES / "profiles" / "one_node_8gpu.toml"
KIND = kinds.get("megatron")

# A 1.3B-class GPT that fits three 32 GB V100S with the distributed optimizer.
GOOD = ["--num-layers", "24", "--hidden-size", "2048", "--num-attention-heads", "16",
        "--max-position-embeddings", "2048", "--seq-length", "2048", "--micro-batch-size", "1",
        "--global-batch-size", "12", "--train-iters", "100", "--lr", "1e-4", "--mock-data",
        "--tokenizer-type", "NullTokenizer", "--vocab-size", "50304",
        "--use-distributed-optimizer", "--recompute-granularity", "full", "--recompute-method",
        "uniform", "--recompute-num-layers", "1"]


@pytest.fixture
def mlm(tmp_path):
    d = tmp_path / "Megatron-LM"
    d.mkdir()
    (d / "pretrain_gpt.py").write_text("# stand-in\n")
    return d


def prep(cluster=None, program=(), **kw):
    c = cluster or builtin()
    options = kw.pop("options", {})
    return prepare(JobSpec(kind="megatron", program=list(program), options=options, **kw), c), c


def without(args, flag, n=1):
    i = args.index(flag)
    return args[:i] + args[i + 1 + n:]


# --- required arguments ----------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--num-layers", "--hidden-size", "--num-attention-heads",
                                  "--max-position-embeddings", "--micro-batch-size"])
def test_each_required_argument_is_named_when_missing(isolated, mlm, flag):
    with pytest.raises(BadInput) as e:
        prep(program=without(GOOD, flag), options={"megatron_path": str(mlm)})
    assert e.value.field == flag and "pretrain_gpt.py needs it" in str(e.value)


def test_iterations_data_and_tokenizer_are_required(isolated, mlm):
    o = {"megatron_path": str(mlm)}
    with pytest.raises(BadInput, match="--train-iters"):
        prep(program=without(GOOD, "--train-iters"), options=o)
    prep(program=[*without(GOOD, "--train-iters"), "--train-samples", "1000"], options=o)
    with pytest.raises(BadInput) as e:
        prep(program=without(GOOD, "--mock-data", 0), options=o)
    assert e.value.field == "--data-path" and "--mock-data" in str(e.value)
    with pytest.raises(BadInput) as e:
        prep(program=[*GOOD, "--data-path", "/d/x_text_document"], options=o)
    assert "single data source" in str(e.value)
    with pytest.raises(BadInput) as e:
        prep(program=without(without(GOOD, "--tokenizer-type"), "--vocab-size"), options=o)
    assert e.value.field == "--tokenizer-type"
    with pytest.raises(BadInput) as e:
        prep(program=without(GOOD, "--vocab-size"), options=o)  # NullTokenizer needs it
    assert e.value.field == "--vocab-size"
    args = without(without(GOOD, "--tokenizer-type"), "--vocab-size")
    with pytest.raises(BadInput) as e:
        prep(program=[*args, "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", "v.json"], options=o)
    assert e.value.field == "--merge-file"
    with pytest.raises(BadInput, match="not a Megatron tokenizer type"):
        prep(program=[*args, "--tokenizer-type", "Nope"], options=o)


def test_pretrain_gpt_given_as_the_program_is_checked_too(isolated, mlm):
    with pytest.raises(BadInput, match="--micro-batch-size"):
        prep(program=["python3", str(mlm / "pretrain_gpt.py"), *without(GOOD, "--micro-batch-size")])


def test_megatron_path_must_hold_pretrain_gpt(isolated, tmp_path):
    with pytest.raises(BadInput) as e:
        prep(program=GOOD, options={"megatron_path": str(tmp_path)})
    assert e.value.field == "--megatron-path"


# --- the old guide's settings and the GPU ------------------------------------------------------

def test_tensor_model_parallel_size_3_is_refused_with_reasons(isolated, mlm):
    with pytest.raises(BadInput) as e:
        prep(program=[*GOOD, "--tensor-model-parallel-size", "3"], options={"megatron_path": str(mlm)})
    msg = str(e.value)
    assert e.value.field == "--tensor-model-parallel-size"
    assert "16 attention heads not divisible by TP 3" in msg and "spans nodes" in msg
    assert "try --tensor-model-parallel-size 1" in msg


def test_the_suggestion_passes(isolated, mlm):
    s, c = prep(program=GOOD, options={"megatron_path": str(mlm)})
    p = KIND.plan(s.spec, c)
    assert p.ok and (p.params["tp"], p.params["pp"], p.numbers["dp"]) == (1, 1, 3)


def test_bf16_on_the_v100s_is_refused(isolated, mlm):
    with pytest.raises(BadInput) as e:
        prep(program=[*GOOD, "--bf16"], options={"megatron_path": str(mlm)})
    assert e.value.field == "--fp16/--bf16" and "no bfloat16 on CC 7.0" in str(e.value)


def test_transformer_engine_on_the_v100s_is_refused(isolated, mlm):
    with pytest.raises(BadInput) as e:
        prep(program=[*GOOD, "--transformer-impl", "transformer_engine"],
             options={"megatron_path": str(mlm)})
    assert e.value.field == "--transformer-impl" and "8.0" in str(e.value)


def test_hpcjobs_option_and_the_programs_own_must_agree(isolated, mlm):
    with pytest.raises(BadInput) as e:
        prep(program=[*GOOD, "--tensor-model-parallel-size", "1"],
             options={"megatron_path": str(mlm), "tensor_parallel_size": 2})
    assert e.value.field == "--tensor-parallel-size" and "contradicts" in str(e.value)


def test_pretrain_gpt_needs_gpus(isolated, mlm):
    with pytest.raises(BadInput) as e:
        prep(program=GOOD, gpus_per_node=0, options={"megatron_path": str(mlm)})
    assert e.value.field == "--gpus-per-node"


# --- what the script gets ------------------------------------------------------------------

def script(cluster=None, program=(), **kw):
    s, _ = prep(cluster, program, **kw)
    return materialize(s, run_dir="/tmp/run").script


def test_v100s_gets_fp16_and_the_local_transformer_and_the_plans_layout(isolated, mlm):
    text = script(program=GOOD, options={"megatron_path": str(mlm)})
    assert f"set -- {mlm}/pretrain_gpt.py \"$@\"" in text
    assert ('set -- "$@" --tensor-model-parallel-size 1 --pipeline-model-parallel-size 1 --fp16 '
            "--transformer-impl local\n") in text
    for line in ("HPCJOBS_TP_SIZE=1", "HPCJOBS_PP_SIZE=1", "HPCJOBS_DP_SIZE=3",
                 "HPCJOBS_PRECISION=fp16", "HPCJOBS_TRANSFORMER_IMPL=local"):
        assert f"export {line}\n" in text
    assert "#SBATCH --ntasks-per-node=1" in text and "-m hpcjobs.launch -- \"$@\"" in text


def test_h100_gets_bf16_and_transformer_engine_and_tp_inside_the_node(isolated, mlm):
    text = script(load_file(H100), program=GOOD, options={"megatron_path": str(mlm)})
    assert '--tensor-model-parallel-size 8 --pipeline-model-parallel-size 1 --bf16\n' in text
    assert "--transformer-impl" not in text.split('set -- "$@"')[1].splitlines()[0]
    assert "export HPCJOBS_TRANSFORMER_IMPL=transformer_engine" in text
    assert "#SBATCH --ntasks-per-node=8" in text


def test_given_flags_are_not_added_twice(isolated, mlm):
    text = script(program=[*GOOD, "--fp16", "--transformer-impl", "local",
                           "--tensor-model-parallel-size", "1", "--pipeline-model-parallel-size", "1"],
                  options={"megatron_path": str(mlm)})
    assert "# Added to pretrain_gpt.py's arguments" not in text


def test_additions_alone():
    args = mg.MegatronArgs.parse(["--fp16", "--num-layers=4", "--data-path", "a", "b"])
    assert args.values == {"--fp16": None, "--num-layers": "4", "--data-path": "a"}
    assert mg.additions(args, tp=2, pp=None, cc=(7, 0)) == [
        "--tensor-model-parallel-size", "2", "--transformer-impl", "local"]
    assert mg.additions(mg.MegatronArgs.parse([]), tp=None, pp=None, cc=(9, 0)) == ["--bf16"]
    assert mg.additions(mg.MegatronArgs.parse([]), tp=None, pp=None, cc=(9, 0), dtype="float32") == []


# --- megatron-core scripts -------------------------------------------------------------------

def test_core_script_on_cpu_ranks_gets_the_layout(isolated):
    text = script(program=["examples/megatron_parallel_state.py"], gpus_per_node=0,
                  ntasks_per_node=2, options={"tensor_parallel_size": 2})
    for line in ("HPCJOBS_TP_SIZE=2", "HPCJOBS_DP_SIZE=3", "HPCJOBS_PRECISION=fp32"):
        assert f"export {line}\n" in text
    assert "#SBATCH --ntasks-per-node=2" in text and "--gres" not in text


def test_core_script_layout_is_checked_without_a_model(isolated):
    with pytest.raises(BadInput) as e:
        prep(program=["examples/megatron_parallel_state.py"], options={"tensor_parallel_size": 3})
    assert e.value.field == "--tensor-parallel-size" and "spans nodes" in str(e.value)
    with pytest.raises(BadInput, match="does not divide"):
        prep(program=["examples/megatron_parallel_state.py"], gpus_per_node=0, ntasks_per_node=2,
             options={"tensor_parallel_size": 2, "pipeline_parallel_size": 2})
    with pytest.raises(BadInput) as e:
        prep(program=["examples/megatron_parallel_state.py"], ntasks_per_node=2)
    assert e.value.field == "--ntasks-per-node"


def test_core_script_with_a_model_is_planned(isolated):
    # --model turns the memory plan on: 70B training does not fit three 32 GB GPUs
    with pytest.raises(BadInput) as e:
        prep(program=["examples/megatron_parallel_state.py"], options={"model": "llama-2-70b"})
    assert "nothing fits 3x 32 GB" in str(e.value)
    from hpcjobs import api

    p = api.plan(JobSpec(kind="megatron", program=["x.py"], options={"model": "llama-2-7b"}), builtin())
    assert p.framework == "megatron" and p.mode == "training"


def test_cli_plan_and_submit_refuse_with_exit_2(isolated, mlm):
    env = os.environ.copy()
    for cmd in ("plan", "submit"):
        r = subprocess.run([sys.executable, "-m", "hpcjobs", cmd, "megatron", "--megatron-path",
                            str(mlm), "--", *GOOD, "--tensor-model-parallel-size", "3"],
                           capture_output=True, text=True, cwd=ROOT, env=env)
        assert r.returncode == 2, r.stderr
        assert "warning" not in r.stderr  # pretrain_gpt.py's arguments are not a program
    assert "FAIL  heads" in r.stdout if cmd == "plan" else True
    assert not (isolated / "runs").exists()


# --- the direct-use script -----------------------------------------------------------------

def test_direct_script_checks_and_completes_at_run_time():
    text = direct_script("megatron")
    assert '-m hpcjobs.runners.megatron complete -- "$@"' in text
    assert "HPCJOBS_MEGATRON_PATH" in text
    r = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_complete_at_run_time(monkeypatch):
    monkeypatch.setattr(mg, "lowest_compute_capability", lambda: (7, 0))
    rc, extra, _ = mg.complete(["--", "pretrain_gpt.py", *GOOD], {"SLURM_GPUS_ON_NODE": "3"})
    # 16 heads: TP 3 does not divide them, 2 does
    assert rc == 0 and extra == ["--tensor-model-parallel-size", "2", "--fp16",
                                 "--transformer-impl", "local"]
    rc, _, msg = mg.complete(["pretrain_gpt.py", *GOOD, "--bf16"], {})
    assert rc == 2 and msg.startswith("hpcjobs: error: --bf16:")
    rc, _, msg = mg.complete(["pretrain_gpt.py", *without(GOOD, "--hidden-size")], {})
    assert rc == 2 and "--hidden-size" in msg
    assert mg.complete(["python3", "other.py", "--x"], {}) == (0, [], "")
    monkeypatch.setattr(mg, "lowest_compute_capability", lambda: None)
    rc, _, msg = mg.complete(["pretrain_gpt.py", *GOOD], {})
    assert rc == 2 and "no NVIDIA GPU" in msg
