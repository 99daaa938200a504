"""The receipt's numbers, from the monitors' samples: per GPU, per node and for the job.

How each figure is made (docs/report.md):

- a sample's values describe the interval since the previous sample of the same monitor run,
  so means are weighted by that interval and a run's first sample (the baseline) weighs
  nothing; nothing is computed across the gap between two runs of a requeued job;
- p95 is the nearest-rank 95th percentile of the per-sample values;
- energy is the sum of the increments of NVML's total-energy counter (mJ since the driver
  loaded), never power x time; a counter that went back (a driver reload) adds nothing;
- peaks: GPU memory is the highest sampled value; a node's RSS the highest sampled sum over
  the job's processes; "largest process" the highest VmHWM, which is exact between samples;
- throttling: the driver's time counters where present (exact), else the share of samples
  whose clock event reasons had the bit set.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field

from hpcjobs.report.samples import NodeSamples, Segment

GIB = 2**30
MJ_PER_KWH = 3.6e9
IDLE_UTIL = 5.0  # % under which a GPU counts as idle in a sample

POWER_CAP = 0x4
HW_SLOWDOWN = 0x8 | 0x80  # hw slowdown, hw power brake
THERMAL = 0x20 | 0x40  # sw and hw thermal slowdown


@dataclass
class GpuFigures:
    node: str
    index: int  # NVML index as the job's monitor saw it
    name: str = ""
    uuid: str = ""
    memory_total: int | None = None  # bytes
    samples: int = 0
    util_mean: float | None = None  # %
    util_p95: float | None = None
    idle_share: float | None = None  # of the sampled time, utilisation under IDLE_UTIL
    mem_peak: int | None = None  # bytes
    mem_mean: int | None = None
    power_mean_w: float | None = None
    power_peak_w: float | None = None
    power_limit_w: float | None = None
    energy_kwh: float | None = None  # None: no energy counter (before Volta, or not readable)
    power_capped_share: float | None = None
    thermal_share: float | None = None
    hw_slowdown_share: float | None = None
    throttle_source: str = ""  # "counters" | "reasons" | ""
    temp_max: int | None = None
    sm_clock_mean: float | None = None
    xids: list[dict] = field(default_factory=list)
    series: dict = field(default_factory=dict, repr=False)  # t, u, m for the plot

    @property
    def label(self) -> str:
        return f"GPU {self.index} on {self.node}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("series")
        return d


@dataclass
class NodeFigures:
    node: str
    samples: int = 0
    runs: int = 0  # monitor runs (a requeued job has several)
    interval: float | None = None
    procs: str = ""  # how the job's processes were found: cgroup | tree | environ
    cpus: int | None = None  # CPUs the job has on this node (SLURM_CPUS_ON_NODE)
    cpu_mean: float | None = None  # cores
    cpu_peak: float | None = None
    cpu_seconds: float | None = None
    rss_peak: int | None = None  # bytes: the job's processes summed
    hwm_peak: int | None = None  # bytes: the largest single process's peak (VmHWM)
    procs_peak: int | None = None
    mem_total: int | None = None  # the node's MemTotal
    mem_limit: int | None = None  # the job's memory on the node (SLURM_MEM_PER_NODE)
    gpu_note: str = ""  # how the GPUs were matched, or why there are none
    stopped: bool = False  # the last monitor run ended with its stop line
    first_t: float | None = None
    last_t: float | None = None
    torn_lines: int = 0
    errors: int = 0
    monitor_cpu_seconds: float | None = None
    series: dict = field(default_factory=dict, repr=False)  # t, c, rss

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("series")
        return d


def _weights(seg: Segment) -> list[float]:
    ts = [s["t"] for s in seg.samples]
    if len(ts) == 1:
        return [1.0]
    return [0.0] + [max(0.0, b - a) for a, b in itertools.pairwise(ts)]


def _wmean(pairs) -> float | None:
    pairs = [(w, v) for w, v in pairs if v is not None]
    total = sum(w for w, _ in pairs)
    if total > 0:
        return sum(w * v for w, v in pairs) / total
    vals = [v for _, v in pairs]
    return sum(vals) / len(vals) if vals else None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    k = max(1, math.ceil(q / 100 * len(vals)))
    return vals[k - 1]


def _counter_sum(values: list) -> int | None:
    """Sum of the non-negative increments of a counter sampled in order (None: no value)."""
    total, prev, seen = 0, None, False
    for v in values:
        if v is None:
            continue
        seen = True
        if prev is not None and v >= prev:
            total += v - prev
        prev = v
    return total if seen else None


def gpu_figures(ns: NodeSamples) -> list[GpuFigures]:
    """One entry per GPU of the node (by UUID across monitor runs, else by position)."""
    out: dict[str, GpuFigures] = {}
    acc: dict[str, dict] = {}
    for seg in ns.segments:
        weights = _weights(seg)
        for pos, info in enumerate(seg.gpus):
            key = info.get("uuid") or f"#{pos}"
            f = out.get(key)
            if f is None:
                f = out[key] = GpuFigures(ns.node, int(info.get("i", pos)), info.get("name", ""),
                                          info.get("uuid", ""), info.get("mem"))
                if info.get("power_limit"):
                    f.power_limit_w = info["power_limit"] / 1000
                acc[key] = {"u": [], "m": [], "p": [], "sm": [], "idle": [], "t": [],
                            "energy": 0, "has_energy": False, "thr": {"pc": [0, 0], "th": [0, 0],
                                                                      "hw": [0, 0]},
                            "thr_mask": {"pc": [], "th": [], "hw": []}, "temp": [],
                            "series": {"t": [], "u": [], "m": []}}
            a = acc[key]
            rows = []
            for w, s in zip(weights, seg.samples):
                g = (s.get("g") or [])
                g = g[pos] if pos < len(g) and isinstance(g[pos], dict) else {}
                rows.append((w, s["t"], g))
            for w, t, g in rows:
                u = g.get("u")
                a["u"].append((w, u))
                a["m"].append((w, g.get("m")))
                a["p"].append((w, g.get("p")))
                a["sm"].append((w, g.get("sm")))
                if u is not None:
                    a["idle"].append((w, 1.0 if u < IDLE_UTIL else 0.0))
                    if w > 0 or len(rows) == 1:
                        a["t"].append(u)
                if g.get("tc") is not None:
                    a["temp"].append(g["tc"])
                if "r" in g:
                    r = g["r"]
                    a["thr_mask"]["pc"].append((w, 1.0 if r & POWER_CAP else 0.0))
                    a["thr_mask"]["th"].append((w, 1.0 if r & THERMAL else 0.0))
                    a["thr_mask"]["hw"].append((w, 1.0 if r & HW_SLOWDOWN else 0.0))
                a["series"]["t"].append(t)
                a["series"]["u"].append(u)
                a["series"]["m"].append(g.get("m"))
            e = _counter_sum([g.get("e") for _, _, g in rows])
            if e is not None:
                a["energy"] += e
                a["has_energy"] = True
            # Time counters (ns) over each interval: exact shares of throttled time.
            for (_, t0, g0), (_, t1, g1) in itertools.pairwise(rows):
                dt_ns = (t1 - t0) * 1e9
                if dt_ns <= 0:
                    continue
                for name, keys in (("pc", ("pc",)), ("th", ("st", "ht")), ("hw", ("pb",))):
                    if all(k in g0 and k in g1 for k in keys):
                        d = sum(max(0, g1[k] - g0[k]) for k in keys)
                        a["thr"][name][0] += min(d, dt_ns)
                        a["thr"][name][1] += dt_ns
            f.xids += [ev for ev in seg.events
                       if ev.get("gpu") == pos or (ev.get("gpu") is None and pos == 0)]
            f.samples += len(seg.samples)
    for key, f in out.items():
        a = acc[key]
        f.util_mean = _round(_wmean(a["u"]), 1)
        f.util_p95 = _round(percentile(a["t"], 95), 1)
        f.idle_share = _round(_wmean(a["idle"]), 3)
        mems = [m for _, m in a["m"] if m is not None]
        f.mem_peak = max(mems) if mems else None
        mm = _wmean(a["m"])
        f.mem_mean = int(mm) if mm is not None else None
        pm = _wmean(a["p"])
        f.power_mean_w = _round(pm / 1000, 1) if pm is not None else None
        powers = [p for _, p in a["p"] if p is not None]
        f.power_peak_w = _round(max(powers) / 1000, 1) if powers else None
        f.energy_kwh = a["energy"] / MJ_PER_KWH if a["has_energy"] else None
        sm = _wmean(a["sm"])
        f.sm_clock_mean = _round(sm, 0)
        f.temp_max = max(a["temp"]) if a["temp"] else None
        shares = {}
        for name in ("pc", "th", "hw"):
            done, span = a["thr"][name]
            if span > 0:
                shares[name] = done / span
                f.throttle_source = "counters"
            else:
                v = _wmean(a["thr_mask"][name])
                if v is not None:
                    shares[name] = v
                    f.throttle_source = f.throttle_source or "reasons"
        f.power_capped_share = _round(shares.get("pc"), 3)
        f.thermal_share = _round(shares.get("th"), 3)
        f.hw_slowdown_share = _round(shares.get("hw"), 3)
        f.series = a["series"]
    return list(out.values())


def node_figures(ns: NodeSamples) -> NodeFigures:
    f = NodeFigures(ns.node, torn_lines=ns.torn)
    if not ns.segments:
        return f
    first, last = ns.segments[0], ns.segments[-1]
    f.runs = len(ns.segments)
    f.interval = last.interval
    f.procs = last.start.get("procs", "")
    f.cpus = last.start.get("cpus")
    f.mem_total = last.start.get("mem_total")
    f.mem_limit = last.start.get("mem_limit")
    f.gpu_note = last.start.get("gpu_map", "")
    f.stopped = last.stop is not None
    f.first_t = first.first_t
    f.last_t = last.last_t
    cpu, rss, hwm, nprocs, cs, own = [], [], [], [], 0.0, 0.0
    series = {"t": [], "c": [], "rss": []}
    for seg in ns.segments:
        f.errors += len(seg.errors)
        for w, s in zip(_weights(seg), seg.samples):
            if w > 0:
                cpu.append((w, s.get("c")))
            rss.append(s.get("rss"))
            hwm.append(s.get("hwm"))
            nprocs.append(s.get("n"))
            series["t"].append(s["t"])
            series["c"].append(s.get("c"))
            series["rss"].append(s.get("rss"))
        if seg.samples:
            cs += float(seg.samples[-1].get("cs") or 0.0)
        tail = seg.stop if seg.stop and "own" in seg.stop else (seg.samples[-1] if seg.samples else {})
        own += float(tail.get("own") or 0.0)
        f.samples += len(seg.samples)
    f.cpu_mean = _round(_wmean(cpu), 2)
    peaks = [c for _, c in cpu if c is not None]
    f.cpu_peak = _round(max(peaks), 2) if peaks else None
    f.cpu_seconds = round(cs, 2)
    f.rss_peak = max((v for v in rss if v is not None), default=None)
    f.hwm_peak = max((v for v in hwm if v is not None), default=None)
    f.procs_peak = max((v for v in nprocs if v is not None), default=None)
    f.monitor_cpu_seconds = round(own, 3)
    f.series = series
    return f


def _round(v, nd):
    return None if v is None else round(v, nd)


def sampled_seconds(nodes: list[NodeSamples]) -> float | None:
    """The time the monitors covered: the longest node's sum of runs."""
    spans = [sum(seg.last_t - seg.first_t for seg in ns.segments) for ns in nodes if ns.segments]
    return max(spans) if spans else None
