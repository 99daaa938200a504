"""The plan: refusals with reasons, numbers with margins, and suggestions that pass when fed back."""

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

import hpcjobs.planner as plan
from hpcjobs.kinds.deepspeed import DEEPSPEED
from hpcjobs.kinds.megatron import MEGATRON
from hpcjobs.kinds.vllm import SGLANG, VLLM
from hpcjobs import api, kinds, models
from hpcjobs.cluster import builtin, builtin_text, load_file
from hpcjobs.errors import BadInput
from hpcjobs.kinds.base import Kind
from hpcjobs.models import ModelShape
from hpcjobs.spec import JobSpec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
V100 = builtin()  # 3 nodes x 1 V100S 32 GB, CC 7.0
H100X8 = load_file(FIXTURES / "profiles" / "one_node_8gpu.toml")  # 1 node x 8 H100 80 GB
CPUS = load_file(FIXTURES / "profiles" / "cpu_3node.toml")  # 3 nodes, no GPUs (like the sandbox)
L70 = models.builtin("llama-2-70b")
GPT13 = ModelShape("gpt-1.3b", 24, 2048, 16, 16, 8192, 50257, 2048, gated_mlp=False)


# Each framework's rules belong to its kind; the planner gets them as a value.
FRAMEWORKS = {f.name: f for f in (VLLM, SGLANG, MEGATRON, DEEPSPEED)}


def serve(cluster=V100, model=L70, nodes=None, framework="vllm", **kw):
    return plan.check_serving(JobSpec(kind="vllm", nodes=nodes), cluster, model,
                              framework=FRAMEWORKS[framework], **kw)


def train(cluster=V100, model=GPT13, framework="megatron", **kw):
    return plan.check_training(JobSpec(kind="megatron"), cluster, model,
                               framework=FRAMEWORKS[framework], **kw)


def status(p, name):
    return next(c.status for c in p.checks if c.name == name)


def refeed(p, cluster=V100, nodes=None):
    """Run the plan again on the suggested option set: it must pass."""
    assert p.suggested is not None, p.suggestion
    model = p.model
    if p.mode == "serving":
        q = plan.check_serving(JobSpec(kind="vllm", nodes=nodes), cluster, model,
                               framework=FRAMEWORKS[p.suggested_framework or p.framework],
                               **p.suggested)
    else:
        q = plan.check_training(JobSpec(kind="x", nodes=nodes), cluster, model,
                                framework=FRAMEWORKS[p.framework], **p.suggested)
    assert q.ok, q.text()
    return q


# --- the old guide's vLLM command ------------------------------------------------------------

def test_old_guide_vllm_tp3_refused_with_all_reasons():
    p = serve(tp=3, pp=1)
    assert not p.ok
    assert p.field == "--tensor-parallel-size"
    assert "64 attention heads not divisible by TP 3" in p.reason
    assert "138 GB of float16 weights" in p.reason
    assert "TP 3 spans nodes (1 GPU per node)" in p.reason
    assert [c.name for c in p.failures] == ["heads", "cross-node TP", "memory"]
    assert p.numbers["weights_total_gb"] == pytest.approx(137.95, abs=0.1)
    assert p.numbers["usable_per_device_gb"] == pytest.approx(28.8)
    assert "short by" in next(c.detail for c in p.checks if c.name == "memory")


def test_old_guide_vllm_suggestion_passes_when_fed_back():
    p = serve(tp=3, pp=1)
    assert p.suggestion.startswith("try --tensor-parallel-size 1 --pipeline-parallel-size 3 "
                                   "--quantization gptq")
    assert p.suggested["tp"] == 1 and p.suggested["pp"] == 3
    q = refeed(p)
    assert q.numbers["margin_gb"] > 0
    assert "margin" in next(c.detail for c in q.checks if c.name == "memory")


