"""The receipt: what a job used and how well, from its samples and what hpcjobs knows of it."""

from __future__ import annotations

from dataclasses import dataclass, field

from hpcjobs.report.numbers import GpuFigures, NodeFigures, gpu_figures, node_figures, sampled_seconds
from hpcjobs.report.samples import NodeSamples


@dataclass
class Receipt:
    job_id: str
    kind: str | None = None
    state: str = "UNKNOWN"
    running: bool = False  # samples so far: the job has not ended
    nodes_list: str = ""  # Slurm's host list
    restarts: int = 0
    wall_seconds: float | None = None  # Slurm's elapsed time, else what the samples span
    wall_source: str = ""  # slurm | samples
    gpu_count: int = 0  # GPUs the figures are about (else the allocation)
    gpu_hours: float | None = None
    energy_kwh: float | None = None  # all GPUs, from the counters
    util_mean: float | None = None  # mean over the GPUs of their mean utilisation
    cpu_seconds: float | None = None
    monitor_cpu_seconds: float | None = None  # what the monitors themselves used
    plan_need_bytes: float | None = None  # the plan's memory per GPU (hpcjobs plan)
    plan_source: str = ""
    nccl: list[str] = field(default_factory=list)  # transports seen in the job's log
    nccl_source: str = ""
    expects_gpus: bool = False  # the job asked for GPUs
    samples_dir: str = ""
    where: str = ""  # how the samples were found
    first_t: float | None = None
    last_t: float | None = None
    nodes: list[NodeFigures] = field(default_factory=list)
    gpus: list[GpuFigures] = field(default_factory=list)
    findings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("nodes", "gpus", "findings")}
        d["nodes"] = [n.to_dict() for n in self.nodes]
        d["gpus"] = [g.to_dict() for g in self.gpus]
        d["findings"] = [f.to_dict() for f in self.findings]
        return d


def build(job_id: str, node_samples: list[NodeSamples], *, status=None, kind: str | None = None,
          allocated_gpus: int | None = None, plan: dict | None = None,
          nccl: tuple[list[str], str] | None = None, samples_dir: str = "",
          where: str = "") -> Receipt:
    """The receipt of one job from its nodes' samples; ``status`` is Slurm's (or the record's)
    :class:`hpcjobs.slurm.JobStatus`, ``plan`` the plan recorded at submission."""
    from hpcjobs.report.findings import findings

    r = Receipt(job_id, kind=kind, samples_dir=samples_dir, where=where)
    if status is not None:
        r.state = status.state
        r.running = not status.done and status.state not in ("UNKNOWN",)
        r.nodes_list = status.nodes
        r.restarts = status.restarts
    else:
        r.running = any(ns.segments and ns.segments[-1].stop is None for ns in node_samples)
    r.nodes = [node_figures(ns) for ns in node_samples]
    r.gpus = [g for ns in node_samples for g in gpu_figures(ns)]
    firsts = [n.first_t for n in r.nodes if n.first_t]
    lasts = [n.last_t for n in r.nodes if n.last_t]
    r.first_t = min(firsts) if firsts else None
    r.last_t = max(lasts) if lasts else None
    if status is not None and status.seconds is not None:
        r.wall_seconds, r.wall_source = float(status.seconds), "slurm"
    else:
        span = sampled_seconds(node_samples)
        if span is not None:
            r.wall_seconds, r.wall_source = span, "samples"
    r.expects_gpus = bool(allocated_gpus) or bool(r.gpus)
    r.gpu_count = len(r.gpus) or (allocated_gpus or 0)
    if r.wall_seconds is not None and r.gpu_count:
        r.gpu_hours = r.gpu_count * r.wall_seconds / 3600
    energies = [g.energy_kwh for g in r.gpus if g.energy_kwh is not None]
    r.energy_kwh = sum(energies) if energies else None
    utils = [g.util_mean for g in r.gpus if g.util_mean is not None]
    r.util_mean = round(sum(utils) / len(utils), 1) if utils else None
    cpu = [n.cpu_seconds for n in r.nodes if n.cpu_seconds is not None]
    r.cpu_seconds = round(sum(cpu), 2) if cpu else None
    own = [n.monitor_cpu_seconds for n in r.nodes if n.monitor_cpu_seconds is not None]
    r.monitor_cpu_seconds = round(sum(own), 3) if own else None
    if plan:
        need = (plan.get("numbers") or {}).get("need_per_device_gb")
        if need:
            r.plan_need_bytes = float(need) * 1e9  # the planner's GB are 10^9 bytes
            r.plan_source = f"{plan.get('framework', '')} {plan.get('mode', '')} plan".strip()
    if nccl:
        r.nccl, r.nccl_source = nccl
    r.findings = findings(r)
    return r
