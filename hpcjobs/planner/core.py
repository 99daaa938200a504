"""The plan's data: checks, the hardware a job gets, the plan itself (verdict and text report).

Also the units and the small helpers the serving and training rules share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from hpcjobs.cluster import Cluster
from hpcjobs.models import ModelShape
from hpcjobs.outcome import FAIL, PASS, WARN  # noqa: F401 (PASS: re-exported by the package)
from hpcjobs.planner.options import NAMES, OPTION_KEYS
from hpcjobs.spec import JobSpec, validate

GB = 1e9  # decimal GB throughout; a profile's memory_gb is read as 10^9 bytes (conservative)

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


@dataclass
class PlanCheck:
    name: str
    status: str  # pass | warn | fail (hpcjobs.outcome)
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
    checks: list[PlanCheck]
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
    def failures(self) -> list[PlanCheck]:
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
                         if "zero_stage" in p else
                         f"distributed optimizer {'on' if p['distributed_optimizer'] else 'off'}"))
        lines = [f"{self.framework} {self.mode} plan: {self.model.summary()}",
                 f"on {self.hardware.describe()}",
                 f"layout: {layout}"]
        width = max(len(c.name) for c in self.checks)
        for c in self.checks:
            lines.append(f"  {c.status.upper()}  {c.name.ljust(width)}  {c.detail}")
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


def _pp_split(layers: int, pp: int) -> list[int]:
    """vLLM's split (vllm/distributed/utils.py get_pp_indices): even, remainder to the stages
    before the last (the last stage also holds the LM head)."""
    parts = [layers // pp] * pp
    for i in range(2, layers % pp + 2):
        parts[-i] += 1
    return parts


def _gb(x: float) -> str:
    return f"{x / GB:.1f}"


def _divisors(n: int, limit: int) -> str:
    ds = [d for d in range(1, max(1, limit) + 1) if n % d == 0]
    return ", ".join(map(str, ds)) or "1"
