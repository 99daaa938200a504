"""Training rules and memory: model parallelism (TP x PP x CP x DP, Megatron's distributed
optimizer) and ZeRO (DeepSpeed), chosen by the kind's :class:`Framework`.

:func:`check_training` with explicit values, :func:`training_from_spec` with the shared options
of ``spec.options``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from hpcjobs.cluster import Cluster
from hpcjobs.errors import BadInput
from hpcjobs.models import ModelShape, resolve
from hpcjobs.planner.checks import _check_cross_node, _check_dtype, _resolve_dtype
from hpcjobs.planner.core import FAIL, GB, PASS, WARN, PlanCheck, Hardware, Plan, _divisors, _gb, _pp_split, hardware
from hpcjobs.planner.frameworks import Framework, check_support
from hpcjobs.planner.options import DTYPES, NAMES, OFFLOAD, RECOMPUTE
from hpcjobs.planner.suggest import Render, _suggest, default_render
from hpcjobs.spec import JobSpec


TRAINING_OVERHEAD_GB = 1.5  # CUDA context, NCCL buffers, allocator fragmentation

# bytes per parameter of Megatron's model states (param + grad + fp32 main param + Adam m, v):
# docs.nvidia.com/megatron-core/developer-guide/latest/api-guide/dist_optimizer.html
# dtype -> (non-distributed, distributed (a + b/d))
MEGATRON_BYTES = {"float16": (20, (4, 16)), "bfloat16": (18, (6, 12)), "float32": (16, (8, 8))}
# ZeRO stages 0-2 (Rajbhandari et al. 2019, arXiv:1910.02054, section 3: mixed-precision Adam keeps
# 2 (fp16 param) + 2 (fp16 grad) + 12 (fp32 param, momentum, variance) bytes per parameter);
# (stage, offload) -> bytes per param a + b/DP. ZeRO-Offload moves the 12 (and the fp32 grads)
# to the CPU.
ZERO_BYTES = {(0, "none"): (16, 0), (1, "none"): (4, 12), (2, "none"): (2, 14),
              (1, "optimizer"): (4, 0), (2, "optimizer"): (2, 2)}
# ZeRO-3 per GPU = 4 x largest layer + X x params / DP with X by offload, exactly as DeepSpeed's
# estimator (deepspeed/runtime/zero/stage3.py estimate_zero3_model_states_mem_needs, no offload:
# 18, offload_optimizer: 2, offload_param too: 0).
ZERO3_BYTES = {"none": 18, "optimizer": 2, "all": 0}


def _activation_bytes(model: ModelShape, s: int, b: int, t: int, recompute: str, sp: bool,
                      fused_attention: bool = False) -> float:
    """Activation memory of one layer for one micro-batch (Korthikanti et al. 2022,
    arXiv:2205.05198, Table 2; fp16 activations, GPT-style layer). A fused attention kernel
    (FlashAttention, PyTorch SDPA memory-efficient) never stores the s x s scores: the 5as/h term
    goes, as with selective recomputation."""
    h, a = model.hidden_size, model.num_attention_heads
    sbh = s * b * h
    attn = 0 if fused_attention else 5 * a * s / (h * t)  # scores, softmax, dropout mask
    if recompute == "full":
        return 2 * sbh  # only each layer's input
    if recompute == "selective":
        return sbh * (34 / t if sp else 10 + 24 / t)
    return sbh * ((34 / t if sp else 10 + 24 / t) + attn)


def _training_eval(hw: Hardware, model: ModelShape, p: dict, framework: Framework, names: Mapping
                   ) -> tuple[list[PlanCheck], dict]:
    checks: list[PlanCheck] = []
    num: dict = {}
    tp, pp, cp = p["tp"], p["pp"], p["cp"]
    world = hw.total
    unit = "GPUs" if hw.device == "gpu" else "workers"

    src = ("Megatron-Core parallel_state.initialize_model_parallel: world = TP x PP x CP x DP; "
           "DeepSpeed: DP = world / model-parallel size")
    if min(tp, pp, cp) < 1:
        checks.append(PlanCheck("world size", FAIL, "TP, PP and CP must be at least 1", field=names["tp"],
                            source=src))
        return checks, num
    mp = tp * pp * cp
    if world % mp:
        checks.append(PlanCheck("world size", FAIL, f"{world} {unit} not divisible by TP {tp} x PP {pp} x "
                            f"CP {cp} = {mp}", reason=f"{world} {unit} not divisible by TP x PP x CP = {mp}",
                            field=names["tp"] if tp > 1 else names["pp"], source=src))
        dp = max(1, world // mp)
    else:
        dp = world // mp
        checks.append(PlanCheck("world size", PASS, f"{world} {unit} = TP {tp} x PP {pp} x CP {cp} x DP {dp}",
                            source=src))
    num["dp"] = dp

    src = ("megatron/core/transformer/transformer_config.py: num_attention_heads and num_query_groups "
           "must be multiples of tensor_model_parallel_size")
    a, kv = model.num_attention_heads, model.num_kv_heads
    if a % tp or kv % tp:
        what = (f"{a} attention heads" if a % tp else f"{kv} KV heads (query groups)")
        checks.append(PlanCheck("heads", FAIL, f"{what} not divisible by TP {tp} (TP that divide "
                            f"{a} and {kv} within {world} {unit}: {_divisors(math.gcd(a, kv), world)})",
                            reason=f"{what} not divisible by TP {tp}", field=names["tp"], source=src))
    else:
        checks.append(PlanCheck("heads", PASS, f"{a} attention / {kv} KV heads over TP {tp}", source=src))

    L = model.num_layers
    if framework.layers_divide_pp:
        src = "megatron/training/arguments.py: num_layers % pipeline_model_parallel_size == 0"
        if L % pp:
            checks.append(PlanCheck("layers", FAIL, f"{L} layers not divisible by PP {pp} (PP: "
                                f"{_divisors(L, world)})", reason=f"{L} layers not divisible by PP {pp}",
                                field=names["pp"], source=src))
        else:
            checks.append(PlanCheck("layers", PASS, f"{L} layers over PP {pp}: {L // pp} per stage",
                                source=src))
        split = [L // pp] * pp if L % pp == 0 else _pp_split(L, min(pp, L))
    else:
        src = "pipeline stages (DeepSpeed, PyTorch): at least one layer per stage"
        if pp > L:
            checks.append(PlanCheck("layers", FAIL, f"PP {pp} > {L} layers", reason=f"PP {pp} > {L} layers",
                                field=names["pp"], source=src))
            split = [1] * L
        else:
            split = _pp_split(L, pp)
            checks.append(PlanCheck("layers", PASS, f"{L} layers over PP {pp}", source=src))

    checks.append(_check_cross_node(tp, hw, p["allow_cross_node_tp"], names))
    checks.append(_check_dtype(p["dtype"], model, hw, names, "training"))
    dtype = _resolve_dtype(p["dtype"], model, hw)
    num["dtype"] = dtype

    s = p["seq_length"]
    if s > model.max_position_embeddings:
        checks.append(PlanCheck("seq-length", WARN, f"{s} > the model's {model.max_position_embeddings} "
                            "positions: set --max-position-embeddings accordingly (RoPE extrapolates "
                            "badly without scaling)", source="megatron arguments.py"))
    if cp > 1 and s % (2 * cp):
        checks.append(PlanCheck("context parallel", FAIL, f"seq-length {s} not divisible by 2 x CP = "
                            f"{2 * cp} (load-balanced CP splits the sequence in 2 x CP chunks)",
                            reason=f"seq-length {s} not divisible by 2 x CP", field=names["cp"],
                            source="Megatron-Core context parallel (get_batch_on_this_cp_rank)"))

    # memory
    b, rc, sp = p["micro_batch_size"], p["recompute"], p.get("sequence_parallel", False)
    # e.g. Megatron on CC < 8 runs --transformer-impl local (unfused attention); with Transformer
    # Engine and for DeepSpeed (PyTorch SDPA) the attention is fused.
    fused = framework.fused_attention(hw)
    num["fused_attention"] = fused
    act_layer = _activation_bytes(model, max(1, s // cp), b, tp, rc, sp, fused)
    full_layer = _activation_bytes(model, max(1, s // cp), b, tp, "none", sp, fused)
    logits = s // cp * b * model.vocab_size / tp * 6  # fp16 logits + fp32 copy for the loss
    stages = []
    for i, nl in enumerate(split):
        params = nl * model.layer_params
        if i == 0:
            params += model.embedding_params
        last = i == len(split) - 1
        if last:
            params += model.lm_head_params + model.hidden_size
        params_gpu = params / tp
        if not framework.zero:
            non, (c0, c1) = MEGATRON_BYTES[dtype]
            bpp = (c0 + c1 / dp) if p["distributed_optimizer"] else non
            states = params_gpu * bpp
            state_label = (f"{bpp:.2f} B/param"
                           + (" with distributed optimizer" if p["distributed_optimizer"] else "")
                           + f" x {params_gpu / 1e9:.2f}B params")
        else:
            z, off = p["zero_stage"], p["offload"]
            if z < 3 and off == "all":
                off = "optimizer"  # offload_param exists only in stage 3
            if z == 3:
                largest = 4 * model.largest_layer_params / tp
                per = ZERO3_BYTES[off]
                states = largest + per * params_gpu / dp
                state_label = (f"ZeRO-3: 4 B x {model.largest_layer_params / 1e6:.0f}M largest layer"
                               f" + {per} B x params / DP {dp}")
            else:
                c0, c1 = ZERO_BYTES[(max(z, 1) if off != "none" else z, off)]
                states = params_gpu * (c0 + c1 / dp)
                state_label = f"ZeRO-{z}, offload {off}: {c0} + {c1}/DP {dp} B/param"
        in_flight = (pp - i) if not framework.zero or pp > 1 else 1
        act = act_layer * nl * in_flight
        if rc == "full":
            act += full_layer  # the layer being recomputed
        if last:
            act += logits
        over = TRAINING_OVERHEAD_GB * GB
        stages.append({"stage": i, "layers": nl, "states": states, "activations": act,
                       "overhead": over, "need": states + act + over, "label": state_label})
    worst = max(stages, key=lambda x: x["need"])
    cap = hw.memory_gb * GB
    margin = cap - worst["need"]
    num.update({"params_total_b": round(model.params / 1e9, 3), "capacity_gb": hw.memory_gb,
                "worst_stage": worst["stage"], "need_per_device_gb": round(worst["need"] / GB, 2),
                "margin_gb": round(margin / GB, 2),
                "stages": [{k: (round(v / GB, 3) if k in ("states", "activations", "overhead", "need")
                                else v) for k, v in st.items()} for st in stages]})
    src = ("model states: Megatron dist_optimizer doc bytes/param table / ZeRO paper (arXiv:1910.02054) "
           "and deepspeed/runtime/zero/stage3.py estimate_zero3_model_states_mem_needs; activations: "
           "Korthikanti et al. 2022 (arXiv:2205.05198) Table 2, 1F1B keeps PP micro-batches in flight")
    breakdown = (f"states {_gb(worst['states'])} ({worst['label']}) + activations "
                 f"{_gb(worst['activations'])} (recompute {rc}, micro-batch {b}, seq {s}) + overhead "
                 f"{_gb(worst['overhead'])} = {_gb(worst['need'])} GB vs {hw.memory_gb:g} GB")
    if margin >= 0:
        checks.append(PlanCheck("memory", PASS, f"{breakdown}: margin {_gb(margin)} GB", source=src))
    else:
        checks.append(PlanCheck("memory", FAIL, f"{breakdown}: short by {_gb(-margin)} GB",
                            reason=(f"training {model.params / 1e9:.1f}B params needs "
                                    f"{_gb(worst['need'])} GB per GPU > {hw.memory_gb:g} GB"),
                            field=names["recompute"] if rc != "full" else names["tp"], source=src))
    checks.append(check_support(framework, hw, model))
    return checks, num


def _training_params(hw: Hardware, model: ModelShape, *, framework, tp, pp, cp, dtype, seq_length,
                     micro_batch_size, recompute, distributed_optimizer, zero_stage, offload,
                     allow_cross_node_tp, sequence_parallel) -> dict:
    if dtype not in DTYPES:
        raise BadInput("--dtype", f"{dtype!r} is not one of {', '.join(DTYPES)}")
    if recompute not in RECOMPUTE:
        raise BadInput("--recompute", f"{recompute!r} is not one of {', '.join(RECOMPUTE)}")
    if offload not in OFFLOAD:
        raise BadInput("--offload", f"{offload!r} is not one of {', '.join(OFFLOAD)}")
    if zero_stage not in (0, 1, 2, 3):
        raise BadInput("--zero-stage", f"{zero_stage!r} is not 0, 1, 2 or 3")
    if micro_batch_size is not None and micro_batch_size < 1:
        raise BadInput("--micro-batch-size", f"must be at least 1, got {micro_batch_size}")
    if seq_length is not None and seq_length < 1:
        raise BadInput("--seq-length", f"must be at least 1, got {seq_length}")
    p = {"tp": int(tp if tp is not None else (hw.per_node if framework.tp_per_node else 1)),
         "pp": int(pp or 1), "cp": int(cp or 1), "dtype": dtype,
         "seq_length": int(seq_length or min(model.max_position_embeddings, 4096)),
         "micro_batch_size": int(micro_batch_size or 1), "recompute": recompute,
         "allow_cross_node_tp": bool(allow_cross_node_tp), "sequence_parallel": bool(sequence_parallel)}
    if framework.zero:
        p.update(zero_stage=zero_stage, offload=offload)
    else:
        p.update(distributed_optimizer=bool(distributed_optimizer))
    return p


def check_training(spec: JobSpec, cluster: Cluster, model: ModelShape, *, framework: Framework,
                   tp: int | None = None, pp: int | None = None, cp: int = 1, dtype: str = "auto",
                   seq_length: int | None = None, micro_batch_size: int = 1, recompute: str = "none",
                   distributed_optimizer: bool = False, zero_stage: int = 3, offload: str = "none",
                   allow_cross_node_tp: bool = False, sequence_parallel: bool = False,
                   names: Mapping[str, str] | None = None, render: Render | None = None) -> Plan:
    """Plan training for ``framework`` (its kind's rules: Megatron's TP x PP x CP x DP with the
    distributed optimizer, or DeepSpeed's ZeRO).

    ``names`` maps plan parameters to the option names the user wrote (the framework's own by
    default, e.g. pretrain_gpt.py's) so refusals and suggestions speak the user's language.
    """
    names = {**framework.names, **(names or {})}
    if render is None and framework.render and names["dtype"] == framework.names["dtype"]:
        render = framework.render
    hw = hardware(spec, cluster)
    p = _training_params(hw, model, framework=framework, tp=tp, pp=pp, cp=cp, dtype=dtype,
                         seq_length=seq_length, micro_batch_size=micro_batch_size, recompute=recompute,
                         distributed_optimizer=distributed_optimizer, zero_stage=zero_stage,
                         offload=offload, allow_cross_node_tp=allow_cross_node_tp,
                         sequence_parallel=sequence_parallel)
    checks, num = _training_eval(hw, model, p, framework, names)
    assumptions = [
        (f"activations: {p['micro_batch_size']} sequence(s) of {p['seq_length']} tokens per "
         "micro-batch; 1F1B pipeline: stage i keeps PP - i micro-batches in flight; fp16/bf16 "
         "activations (formula for GPT-style layers; SwiGLU MLPs store about as much); attention "
         + ("fused (no s x s scores stored)" if num.get("fused_attention") else
            "unfused (--transformer-impl local stores the s x s scores)")),
        (f"overhead per GPU {TRAINING_OVERHEAD_GB:g} GB (CUDA context, NCCL, fragmentation); the LM "
         "head's logits (fp16 + fp32 for the loss) on the last stage"),
        "Adam with fp32 master weights and moments (mixed precision)",
    ]
    plan = Plan("training", framework.name, model, hw, p, checks, num, assumptions, names=names)
    if not plan.ok:
        _suggest(plan, _training_candidates(hw, model, p, framework),
                 lambda c: _training_eval(hw, model, c, framework, names), render)
    return plan


def _training_candidates(hw: Hardware, model: ModelShape, p: dict, framework: Framework) -> Iterable[dict]:
    dtype = p["dtype"]
    if hw.cc is not None and hw.cc < (8, 0) and dtype == "bfloat16":
        dtype = "float16"
    a, kv, L = model.num_attention_heads, model.num_kv_heads, model.num_layers
    cp = p["cp"] if p["cp"] >= 1 and hw.total % p["cp"] == 0 else 1
    tps = [t for t in range(1, hw.per_node + 1) if hw.per_node % t == 0 and a % t == 0 and kv % t == 0]
    layouts = []
    for t in tps:
        for pp_ in range(1, hw.total // (t * cp) + 1):
            if hw.total % (t * pp_ * cp) == 0 and pp_ <= L and (not framework.layers_divide_pp or L % pp_ == 0):
                layouts.append((t, pp_))
    user = (p["tp"], p["pp"])
    if framework.zero:  # ZeRO is data parallel: keep the user's layout or plain DP
        layouts = [x for x in layouts if x in (user, (1, 1))]
    layouts.sort(key=lambda x: (x != user, x[1], -x[0]))
    rc_order = RECOMPUTE[RECOMPUTE.index(p["recompute"]):]
    mbs = list(dict.fromkeys([p["micro_batch_size"], 1]))
    if not framework.zero:
        # the distributed optimizer only saves memory (megatron-core's dist_optimizer docs)
        opts = [{"distributed_optimizer": True}]
    else:
        stages = list(dict.fromkeys([p["zero_stage"], 3]))
        offs = list(OFFLOAD[OFFLOAD.index(p["offload"]):])
        opts = [{"zero_stage": z, "offload": o} for o in offs for z in stages]
    for opt in opts:
        for rc in rc_order:
            for tp, pp in layouts:
                for b in mbs:
                    yield {**p, **opt, "tp": tp, "pp": pp, "cp": cp, "dtype": dtype, "recompute": rc,
                           "micro_batch_size": b}


def training_from_spec(spec: JobSpec, cluster: Cluster, *, framework: Framework,
                       **overrides) -> Plan:
    """check_training with the shared options of ``spec.options`` (keys of TRAINING_OPTIONS)."""
    o = spec.options
    model = overrides.pop("model", None) or resolve(o.get("model"))
    kw = {"tp": o.get("tensor_parallel_size"), "pp": o.get("pipeline_parallel_size"),
          "cp": o.get("context_parallel_size") or 1, "dtype": o.get("dtype") or "auto",
          "seq_length": o.get("seq_length"), "micro_batch_size": o.get("micro_batch_size") or 1,
          "recompute": o.get("recompute") or "none",
          "allow_cross_node_tp": bool(o.get("allow_cross_node_tp", False)),
          # hpcjobs' shared option names, not the framework's own (e.g. pretrain_gpt.py's)
          "names": NAMES, "render": default_render}
    kw.update(overrides)
    return check_training(spec, cluster, model, framework=framework, **kw)