def test_suggestion_through_the_shared_options():
    spec = JobSpec(kind="vllm", options={"model": "llama-2-70b", "tensor_parallel_size": 3})
    p = plan.serving_from_spec(spec, V100, framework=VLLM)
    assert not p.ok
    opts = p.suggested_options()
    assert set(opts) <= {o.key for o in plan.SERVING_OPTIONS}
    q = plan.serving_from_spec(JobSpec(kind="vllm", options={"model": "llama-2-70b", **opts}), V100, framework=VLLM)
    assert q.ok, q.text()


def test_default_layout_is_tp_gpus_per_node_pp_nodes():
    p = serve(model=models.builtin("llama-3-8b"))
    assert (p.params["tp"], p.params["pp"]) == (1, 3)
    assert p.ok, p.text()
    assert status(p, "dtype") == "warn"  # bf16 checkpoint on CC 7.0: auto -> float16
    assert p.numbers["dtype"] == "float16"
    q = serve(cluster=H100X8, model=models.builtin("llama-3-8b"))
    assert (q.params["tp"], q.params["pp"]) == (8, 1) and q.numbers["dtype"] == "bfloat16"


def test_kv_cache_arithmetic_over_pipeline_stages():
    p = serve(tp=1, pp=3, quantization="gptq", quant_bits=4)
    assert p.ok, p.text()
    assert [s["layers"] for s in p.numbers["stages"]] == [27, 27, 26]
    assert p.numbers["kv_per_token_bytes"] == 2 * 80 * 8 * 128 * 2  # 320 KiB summed over stages
    assert p.numbers["sequences_fit"] >= 1


# --- one node with 8 GPUs ---------------------------------------------------------------------

def test_tp8_fits_on_one_8gpu_node():
    p = serve(cluster=H100X8, tp=8)
    assert p.ok, p.text()
    assert all(c.status == "pass" for c in p.checks)
    assert p.numbers["need_per_device_gb"] < p.numbers["usable_per_device_gb"]


def test_tp3_on_8gpu_node_suggests_tp8():
    p = serve(cluster=H100X8, tp=3)
    assert not p.ok and "straddle" in p.reason
    assert p.suggested["tp"] == 8
    refeed(p, cluster=H100X8)


# --- Megatron ---------------------------------------------------------------------------------

def test_old_guide_megatron_tp3_refused():
    p = train(model=L70, tp=3)
    assert not p.ok
    assert p.field == "--tensor-model-parallel-size"
    assert "64 attention heads not divisible by TP 3" in p.reason
    assert "TP 3 spans nodes" in p.reason
    assert p.suggested is None and p.suggestion.startswith("nothing fits 3x 32 GB")


def test_megatron_small_model_suggestion_passes():
    p = train(tp=3)
    assert not p.ok and p.field == "--tensor-model-parallel-size"
    assert p.suggestion.startswith("try --tensor-model-parallel-size 1 --pipeline-model-parallel-size 1 "
                                   "--use-distributed-optimizer")
    q = refeed(p)
    assert q.numbers["dp"] == 3


def test_megatron_layers_must_divide_pp_and_world_must_divide():
    p = train(tp=1, pp=3, model=models.builtin("llama-2-7b"))  # 32 layers % 3
    assert "32 layers not divisible by PP 3" in p.reason and p.field == "--pipeline-model-parallel-size"
    q = train(cluster=H100X8, tp=3, pp=1)
    assert "not divisible by TP x PP x CP" in q.reason


def test_megatron_distributed_optimizer_bytes():
    # Megatron dist_optimizer doc: fp16 params + fp16 grads = 4 + 16/d bytes/param.
    p = train(tp=1, pp=1, distributed_optimizer=True, recompute="full")
    st = p.numbers["stages"][0]
    expect = GPT13.params * (4 + 16 / 3)
    assert st["states"] == pytest.approx(expect / 1e9, rel=1e-3)


def test_megatron_rendering_uses_its_flags():
    p = train(model=GPT13, dtype="bfloat16", tp=1)
    assert p.field == "--fp16/--bf16" and "no bfloat16 on CC 7.0" in p.reason
    assert "--fp16" in p.suggestion
    refeed(p)


# --- DeepSpeed ZeRO ---------------------------------------------------------------------------

