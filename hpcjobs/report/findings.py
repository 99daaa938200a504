"""Plain-words findings on a receipt, each with the threshold that raised it.

The thresholds are the constants below (docs/report.md lists them). A finding is a hint to
look, not a verdict: "GPU 0 on pve2 idle 71% of the time: input pipeline?".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from hpcjobs.report.numbers import GIB, IDLE_UTIL
from hpcjobs.slurm import format_duration

if TYPE_CHECKING:
    from hpcjobs.report.receipt import Receipt

IDLE_SHARE = 0.30  # a GPU idle (utilisation under IDLE_UTIL %) at least this share of the time
LOW_MEMORY = 0.50  # peak GPU memory under this share of the card
HIGH_MEMORY = 0.95  # peak GPU memory above this share of the card
PLAN_OVER = 1.15  # peak GPU memory above the plan's estimate by more than 15%
PLAN_UNDER = 0.50  # peak GPU memory under half of the plan's estimate
POWER_CAPPED = 0.10  # share of the time at the power limit
THERMAL = 0.01  # share of the time slowed for heat
HW_SLOWDOWN = 0.01  # share of the time in hardware slowdown or power brake
UNEVEN_POINTS = 20.0  # spread of the GPUs' mean utilisation, in percentage points
CPU_BUSY = 0.90  # CPU use at least this share of the job's CPUs on a node (with an idle GPU)
CPU_LOW = 0.25  # CPU use under this share of the job's CPUs on a node ...
CPU_LOW_MIN = 4  # ... when it has at least this many
NODE_MEMORY = 0.90  # RSS of the job's processes above this share of the node's (or job's) memory
MIN_SAMPLES = 3  # shares of time need at least this many samples of a GPU or node

# What an XID says, shortened from NVIDIA's XID catalogue (docs.nvidia.com/deploy/xid-errors).
XIDS = {
    13: "graphics engine exception (often the program: an out-of-range access)",
    31: "GPU memory page fault (often the program: an illegal address)",
    43: "GPU stopped processing (the program's kernel faulted)",
    45: "preemptive cleanup (a process was killed while on the GPU)",
    48: "double-bit ECC error: the GPU needs a reset",
    61: "internal micro-controller breakpoint: report it to the admins",
    62: "internal micro-controller halt: report it to the admins",
    63: "ECC page retirement or row remapping",
    64: "ECC page retirement or row remapping failure: the GPU needs attention",
    74: "NVLink error",
    79: "GPU has fallen off the bus: the node needs attention",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error: the GPU needs a reset",
    119: "GSP RPC timeout",
    120: "GSP error",
}


@dataclass
class Finding:
    what: str  # a stable key: idle, memory_low, power_capped, ...
    level: str  # warn | info
    text: str
    threshold: str

    def to_dict(self) -> dict:
        return asdict(self)


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def _gib(b: float) -> str:
    v = b / GIB
    return f"{v:.1f} GiB" if v < 10 else f"{v:.0f} GiB"


def findings(r: Receipt) -> list[Finding]:
    out: list[Finding] = []
    add = out.append
    nodes = {n.node: n for n in r.nodes}
    for g in r.gpus:
        enough = g.samples >= MIN_SAMPLES
        if enough and g.idle_share is not None and g.idle_share >= IDLE_SHARE:
            add(Finding("idle", "warn", f"{g.label} idle {_pct(g.idle_share)} of the time: input "
                        "pipeline?", f"idle: utilisation under {IDLE_UTIL:g}%; said from "
                        f"{_pct(IDLE_SHARE)} of the time"))
            n = nodes.get(g.node)
            if n and n.cpus and n.cpu_mean is not None and n.cpu_mean >= CPU_BUSY * n.cpus:
                add(Finding("cpu_bound", "warn", f"{g.node}: the job's processes used "
                            f"{n.cpu_mean:.1f} of its {n.cpus} CPUs while {g.label} was idle: "
                            "CPU-bound input (more --cpus-per-task, more data-loader workers)?",
                            f"CPU use from {_pct(CPU_BUSY)} of the job's CPUs on the node"))
        if g.mem_peak is not None and g.memory_total:
            share = g.mem_peak / g.memory_total
            if share < LOW_MEMORY:
                add(Finding("memory_low", "info", f"peak memory {_gib(g.mem_peak)} of "
                            f"{_gib(g.memory_total)} on {g.label}: a smaller allocation or a "
                            "larger batch would fit", f"under {_pct(LOW_MEMORY)} of the card"))
            elif share > HIGH_MEMORY:
                add(Finding("memory_high", "warn", f"peak memory {_gib(g.mem_peak)} of "
                            f"{_gib(g.memory_total)} on {g.label} ({_pct(share)}): close to out of "
                            "memory", f"over {_pct(HIGH_MEMORY)} of the card"))
        if g.mem_peak is not None and r.plan_need_bytes:
            ratio = g.mem_peak / r.plan_need_bytes
            if ratio > PLAN_OVER:
                add(Finding("plan_over", "warn", f"peak memory {_gib(g.mem_peak)} on {g.label} is "
                            f"{ratio:.2f}x the plan's {_gib(r.plan_need_bytes)}: the plan "
                            "underestimates this job", f"over {PLAN_OVER:.2f}x the plan"))
            elif ratio < PLAN_UNDER:
                add(Finding("plan_under", "info", f"peak memory {_gib(g.mem_peak)} on {g.label} is "
                            f"{ratio:.2f}x the plan's {_gib(r.plan_need_bytes)}",
                            f"under {PLAN_UNDER:.2f}x the plan"))
        if enough and g.power_capped_share is not None and g.power_capped_share >= POWER_CAPPED:
            limit = f", limit {g.power_limit_w:.0f} W" if g.power_limit_w else ""
            add(Finding("power_capped", "warn", f"power capped on {g.node}: {g.label} at its power "
                        f"limit {_pct(g.power_capped_share)} of the time{limit}",
                        f"from {_pct(POWER_CAPPED)} of the time"))
        if enough and g.thermal_share is not None and g.thermal_share >= THERMAL:
            hot = f" (up to {g.temp_max} C)" if g.temp_max is not None else ""
            add(Finding("thermal", "warn", f"thermal throttling on {g.node}: {g.label} slowed for "
                        f"heat {_pct(g.thermal_share)} of the time{hot}: check its cooling",
                        f"from {_pct(THERMAL)} of the time"))
        if enough and g.hw_slowdown_share is not None and g.hw_slowdown_share >= HW_SLOWDOWN:
            add(Finding("hw_slowdown", "warn", f"hardware slowdown on {g.label}: "
                        f"{_pct(g.hw_slowdown_share)} of the time (power brake or HW slowdown: "
                        "power supply or cooling)", f"from {_pct(HW_SLOWDOWN)} of the time"))
        for ev in g.xids:
            at = f" at +{format_duration(ev['t'] - r.first_t)}" if r.first_t else ""
            add(Finding("xid", "warn", f"XID {ev.get('xid')} on {g.label}{at}: "
                        f"{XIDS.get(ev.get('xid'), 'see NVIDIA XID catalogue')}", "any XID"))
    means = [(g.util_mean, g) for g in r.gpus if g.util_mean is not None and g.samples >= MIN_SAMPLES]
    if len(means) > 1:
        lo, hi = min(means, key=lambda x: x[0]), max(means, key=lambda x: x[0])
        if hi[0] - lo[0] >= UNEVEN_POINTS:
            add(Finding("uneven", "warn", f"GPU utilisation uneven: {hi[1].label} {hi[0]:.0f}%, "
                        f"{lo[1].label} {lo[0]:.0f}% on average: a straggler or uneven data?",
                        f"a spread from {UNEVEN_POINTS:g} points"))
    for n in r.nodes:
        if n.samples >= MIN_SAMPLES and n.cpus and n.cpus >= CPU_LOW_MIN and \
                n.cpu_mean is not None and n.cpu_mean < CPU_LOW * n.cpus and not r.gpus:
            add(Finding("cpu_low", "info", f"{n.node}: the job used {n.cpu_mean:.1f} of its "
                        f"{n.cpus} CPUs on average: fewer would do", f"under {_pct(CPU_LOW)} of "
                        f"the job's CPUs (from {CPU_LOW_MIN} CPUs)"))
        cap = n.mem_limit or n.mem_total
        if n.rss_peak and cap and n.rss_peak > NODE_MEMORY * cap:
            whose = "the job's memory" if n.mem_limit else "the node's memory"
            add(Finding("node_memory", "warn", f"{n.node}: the job's processes reached "
                        f"{_gib(n.rss_peak)} of {whose} {_gib(cap)} ({_pct(n.rss_peak / cap)})",
                        f"over {_pct(NODE_MEMORY)}"))
        if r.expects_gpus and not any(g.node == n.node for g in r.gpus):
            add(Finding("no_gpu_figures", "info", f"no GPU figures on {n.node}: {n.gpu_note}",
                        "a job with GPUs whose monitor could not read them"))
    last = max((n.last_t for n in r.nodes if n.last_t), default=None)
    for n in r.nodes:
        if not n.samples:
            add(Finding("monitor_gap", "info", f"the monitor on {n.node} wrote no sample (it "
                        "stopped as it started): no figures for that node", "no sample"))
            continue
        if last is None:
            continue
        gap = last - (n.last_t or last)
        if gap > 3 * (n.interval or 5.0):
            add(Finding("monitor_gap", "info", f"the monitor on {n.node} stopped "
                        f"{format_duration(gap)} before the others: its figures end at "
                        f"+{format_duration((n.last_t or 0) - r.first_t)}", "more than 3 intervals"))
        elif not r.running and not n.stopped:
            add(Finding("monitor_killed", "info", f"the monitor on {n.node} did not stop cleanly "
                        "(killed?): figures up to its last sample", "no stop line"))
    return out
