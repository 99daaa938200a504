"""``hpcjobs report``: every job's receipt, from the samples its monitors wrote.

What the job used (wall time, GPU-hours, energy from NVML's counters, CPU, memory) and how
well (utilisation mean and p95, idle time, peaks against the card and the plan, throttling,
XIDs), in words with the thresholds behind them, as JSON and as a picture. The monitor that
writes the samples runs inside the job (hpcjobs/runners/monitor.py); this side only reads
files, plus one Slurm lookup for the job's state. docs/report.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from hpcjobs.report.sources import MONITOR_DIR, locate, nccl_transport
from hpcjobs.report.receipt import Receipt, build
from hpcjobs.report.samples import read_dir, read_tail

__all__ = ["Live", "Receipt", "live", "live_for_run", "receipt", "receipt_of_dir"]


def receipt(job_id: str, samples_dir: str | None = None) -> Receipt:
    """The receipt of a job (ended, or running: the samples so far).

    Raises BadInput (exit 2) for a value that is not a job id and for a job without samples,
    saying where hpcjobs looked.
    """
    src = locate(job_id, samples_dir)
    return build(src.job_id, read_dir(src.directory), status=src.status, kind=src.kind,
                 allocated_gpus=src.allocated_gpus(), plan=src.plan(),
                 nccl=src.recorded_transport() or nccl_transport(src.output),
                 samples_dir=str(src.directory),
                 where=src.where)


def receipt_of_dir(directory: str | Path, job_id: str = "") -> Receipt:
    """A receipt from a samples directory alone (no Slurm, no record)."""
    d = Path(directory)
    return build(job_id or d.name, read_dir(d), samples_dir=str(d), where="directory")


@dataclass
class Live:
    """What a running job's monitors said last: for ``status`` and ``top`` (file tails only)."""

    nodes: int
    gpus: int
    util_now: float | None  # %, mean over the job's GPUs of their last sample
    util_mean: float | None  # %, mean over the GPUs of their mean since the monitor started
    mem_used: int | None  # bytes, the fullest GPU
    mem_total: int | None  # its card's memory
    power_w: float | None  # all GPUs
    cpu: float | None  # cores, all nodes
    rss: int | None  # bytes, all nodes
    age: float  # seconds since the oldest node's last sample

    def stale(self, interval: float = 5.0) -> bool:
        return self.age > 3 * interval + 5


def live(directory: Path, now: float | None = None) -> Live | None:
    """The last sample of every node in ``directory``; None without samples."""
    now = time.time() if now is None else now
    try:
        files = sorted(p for p in Path(directory).iterdir() if p.suffix == ".jsonl")
    except OSError:
        return None
    last, gpus_of = [], []
    for p in files:
        lines = read_tail(p)
        s = next((x for x in reversed(lines) if x.get("k") == "s"), None)
        start = next((x for x in reversed(lines) if x.get("k") == "start"), None)
        if s is None:
            continue
        last.append(s)
        gpus_of.append((start or {}).get("gpus") or [])
    if not last:
        return None
    gs = [(g, info[i] if i < len(info) else {}) for s, info in zip(last, gpus_of)
          for i, g in enumerate(s.get("g") or []) if isinstance(g, dict)]
    now_u = [g["u"] for g, _ in gs if g.get("u") is not None]
    mean_u = [g.get("ua", g.get("u")) for g, _ in gs if g.get("ua", g.get("u")) is not None]
    fullest = max((pair for pair in gs if pair[0].get("m") is not None),
                  key=lambda pair: pair[0]["m"], default=None)
    powers = [g["p"] for g, _ in gs if g.get("p") is not None]
    return Live(
        nodes=len(last), gpus=len(gs),
        util_now=round(sum(now_u) / len(now_u), 1) if now_u else None,
        util_mean=round(sum(mean_u) / len(mean_u), 1) if mean_u else None,
        mem_used=fullest[0]["m"] if fullest else None,
        mem_total=fullest[1].get("mem") if fullest else None,
        power_w=round(sum(powers) / 1000, 1) if powers else None,
        cpu=round(sum(s.get("c") or 0.0 for s in last), 2),
        rss=sum(s.get("rss") or 0 for s in last),
        age=max(0.0, now - min(s["t"] for s in last)))


def live_for_run(run, job_id: str, now: float | None = None) -> Live | None:
    """:func:`live` for a recorded job (its run record's samples)."""
    if run is None:
        return None
    return live(Path(run.path) / MONITOR_DIR / job_id, now)