def test_zero3_states_match_deepspeed_estimator():
    m = models.builtin("llama-2-7b")
    p = plan.check_training(JobSpec(kind="ds"), V100, m, framework=DEEPSPEED, zero_stage=3,
                            recompute="full")
    # deepspeed/runtime/zero/stage3.py: 4 x largest layer + 18 x params / GPUs (no offload)
    expect = 4 * m.largest_layer_params + 18 * m.params / 3
    assert p.numbers["stages"][0]["states"] == pytest.approx(expect / 1e9, rel=1e-3)
    assert not p.ok
    q = refeed(p)
    assert q.params["offload"] == "optimizer"


# --- dtype, quantization, framework ---------------------------------------------------------

def test_bf16_refused_below_cc8_and_fp16_suggested():
    p = serve(model=models.builtin("llama-3-8b"), dtype="bfloat16")
    assert not p.ok and p.field == "--dtype"
    assert p.suggested["dtype"] == "float16"
    refeed(p)
    assert serve(cluster=H100X8, model=models.builtin("llama-3-8b"), dtype="bfloat16").ok


@pytest.mark.parametrize("quant, bits", [("gptq", 4), ("gptq", 8), ("bitsandbytes", 4), ("gguf", 4)])
def test_volta_quantizations_that_run(quant, bits):
    p = serve(tp=1, pp=3, dtype="float16", quantization=quant, quant_bits=bits)
    assert status(p, "quantization") == "pass", p.text()


@pytest.mark.parametrize("quant", ["awq", "marlin"])
def test_volta_quantizations_refused(quant):
    p = serve(tp=1, pp=3, dtype="float16", quantization=quant, quant_bits=4)
    assert not p.ok and p.field == "--quantization"
    assert "needs CC >= 7.5" in p.reason
    assert p.suggested["quantization"] == "gptq"
    refeed(p)
    assert serve(cluster=H100X8, tp=8, quantization=quant, quant_bits=4).ok


def test_quantization_bits_and_group_alignment():
    p = serve(tp=1, pp=3, quantization="awq", quant_bits=8, cluster=V100)
    assert "awq has no 8-bit kernels" in p.reason and p.field == "--quantization-bits"
    # Llama-2-70B: 28672 / 8 = 3584 = 28 x 128 rows per rank: aligned at TP 8.
    assert serve(cluster=H100X8, tp=8, quantization="gptq").ok
    # Llama-2-7B: 11008 / 4 = 2752 rows per rank, not a multiple of the group size 128.
    p = serve(cluster=H100X8, model=models.builtin("llama-2-7b"), tp=4, pp=1, quantization="gptq")
    assert "gptq groups of 128 do not split over TP 4" in p.reason and p.field == "--tensor-parallel-size"
    assert p.suggested["tp"] in (1, 2)
    refeed(p, cluster=H100X8)


def test_vllm_on_volta_warns_with_versions():
    p = serve(tp=1, pp=3, quantization="gptq")
    fw = next(c for c in p.checks if c.name == "framework")
    assert fw.status == "warn"
    assert "0.14" in fw.detail and "TORCH_CUDA_ARCH_LIST=7.0" in fw.detail
    assert status(serve(cluster=H100X8, tp=8), "framework") == "pass"


def test_sglang_on_volta_refused_and_vllm_suggested():
    p = serve(tp=1, pp=3, quantization="gptq", framework="sglang")
    assert not p.ok and "SGLang needs sm75+" in p.reason
    assert p.suggested_framework == "vllm" and p.suggestion.startswith("use the vllm kind")
    refeed(p)


# --- structural checks ------------------------------------------------------------------------

def test_world_size_pp_and_max_len():
    assert "= 6 GPUs > 3" in serve(tp=1, pp=6).reason
    assert status(serve(tp=1, pp=2, quantization="gptq"), "world size") == "warn"  # 1 GPU idle
    tiny = ModelShape("t", 2, 256, 4, 4, 512, 1000, 512)
    p = serve(model=tiny, tp=1, pp=3)
    assert "PP 3 > 2 layers" in p.reason and p.field == "--pipeline-parallel-size"
    refeed(p)
    q = serve(tp=1, pp=3, quantization="gptq", max_model_len=8192)
    assert "max-model-len 8192 > 4096 positions" in q.reason and q.field == "--max-model-len"


