"""Reading what the monitors wrote: one JSON-lines file per node (hpcjobs/runners/monitor.py).

Tolerant by design: a monitor killed mid-line leaves a torn last line, which is counted and
skipped; lines of a newer schema's unknown kinds are ignored. A requeued job has several
``start`` lines in one file: each begins a segment (a run), and nothing is computed across
the gap between two.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Segment:
    """One monitor's run on one node: its start line and what followed it."""

    start: dict
    samples: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # XID lines
    errors: list[dict] = field(default_factory=list)
    stop: dict | None = None  # None: the monitor did not stop cleanly (killed, still running)

    @property
    def interval(self) -> float:
        return float(self.start.get("interval") or 5.0)

    @property
    def first_t(self) -> float:
        return float(self.start.get("t") or (self.samples[0]["t"] if self.samples else 0.0))

    @property
    def last_t(self) -> float:
        ts = [self.first_t] + [s["t"] for s in self.samples]
        if self.stop:
            ts.append(self.stop.get("t", 0.0))
        return max(ts)

    @property
    def gpus(self) -> list[dict]:
        return list(self.start.get("gpus") or [])


@dataclass
class NodeSamples:
    node: str
    path: Path
    segments: list[Segment] = field(default_factory=list)
    torn: int = 0  # lines that were not JSON (a killed monitor's last, half-written line)

    @property
    def samples(self) -> list[dict]:
        return [s for seg in self.segments for s in seg.samples]

    @property
    def last(self) -> dict | None:
        for seg in reversed(self.segments):
            if seg.samples:
                return seg.samples[-1]
        return None


def parse_lines(lines, node: str = "", path: Path | None = None) -> NodeSamples:
    out = NodeSamples(node, path or Path(node))
    seg: Segment | None = None
    for raw in lines:
        raw = raw.strip()
        if not raw:
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            out.torn += 1
            continue
        if not isinstance(obj, dict):
            out.torn += 1
            continue
        k = obj.get("k")
        if k == "start":
            seg = Segment(obj)
            out.segments.append(seg)
            out.node = obj.get("node") or out.node
            continue
        if seg is None:  # samples before any start line (a truncated file): keep them
            seg = Segment({"t": obj.get("t", 0.0)})
            out.segments.append(seg)
        if k == "s" and isinstance(obj.get("t"), (int, float)):
            seg.samples.append(obj)
        elif k == "xid":
            seg.events.append(obj)
        elif k == "error":
            seg.errors.append(obj)
        elif k == "stop":
            seg.stop = obj
    return out


def read_node(path: Path) -> NodeSamples:
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse_lines(f, node=path.stem, path=path)


def read_dir(directory: Path) -> list[NodeSamples]:
    """Every node's samples in a job's directory, in node-name order."""
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".jsonl"))
    except OSError:
        return []
    return [read_node(Path(directory) / n) for n in names]


def read_tail(path: Path, size: int = 16384) -> list[dict]:
    """The complete lines at the end of a file (for live views: no need to read it all)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            end = f.tell()
            f.seek(max(0, end - size))
            data = f.read()
    except OSError:
        return []
    lines = data.split(b"\n")
    if end > size:
        lines = lines[1:]  # the first one is cut
    out = []
    for ln in lines:
        try:
            obj = json.loads(ln)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out
