"""Suggestions: an option set that passes, found by running the same checks on candidates.

The serving and training modules generate the candidates (most like the user's first);
:func:`_suggest` evaluates them and writes the first that passes in the user's option names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hpcjobs.planner.core import FAIL, Plan

Render = Callable[[str, Any, Mapping[str, str]], str]


def default_render(key: str, value: Any, names: Mapping[str, str]) -> str:
    name = names.get(key, "--" + key.replace("_", "-"))
    if isinstance(value, bool):
        return name if value else ""
    return f"{name} {value}"


def megatron_render(key: str, value: Any, names: Mapping[str, str]) -> str:
    """Megatron-LM spellings (megatron/training/arguments.py)."""
    if key == "dtype":
        return {"float16": "--fp16", "bfloat16": "--bf16"}.get(value, "")
    if key == "recompute":
        return {"selective": "--recompute-granularity selective",
                "full": "--recompute-granularity full --recompute-method uniform "
                        "--recompute-num-layers 1"}.get(value, "")
    return default_render(key, value, names)


_SHOWN = ("tp", "pp", "cp", "dtype", "quantization", "quant_bits", "max_model_len", "micro_batch_size",
          "recompute", "distributed_optimizer", "zero_stage", "offload")


def _suggest(plan: Plan, candidates: Iterable[dict], evaluate: Callable, render: Render | None,
             prefix: str = "") -> None:
    render = render or default_render
    best_fail = None
    tried = 0
    for cand in candidates:
        tried += 1
        if tried > 4000:  # bounded: a huge cluster profile must not stall the CLI
            break
        if cand.pop("_shorten", False):
            cand = _shorten(cand, evaluate)
            if cand is None:
                continue
        checks, num = evaluate(cand)
        if any(c.status == FAIL for c in checks):
            mem = num.get("margin_gb")
            if mem is not None and (best_fail is None or mem > best_fail[1].get("margin_gb", -1e18)):
                best_fail = (cand, num)
            continue
        plan.suggested = cand
        moved = (cand["tp"], cand["pp"]) != (plan.params["tp"], plan.params["pp"])
        changed = [k for k in _SHOWN if k in cand and (cand[k] != plan.params.get(k)
                                                         or (moved and k in ("tp", "pp")))]
        if cand.get("quantization", "none") == "none":
            changed = [k for k in changed if k != "quant_bits"]
        opts = " ".join(x for x in (render(k, cand[k], plan.names) for k in changed) if x)
        plan.suggestion = f"{prefix}try {opts} ({_fits_note(plan, cand, num)})"
        return
    if best_fail is not None:
        cand, num = best_fail
        keys = [k for k in _SHOWN if k in cand and (k in ("tp", "pp") or cand[k] != plan.params.get(k))]
        opts = " ".join(x for x in (render(k, cand[k], plan.names) for k in keys) if x)
        plan.suggestion = (f"{prefix}nothing fits {plan.hardware.total}x {plan.hardware.memory_gb:g} GB: "
                           f"the best layout ({opts}) still needs {num.get('need_per_device_gb')} GB "
                           "per device; use more or larger GPUs (--nodes), a smaller model"
                           + (", or 4-bit quantization" if plan.mode == "serving" else
                              ", ZeRO-3 with CPU offload, or LoRA/QLoRA fine-tuning"))
    else:
        plan.suggestion = f"{prefix}no layout of this model passes the structural checks on this cluster"


def _shorten(cand: dict, evaluate: Callable) -> dict | None:
    """The longest max-model-len below the candidate's (a multiple of 256, >= 256) whose KV cache
    fits: vLLM's own advice when one sequence does not fit ("decrease max_model_len")."""
    _, num = evaluate({**cand, "max_model_len": 1})
    length = min(num.get("kv_tokens_fit", 0), cand["max_model_len"] - 1) // 256 * 256
    if length < 256:
        return None
    return {**cand, "max_model_len": length}


def _fits_note(plan: Plan, cand: dict, num: dict) -> str:
    parts = []
    if plan.mode == "serving":
        if cand["quantization"] != "none":
            parts.append(f"{cand['quant_bits']}-bit {cand['quantization']} weights "
                         f"{num['weights_total_gb']:.0f} GB, needs a {cand['quantization']} "
                         f"checkpoint of {plan.model.name}")
        parts.append(f"{num['need_per_device_gb']:.1f} of {num['usable_per_device_gb']:.1f} GB per "
                     f"device, margin {num['margin_gb']:.1f} GB, room for {num['sequences_fit']} "
                     f"sequences of {cand['max_model_len']}")
    else:
        parts.append(f"DP {num['dp']}; {num['need_per_device_gb']:.1f} of "
                     f"{plan.hardware.memory_gb:g} GB per GPU, margin {num['margin_gb']:.1f} GB")
    return "; ".join(parts)