def test_cross_node_tp_allowed_is_a_warning():
    p = serve(model=models.builtin("llama-2-7b"), tp=3, pp=1, allow_cross_node_tp=True)
    assert status(p, "cross-node TP") == "warn"
    assert "32 attention heads not divisible by TP 3" in p.reason  # heads still refuse
    q = serve(model=models.builtin("llama-2-7b"), nodes=2, tp=2, pp=1, allow_cross_node_tp=True)
    assert q.ok, q.text()


def test_kv_bound_memory_suggests_a_shorter_context():
    # Mixtral in 4-bit GPTQ on 8 GPUs with a memory fraction where the weights fit but not the
    # KV cache of one 32k-token sequence: the fix is a shorter --max-model-len, nothing else.
    m = models.builtin("mixtral-8x7b")
    first = plan.check_serving(JobSpec(kind="vllm"), H100X8, m, framework=VLLM, tp=8, quantization="gptq")
    st = first.numbers["stages"][0]
    util = (st["need"] - st["kv_needed"] / 2) / 80
    p = plan.check_serving(JobSpec(kind="vllm"), H100X8, m, framework=VLLM, tp=8, quantization="gptq",
                           gpu_memory_utilization=util)
    assert not p.ok and p.field == "--max-model-len"
    assert p.suggestion.startswith("try --max-model-len ")
    assert 256 <= p.suggested["max_model_len"] < 32768
    assert p.suggested["quantization"] == "gptq" and p.suggested["tp"] == 8
    refeed(p, cluster=H100X8)


def test_invalid_fraction_is_replaced_in_the_suggestion():
    p = serve(tp=1, pp=3, quantization="gptq", gpu_memory_utilization=1.5)
    assert "--gpu-memory-utilization 1.5 is not in (0, 1]" in p.reason
    assert p.suggested["gpu_memory_utilization"] == 0.9
    refeed(p)


def test_cpu_partition():
    tiny_cfg = ModelShape("tiny", 4, 256, 4, 2, 512, 1000, 512, head_dim=64, torch_dtype="float32")
    p = plan.check_serving(JobSpec(kind="vllm", nodes=2), CPUS, tiny_cfg, framework=VLLM, tp=1, pp=2)
    assert p.ok, p.text()
    assert p.hardware.device == "cpu" and p.numbers["dtype"] == "float32"
    assert status(p, "framework") == "warn"


# --- many combinations: every suggestion passes ---------------------------------------------

@pytest.mark.parametrize("cluster", [V100, H100X8], ids=["v100x3", "h100x8"])
@pytest.mark.parametrize("name", models.names())
@pytest.mark.parametrize("tp, pp", [(3, 1), (1, 1), (2, 2), (5, 1), (1, 7)])
def test_every_serving_suggestion_passes(cluster, name, tp, pp):
    m = models.builtin(name)
    p = plan.check_serving(JobSpec(kind="vllm"), cluster, m, framework=VLLM, tp=tp, pp=pp)
    if p.ok:
        return
    assert p.reason and p.field and p.suggestion
    if p.suggested is not None:
        refeed(p, cluster=cluster)


@pytest.mark.parametrize("framework", ["megatron", "deepspeed"])
@pytest.mark.parametrize("shape", [GPT13, models.builtin("llama-2-7b"), models.builtin("llama-3-8b")],
                         ids=lambda s: s.name)
@pytest.mark.parametrize("tp", [1, 2, 3, 8])
def test_every_training_suggestion_passes(framework, shape, tp):
    for cluster in (V100, H100X8):
        p = plan.check_training(JobSpec(kind="t"), cluster, shape, framework=FRAMEWORKS[framework],
                                tp=tp)
        if not p.ok and p.suggested is not None:
            refeed(p, cluster=cluster)


# --- report, JSON, options ----------------------------------------------------------------

