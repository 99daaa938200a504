"""The receipt in words: a header, a table per GPU and per node, the findings with thresholds."""

from __future__ import annotations

import time

from hpcjobs.report.numbers import GIB
from hpcjobs.report.receipt import Receipt
from hpcjobs.slurm import format_duration


def _gib(b) -> str:
    if b is None:
        return "-"
    v = b / GIB
    return f"{v:.2f}" if v < 1 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _pct(x, scale: float = 100.0) -> str:
    return "-" if x is None else f"{x * scale:.0f}%"


def _kwh(x) -> str:
    if x is None:
        return "-"
    return f"{x:.4f}" if x < 0.1 else f"{x:.2f}"


def table(head: tuple[str, ...], rows: list[tuple[str, ...]], right: set[int] = frozenset()) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def fmt(cols):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cols, widths))).rstrip()

    return "\n".join([fmt(head), *(fmt(r) for r in rows)])


def render(r: Receipt, now: float | None = None) -> str:
    now = time.time() if now is None else now
    lines = []
    what = f"job {r.job_id}" + (f" ({r.kind})" if r.kind else "")
    state = r.state if r.state != "UNKNOWN" else "state unknown"
    on = f" on {r.nodes_list}" if r.nodes_list else ""
    ran = ""
    if r.wall_seconds is not None:
        ran = f", {'running for' if r.running else 'ran'} {format_duration(r.wall_seconds)}"
        if r.wall_source == "samples":
            ran += " (as sampled)"
    restarts = f", restarted {r.restarts}x" if r.restarts else ""
    lines.append(f"{what}: {state}{on}{ran}{restarts}")
    if r.running and r.last_t:
        lines.append(f"  still running: the samples so far (last one {now - r.last_t:.0f} s ago)")
    parts = []
    if r.gpu_hours is not None:
        parts.append(f"GPU-hours {r.gpu_hours:.3f} ({r.gpu_count} GPU{'s' * (r.gpu_count != 1)} x "
                     f"{format_duration(r.wall_seconds)})")
    if r.gpus:
        parts.append(f"energy {_kwh(r.energy_kwh)} kWh (NVML energy counters)" if r.energy_kwh
                     is not None else "energy: no counter (needs Volta or newer)")
        if r.util_mean is not None:
            parts.append(f"mean GPU utilisation {r.util_mean:.0f}%")
    if r.cpu_seconds is not None:
        parts.append(f"CPU {r.cpu_seconds:.1f} s")
    if parts:
        lines.append("  " + "; ".join(parts))
    if r.expects_gpus:
        lines.append("  NCCL transport: " + (", ".join(r.nccl) + f" (from {r.nccl_source})"
                                             if r.nccl else f"unknown: {r.nccl_source}"))
    if r.gpus:
        rows = []
        for g in r.gpus:
            mem = f"{_gib(g.mem_peak)} / {_gib(g.memory_total)}"
            if r.plan_need_bytes:
                mem += f" (plan {_gib(r.plan_need_bytes)})"
            thr = []
            for label, v in (("power", g.power_capped_share), ("thermal", g.thermal_share),
                             ("hw", g.hw_slowdown_share)):
                if v:
                    thr.append(f"{label} {_pct(v, 100)}")
            util = "-" if g.util_mean is None else f"{g.util_mean:.0f}%"
            p95 = "-" if g.util_p95 is None else f"{g.util_p95:.0f}%"
            rows.append((g.label, g.name or "-", f"{util} / {p95}", _pct(g.idle_share, 100), mem,
                         "-" if g.power_mean_w is None else f"{g.power_mean_w:.0f} W",
                         _kwh(g.energy_kwh), ", ".join(thr) or "-",
                         "-" if g.temp_max is None else f"{g.temp_max} C",
                         str(len(g.xids)) if g.xids else "-"))
        lines += ["", table(("GPU", "MODEL", "UTIL mean / p95", "IDLE", "MEM peak / card GiB",
                             "POWER", "kWh", "THROTTLED", "TEMP", "XID"), rows, {3, 5, 6})]
    if r.nodes:
        rows = []
        for n in r.nodes:
            of = f" (of {n.cpus})" if n.cpus else ""
            cpu = ("-" if n.cpu_mean is None else f"{n.cpu_mean:.2f} / {n.cpu_peak or 0:.2f}{of}")
            rows.append((n.node, cpu, "-" if n.cpu_seconds is None else f"{n.cpu_seconds:.1f}",
                         _gib(n.rss_peak), _gib(n.hwm_peak), str(n.procs_peak or 0),
                         f"{n.samples} x {n.interval:g} s" if n.interval else str(n.samples),
                         f"{n.procs}, {n.monitor_cpu_seconds or 0:.2f} CPU-s"
                         + ("" if n.stopped or r.running else ", no stop line")))
        lines += ["", table(("NODE", "CPU cores mean / peak", "CPU-s", "RSS peak GiB",
                             "largest process GiB", "PROCS", "SAMPLES", "MONITOR"), rows, {2, 3, 4, 5})]
    lines.append("")
    if r.findings:
        lines.append("findings:")
        for f in r.findings:
            lines.append(f"  - {f.text}  [{f.threshold}]")
    else:
        lines.append("findings: none (thresholds: docs/report.md)")
    lines.append(f"samples: {r.samples_dir} ({r.where})")
    return "\n".join(lines)
