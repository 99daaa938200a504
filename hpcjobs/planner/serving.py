"""Serving rules and memory: one model across the job's nodes (vLLM, SGLang: their kinds' rules).

:func:`check_serving` with explicit values, :func:`serving_from_spec` with the shared options of
``spec.options``; the quantization formats vLLM has kernels for, with their sources.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from hpcjobs.cluster import Cluster
from hpcjobs.errors import BadInput
from hpcjobs.models import ModelShape, resolve
from hpcjobs.planner.checks import _check_cross_node, _check_dtype, _resolve_dtype
from hpcjobs.planner.core import (DTYPE_BYTES, FAIL, GB, PASS, WARN, PlanCheck, Hardware, Plan, _divisors, _gb,
                               _pp_split, hardware)
from hpcjobs.planner.frameworks import Framework, check_support
from hpcjobs.planner.options import DTYPES, QUANTIZATIONS
from hpcjobs.planner.suggest import Render, _suggest
from hpcjobs.spec import JobSpec

# --- quantization formats (vLLM) -------------------------------------------------------------

@dataclass(frozen=True)
class Quant:
    name: str
    bits: tuple[int, ...]
    min_cc: tuple[int, int]
    group: int  # group size of per-group scales (0: none); input rows per TP rank must divide it
    extra_bits: Callable[[int], float]  # storage overhead per weight (scales, zeros)
    source: str


QUANTS: dict[str, Quant] = {
    "gptq": Quant("gptq", (2, 3, 4, 8), (6, 0), 128, lambda b: (16 + b) / 128,
                  "vllm/model_executor/layers/quantization/gptq.py: GPTQConfig.get_min_capability() = 60"),
    "awq": Quant("awq", (4,), (7, 5), 128, lambda b: (16 + b) / 128,
                 "vllm/.../quantization/awq.py: AWQConfig.get_min_capability() = 75 "
                 "(\"The AWQ kernel only supports Turing or newer GPUs\")"),
    "bitsandbytes": Quant("bitsandbytes", (4, 8), (7, 0), 0, lambda b: 0.5 if b == 4 else 0.25,
                          "vllm/.../quantization/bitsandbytes.py: get_min_capability() = 70"),
    "gguf": Quant("gguf", (2, 3, 4, 5, 6, 8), (6, 0), 0, lambda b: 0.5,
                  "vllm/.../quantization/gguf.py: GGUFConfig.get_min_capability() = 60"),
    "marlin": Quant("marlin", (4, 8), (7, 5), 128, lambda b: (16 + b) / 128,
                    "vLLM CMakeLists.txt: Marlin kernels built for 8.0+ (7.5 partly, recent "
                    "releases); none for 7.0"),
}


SERVING_OVERHEAD_GB = 1.0  # CUDA context, NCCL buffers, CUDA graphs (vLLM profiles the real one)
PREFILL_TOKENS = 2048  # tokens of one prefill chunk for the activation allowance
MAX_NUM_SEQS = 256  # vLLM's default --max-num-seqs: the sampler's logits on the last stage


def _serving_eval(hw: Hardware, model: ModelShape, p: dict, framework: Framework, names: Mapping
                  ) -> tuple[list[PlanCheck], dict]:
    checks: list[PlanCheck] = []
    num: dict = {}
    tp, pp, dp = p["tp"], p["pp"], p["dp"]
    unit = "GPUs" if hw.device == "gpu" else "workers"

    # world size
    src = "vLLM ParallelConfig: world_size = tensor_parallel_size x pipeline_parallel_size (x DP)"
    if min(tp, pp, dp) < 1:
        checks.append(PlanCheck("world size", FAIL, "TP, PP and DP must be at least 1",
                            field=names["tp"], source=src))
        return checks, num
    need = tp * pp * dp
    if need > hw.total:
        checks.append(PlanCheck("world size", FAIL, f"TP {tp} x PP {pp} x DP {dp} = {need} {unit} > "
                            f"{hw.total} in the job ({hw.nodes} x {hw.per_node})",
                            reason=f"TP {tp} x PP {pp} x DP {dp} = {need} {unit} > {hw.total}",
                            field=names["tp"] if tp > 1 else names["pp"], source=src))
    elif need < hw.total:
        checks.append(PlanCheck("world size", WARN, f"TP {tp} x PP {pp} x DP {dp} = {need} of "
                            f"{hw.total} {unit}: {hw.total - need} stay idle", source=src))
    else:
        checks.append(PlanCheck("world size", PASS, f"TP {tp} x PP {pp} x DP {dp} = {need} {unit} "
                            f"({hw.nodes} node{'s' * (hw.nodes != 1)} x {hw.per_node})", source=src))

    # heads
    src = ("vLLM ModelConfig.verify_with_parallel_config (\"Total number of attention heads must be "
           "divisible by tensor parallel size\"); QKVParallelLinear replicates KV heads when TP > KV heads")
    a, kv = model.num_attention_heads, model.num_kv_heads
    if a % tp:
        checks.append(PlanCheck("heads", FAIL, f"{a} attention heads not divisible by TP {tp} "
                            f"(TP that divide {a} within {hw.total} {unit}: {_divisors(a, hw.total)})",
                            reason=f"{a} attention heads not divisible by TP {tp}",
                            field=names["tp"], source=src))
    elif kv % tp and tp % kv:
        checks.append(PlanCheck("heads", FAIL, f"{kv} KV heads: TP {tp} neither divides them nor is a "
                            f"multiple of them", reason=f"{kv} KV heads incompatible with TP {tp}",
                            field=names["tp"], source=src))
    else:
        rep = f"; KV heads replicated x{tp // kv}" if tp > kv else ""
        checks.append(PlanCheck("heads", PASS, f"{a} attention / {kv} KV heads over TP {tp}: "
                            f"{a // tp} / {max(1, kv // tp)} per {unit[:-1]}{rep}", source=src))

    # layers
    src = "vllm/distributed/utils.py get_pp_indices (layers split evenly, remainder allowed)"
    L = model.num_layers
    if pp > L:
        checks.append(PlanCheck("layers", FAIL, f"PP {pp} > {L} layers", field=names["pp"],
                            reason=f"PP {pp} > {L} layers", source=src))
        split = [1] * L
    else:
        split = _pp_split(L, pp)
        checks.append(PlanCheck("layers", PASS, f"{L} layers over PP {pp}: "
                            f"{'/'.join(map(str, split)) if pp <= 8 else f'{min(split)}-{max(split)} each'}",
                            source=src))

    checks.append(_check_cross_node(tp, hw, p["allow_cross_node_tp"], names))
    checks.append(_check_dtype(p["dtype"], model, hw, names, "serving"))
    dtype = _resolve_dtype(p["dtype"], model, hw)
    num["dtype"] = dtype
    act_bytes = DTYPE_BYTES[dtype]

    # quantization
    qname, bits = p["quantization"], p["quant_bits"]
    qbits_eff = None
    if qname != "none":
        q = QUANTS[qname]
        if bits not in q.bits:
            checks.append(PlanCheck("quantization", FAIL, f"{qname} has no {bits}-bit kernels (bits: "
                                f"{', '.join(map(str, q.bits))})", field=names["quant_bits"],
                                reason=f"{qname} has no {bits}-bit kernels", source=q.source))
        elif hw.cc is not None and hw.cc < q.min_cc:
            cc = f"{hw.cc[0]}.{hw.cc[1]}"
            checks.append(PlanCheck("quantization", FAIL, f"{qname} kernels need CC >= "
                                f"{q.min_cc[0]}.{q.min_cc[1]}; {hw.model} is CC {cc} (on Volta use "
                                "gptq, bitsandbytes or gguf)", field=names["quantization"],
                                reason=f"{qname} needs CC >= {q.min_cc[0]}.{q.min_cc[1]} (GPU is {cc})",
                                source=q.source))
        else:
            rows = [model.num_attention_heads * model.head_dim // tp, model.moe_intermediate_size // tp]
            bad = [r for r in rows if q.group and r % q.group]
            if bad:
                checks.append(PlanCheck("quantization", FAIL, f"{qname}: input rows per TP rank ({bad[0]})"
                                    f" not a multiple of the group size {q.group} at TP {tp}",
                                    reason=f"{qname} groups of {q.group} do not split over TP {tp}",
                                    field=names["tp"],
                                    source="vllm gptq.py/awq.py create_weights: \"The input size is "
                                    "not aligned with the quantized weight shape\""))
            else:
                extra = ""
                if dtype == "bfloat16" and qname in ("gptq", "awq", "marlin"):
                    extra = f"; its kernels compute in float16: use {names['dtype']} float16"
                checks.append(PlanCheck("quantization", WARN if extra else PASS,
                                    f"{qname} {bits}-bit runs on "
                                    + (f"CC {hw.cc[0]}.{hw.cc[1]}" if hw.cc else "this device")
                                    + f"; needs a {qname}-quantized checkpoint of {model.name}{extra}",
                                    source=q.source))
            qbits_eff = bits + q.extra_bits(bits)

    # max model len
    src = "vLLM ModelConfig: max_model_len <= the config's max_position_embeddings (_get_and_verify_max_len)"
    mlen = p["max_model_len"]
    if mlen < 1:
        checks.append(PlanCheck("max-model-len", FAIL, f"{names['max_model_len']} must be at least 1",
                            field=names["max_model_len"],
                            source=src))
    elif mlen > model.max_position_embeddings:
        checks.append(PlanCheck("max-model-len", FAIL, f"{mlen} > the model's {model.max_position_embeddings}"
                            " positions", reason=f"max-model-len {mlen} > {model.max_position_embeddings}"
                            " positions", field=names["max_model_len"], source=src))
    util = p["gpu_memory_utilization"]
    if not 0 < util <= 1:
        checks.append(PlanCheck("gpu-memory-utilization", FAIL,
                            f"{names['gpu_memory_utilization']} {util} is not in (0, 1]",
                            field=names["gpu_memory_utilization"], source="vLLM CacheConfig"))
        util = 0.9

    # memory
    per_weight = (qbits_eff / 8) if qbits_eff else act_bytes
    layer_bytes = (model.linear_layer_params * per_weight
                   + (model.layer_params - model.linear_layer_params) * act_bytes)
    total_weights = (model.num_layers * layer_bytes
                     + (model.embedding_params + model.lm_head_params + model.hidden_size) * act_bytes)
    usable = hw.memory_gb * GB * util
    kv_bytes = act_bytes  # kv-cache-dtype auto = the model dtype
    stages = []
    for i, nl in enumerate(split):
        w = nl * layer_bytes / tp
        if i == 0:
            w += model.embedding_params * act_bytes / tp
        last = i == len(split) - 1
        if last:
            w += (model.lm_head_params + model.hidden_size) * act_bytes / tp
        kv_tok = model.kv_bytes_per_token(kv_bytes, layers=nl, tp=tp)
        act = PREFILL_TOKENS * (4 * model.hidden_size
                                + 3 * model.moe_intermediate_size * model.experts_per_token / tp) * act_bytes
        if last:
            act += MAX_NUM_SEQS * model.vocab_size * 4
        over = SERVING_OVERHEAD_GB * GB + act
        need_b = w + kv_tok * max(mlen, 1) + over
        room = usable - w - over
        stages.append({"stage": i, "layers": nl, "weights": w, "kv_per_token": kv_tok,
                       "kv_needed": kv_tok * max(mlen, 1), "overhead": over, "need": need_b,
                       "kv_tokens": max(0, int(room // kv_tok)) if kv_tok else 0})
    worst = max(stages, key=lambda st: st["need"])
    tight = min(stages, key=lambda s: s["kv_tokens"])
    margin = usable - worst["need"]
    num.update({
        "weights_total_gb": round(total_weights / GB, 2),
        "bytes_per_weight": round(per_weight, 4),
        "usable_per_device_gb": round(usable / GB, 2),
        "worst_stage": worst["stage"], "need_per_device_gb": round(worst["need"] / GB, 2),
        "margin_gb": round(margin / GB, 2),
        "kv_per_token_bytes": int(sum(s["kv_per_token"] for s in stages)),
        "kv_tokens_fit": tight["kv_tokens"],
        "sequences_fit": round(tight["kv_tokens"] / max(mlen, 1), 2),
        "stages": [{k: (round(v / GB, 3) if k in ("weights", "kv_needed", "overhead", "need") else v)
                    for k, v in s.items()} for s in stages],
    })
    wlabel = f"{qname} {bits}-bit" if qbits_eff else dtype
    src = ("weights: params x bytes (quantized: bits/8 + per-group scales); KV per token = 2 x layers x "
           "KV heads x head_dim x bytes; vLLM refuses to start unless one max-model-len sequence fits "
           "(vllm/v1/core/kv_cache_utils.py check_enough_kv_cache_memory)")
    unit1 = "GPU" if hw.device == "gpu" else "node"
    breakdown = (f"weights {_gb(worst['weights'])} + KV {_gb(worst['kv_needed'])} ({mlen} tokens) + "
                 f"overhead {_gb(worst['overhead'])} = {_gb(worst['need'])} GB per {unit1} vs "
                 f"{_gb(usable)} usable ({hw.memory_gb:g} GB x {util:.2f})")
    if margin >= 0:
        checks.append(PlanCheck("memory", PASS, f"{breakdown}: margin {_gb(margin)} GB; KV room for "
                            f"{tight['kv_tokens']} tokens = {num['sequences_fit']} sequences of {mlen}",
                            source=src))
    else:
        short = (f"{total_weights / GB:.0f} GB of {wlabel} weights need {_gb(worst['need'])} GB per "
                 f"{unit1} > {_gb(usable)} usable ({hw.short()} at {util:.2f})")
        checks.append(PlanCheck("memory", FAIL, f"{breakdown}: short by {_gb(-margin)} GB "
                            f"({total_weights / GB:.1f} GB of {wlabel} weights in all)",
                            reason=short, field=names["quantization"] if worst["weights"] > usable
                            else names["max_model_len"], source=src))

    checks.append(check_support(framework, hw, model))
    return checks, num


def _serving_params(hw: Hardware, model: ModelShape, *, tp, pp, dp, dtype, quantization, quant_bits,
                    max_model_len, gpu_memory_utilization, allow_cross_node_tp) -> dict:
    quantization = quantization or "none"
    if quantization not in QUANTIZATIONS:
        raise BadInput("--quantization", f"{quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
    if dtype not in DTYPES:
        raise BadInput("--dtype", f"{dtype!r} is not one of {', '.join(DTYPES)}")
    if quantization == "none":
        quant_bits = None
    elif quant_bits is None:
        quant_bits = 4 if 4 in QUANTS[quantization].bits else QUANTS[quantization].bits[0]
    return {"tp": int(tp if tp is not None else hw.per_node),
            "pp": int(pp if pp is not None else hw.nodes), "dp": int(dp or 1), "dtype": dtype,
            "quantization": quantization, "quant_bits": quant_bits,
            "max_model_len": int(max_model_len or model.max_position_embeddings),
            "gpu_memory_utilization": float(gpu_memory_utilization if gpu_memory_utilization is not None
                                            else 0.9),
            "allow_cross_node_tp": bool(allow_cross_node_tp)}


def check_serving(spec: JobSpec, cluster: Cluster, model: ModelShape, *, framework: Framework,
                  tp: int | None = None, pp: int | None = None, dp: int = 1, dtype: str = "auto",
                  quantization: str = "none", quant_bits: int | None = None,
                  max_model_len: int | None = None, gpu_memory_utilization: float | None = 0.9,
                  allow_cross_node_tp: bool = False, names: Mapping[str, str] | None = None,
                  render: Render | None = None) -> Plan:
    """Plan one model served across the job's nodes by ``framework`` (its kind's rules).

    Defaults follow vLLM's multi-node guidance: TP = GPUs per node, PP = nodes.
    """
    names = {**framework.names, **(names or {})}
    hw = hardware(spec, cluster)
    p = _serving_params(hw, model, tp=tp, pp=pp, dp=dp, dtype=dtype, quantization=quantization,
                        quant_bits=quant_bits, max_model_len=max_model_len,
                        gpu_memory_utilization=gpu_memory_utilization,
                        allow_cross_node_tp=allow_cross_node_tp)
    checks, num = _serving_eval(hw, model, p, framework, names)
    plan = Plan("serving", framework.name, model, hw, p, checks, num, _serving_assumptions(p),
                names=names)
    if not plan.ok:
        # No option makes a framework start where its support rule fails (SGLang below sm75):
        # the suggestion switches to the alternative its kind names (vLLM).
        alt = (framework.alternative if framework.alternative and
               any(c.name == "framework" for c in plan.failures) else framework)
        plan.suggested_framework = alt.name
        _suggest(plan, _serving_candidates(hw, model, p, alt),
                 lambda c: _serving_eval(hw, model, c, alt, names), render,
                 prefix="" if alt is framework else
                 f"use the {alt.name} kind ({framework.name} cannot run here), ")
    return plan


def _serving_assumptions(p: dict) -> list[str]:
    return [
        ("KV cache in the model dtype (--kv-cache-dtype auto); the check asks room for one full "
         f"sequence of max-model-len ({p['max_model_len']} tokens), vLLM's own start condition; "
         "more room = more concurrent sequences"),
        (f"overhead per GPU: {SERVING_OVERHEAD_GB:g} GB (CUDA context, NCCL, CUDA graphs) + activations "
         f"of a {PREFILL_TOKENS}-token prefill chunk + the sampler's logits for {MAX_NUM_SEQS} "
         "sequences on the last stage; vLLM measures the real peak when it starts"),
        ("embeddings and LM head stay unquantized; quantized layers add per-group scales "
         "(group 128); a GPU's memory_gb is read as 10^9 bytes"),
    ]


def _serving_candidates(hw: Hardware, model: ModelShape, p: dict, framework: Framework) -> Iterable[dict]:
    """Option sets to try, most like the user's first: quantization ladder outermost, then
    layouts (all GPUs used, TP inside a node), then a shorter max-model-len."""
    dtype = p["dtype"]
    if hw.cc is not None and hw.cc < (8, 0) and (dtype == "bfloat16" or (
            dtype == "auto" and model.torch_dtype == "bfloat16")):
        dtype = "float16"
    quants: list[tuple[str, int | None]] = []
    q, b = p["quantization"], p["quant_bits"]

    def runs(name: str) -> bool:
        return hw.cc is None or hw.cc >= QUANTS[name].min_cc

    if q != "none" and b in QUANTS[q].bits and runs(q):
        quants.append((q, b))
    elif q != "none":
        quants += [("gptq", b if b in QUANTS["gptq"].bits else 4)]
    if q == "none":
        quants.append(("none", None))
        if hw.device == "gpu":
            quants += [("gptq", 8), ("gptq", 4)]
    elif ("gptq", 4) not in quants and hw.device == "gpu":
        quants.append(("gptq", 4))
    layouts = _serving_layouts(hw, model, p)
    fixed = {"dtype": dtype}
    if not 0 < p["gpu_memory_utilization"] <= 1:
        fixed["gpu_memory_utilization"] = 0.9
    if not 1 <= p["max_model_len"] <= model.max_position_embeddings:
        fixed["max_model_len"] = model.max_position_embeddings
    for qn, qb in dict.fromkeys(quants):
        for tp, pp in layouts:
            base = {**p, **fixed, "tp": tp, "pp": pp, "quantization": qn, "quant_bits": qb}
            yield base
            yield {**base, "_shorten": True}  # the same with max-model-len cut to what fits


def _serving_layouts(hw: Hardware, model: ModelShape, p: dict) -> list[tuple[int, int]]:
    a, kv, L = model.num_attention_heads, model.num_kv_heads, model.num_layers
    dp = max(1, p["dp"])
    tps = [t for t in range(1, hw.per_node + 1)
           if hw.per_node % t == 0 and a % t == 0 and (kv % t == 0 or t % kv == 0)]
    if p["allow_cross_node_tp"] and p["tp"] > hw.per_node:
        tps.append(p["tp"])
    out = []
    for t in tps:
        for pp_ in range(1, min(L, hw.total // (t * dp)) + 1):
            # all devices used, or at most one stage per node: keeps the search small
            if t * pp_ * dp == hw.total or pp_ <= hw.nodes:
                out.append((t, pp_))
    user = (p["tp"], p["pp"])
    out.sort(key=lambda x: (x != user, x[0] * x[1] * dp != hw.total, -x[0], x[1]))
    return out


def serving_from_spec(spec: JobSpec, cluster: Cluster, *, framework: Framework, **overrides) -> Plan:
    """check_serving with the shared options of ``spec.options`` (keys of SERVING_OPTIONS)."""
    o = spec.options
    model = resolve(o.get("model"))
    kw = {"tp": o.get("tensor_parallel_size"), "pp": o.get("pipeline_parallel_size"),
          "dtype": o.get("dtype") or "auto", "quantization": o.get("quantization") or "none",
          "quant_bits": o.get("quantization_bits"), "max_model_len": o.get("max_model_len"),
          "gpu_memory_utilization": o.get("gpu_memory_utilization", 0.9),
          "allow_cross_node_tp": bool(o.get("allow_cross_node_tp", False))}
    kw.update(overrides)
    return check_serving(spec, cluster, model, framework=framework, **kw)
