"""Checks shared by serving and training: dtype and tensor parallelism across nodes (each
framework's own support rule is its kind's: hpcjobs/planner/frameworks.py)."""

from __future__ import annotations

from collections.abc import Mapping

from hpcjobs.models import ModelShape
from hpcjobs.planner.core import DTYPE_BYTES, FAIL, PASS, WARN, PlanCheck, Hardware


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


def _check_dtype(dtype: str, model: ModelShape, hw: Hardware, names: Mapping, mode: str) -> PlanCheck:
    src = ("compute capability >= 8.0 for bfloat16 (vllm/platforms/cuda.py check_if_supports_dtype; "
           "NVIDIA CUDA programming guide, bf16 arithmetic on sm_80+)")
    resolved = _resolve_dtype(dtype, model, hw)
    if hw.cc is None:
        return PlanCheck("dtype", PASS, f"{resolved} on CPU", source=src)
    cc = f"{hw.cc[0]}.{hw.cc[1]}"
    if dtype == "bfloat16" and hw.cc < (8, 0):
        return PlanCheck("dtype", FAIL, f"bfloat16 needs compute capability >= 8.0; {hw.model} is CC "
                     f"{cc}: use {names['dtype']} float16" + (" (fp16 with dynamic loss scaling)"
                                                                if mode == "training" else ""),
                     reason=f"no bfloat16 on CC {cc}", field=names["dtype"], source=src)
    if dtype == "auto" and model.torch_dtype == "bfloat16" and hw.cc < (8, 0):
        how = ("current vLLM resolves 'auto' to float16 here (older releases refuse): pass "
               f"{names['dtype']} float16 to be explicit" if mode == "serving" else
               "training runs in float16 with dynamic loss scaling")
        return PlanCheck("dtype", WARN, f"checkpoint is bfloat16, CC {cc} has none: {how}",
                     source=src)
    return PlanCheck("dtype", PASS, f"{resolved} on CC {cc}", source=src)


def _check_cross_node(tp: int, hw: Hardware, allow: bool, names: Mapping) -> PlanCheck:
    src = ("Megatron-LM (Shoeybi et al. 2019): TP does 2 all-reduces per layer forward (+2 backward); "
           "vLLM distributed serving docs: TP = GPUs per node, PP = nodes")
    unit = "GPU" if hw.device == "gpu" else "worker"
    if tp > hw.per_node:
        detail = (f"TP {tp} spans nodes ({hw.per_node} {unit}{'s' * (hw.per_node != 1)} per node): "
                  f"every layer all-reduces over {hw.fabric}")
        if allow:
            return PlanCheck("cross-node TP", WARN, detail + f" (allowed by {names['allow_cross_node_tp']})",
                         source=src)
        return PlanCheck("cross-node TP", FAIL, detail + f"; keep TP <= {hw.per_node} and use PP across "
                     f"nodes, or insist with {names['allow_cross_node_tp']}",
                     reason=f"TP {tp} spans nodes ({hw.per_node} {unit} per node)",
                     field=names["tp"], source=src)
    if hw.per_node % tp:
        detail = f"TP groups of {tp} straddle nodes of {hw.per_node} {unit}s"
        if allow:
            return PlanCheck("cross-node TP", WARN, detail, source=src)
        return PlanCheck("cross-node TP", FAIL, detail + f"; use a TP that divides {hw.per_node}",
                     reason=detail, field=names["tp"], source=src)
    return PlanCheck("cross-node TP", PASS, f"TP {tp} within one node of {hw.per_node}", source=src)