def test_text_and_json():
    p = serve(tp=3, pp=1)
    text = p.text()
    assert "FAIL  heads" in text and "WARN  framework" in text and "verdict: REFUSED" in text
    assert "suggestion: try" in text and "docs/plan.md" in text
    d = json.loads(json.dumps(p.to_dict()))
    assert d["ok"] is False and d["field"] == "--tensor-parallel-size"
    assert {c["status"] for c in d["checks"]} == {"pass", "fail", "warn"}
    assert d["suggested"]["pp"] == 3
    ok = serve(cluster=H100X8, tp=8)
    assert "verdict: FITS" in ok.text() and "margin" in ok.text()


def test_shared_options():
    names = {o.name for o in plan.PLAN_OPTIONS}
    assert {"model", "tensor-parallel-size", "pipeline-parallel-size", "context-parallel-size", "dtype",
            "quantization", "quantization-bits", "max-model-len", "allow-cross-node-tp",
            "gpu-memory-utilization", "micro-batch-size"} <= names
    assert len(names) == len(plan.PLAN_OPTIONS)
    assert set(plan.OPTION_KEYS.values()) <= {o.key for o in plan.PLAN_OPTIONS}
    with pytest.raises(BadInput) as err:
        plan.serving_from_spec(JobSpec(kind="vllm", options={}), V100, framework=VLLM)
    assert err.value.field == "--model"
    with pytest.raises(BadInput) as err:
        plan.serving_from_spec(JobSpec(kind="vllm", options={"model": "llama-2-7b", "dtype": "fp8"}), V100, framework=VLLM)
    assert err.value.field == "--dtype"


def test_plan_module_imports_nothing_heavy():
    code = ("import sys, hpcjobs.planner, hpcjobs.models; "
            "bad = {'torch', 'numpy', 'jinja2', 'click', 'vllm'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- through the API and the CLI, with a kind that uses the plan -----------------------------

class _ServeKind(Kind):
    name = "plantest"
    summary = "test kind for the plan"
    template = "mpi.sbatch.j2"
    options = plan.SERVING_OPTIONS
    needs_program = False

    def plan(self, spec, cluster):
        return plan.serving_from_spec(spec, cluster, framework=VLLM)


@pytest.fixture
def plan_kind(monkeypatch):
    module = types.ModuleType("_hpcjobs_plantest_kind")
    module.KIND = _ServeKind()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(kinds.KINDS, "plantest", f"{module.__name__}:KIND")
    return module.KIND


def test_api_prepare_refuses_with_the_plan(plan_kind):
    spec = JobSpec(kind="plantest", options={"model": "llama-2-70b", "tensor_parallel_size": 3})
    with pytest.raises(BadInput) as err:
        api.prepare(spec, V100)
    assert err.value.field == "--tensor-parallel-size"
    assert "64 attention heads" in err.value.problem and err.value.fix.startswith("try ")
    p = api.plan(spec, V100)
    ok = JobSpec(kind="plantest", options={"model": "llama-2-70b", **p.suggested_options()})
    api.prepare(ok, V100)  # no error


def test_cli_plan_exit_codes(plan_kind, tmp_path):
    from click.testing import CliRunner

    from hpcjobs.cli import main

    prof = tmp_path / "cluster.toml"
    prof.write_text(builtin_text())
    runner = CliRunner()
    bad = runner.invoke(main, ["plan", "plantest", "--cluster", str(prof), "--model", "llama-2-70b",
                               "--tensor-parallel-size", "3"])
    assert bad.exit_code == 2, bad.output
    assert "FAIL  heads" in bad.output and "suggestion: try" in bad.output
    good = runner.invoke(main, ["plan", "plantest", "--cluster", str(prof), "--model", "llama-2-70b",
                                "--tensor-parallel-size", "1", "--pipeline-parallel-size", "3",
                                "--quantization", "gptq", "--json"])
    assert good.exit_code == 0, good.output
    assert json.loads(good.output)["ok"] is True
    missing = runner.invoke(main, ["plan", "plantest", "--cluster", str(prof), "--model", "/nonexistent/m"])
    assert missing.exit_code == 2 and "--model" in missing.output
