"""Pure parsers of the commands the doctor runs: ``ip -o addr/link``, ``nvidia-smi topo -m``,
``ulimit -l``; and the last lines of any output as evidence."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def parse_ip_addr(text: str) -> list[tuple[str, str]]:
    """``ip -o addr show`` -> [(interface, address)], addresses without the prefix length."""
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*\d+:\s+([^\s:@]+)(?:@\S+)?\s+inet6?\s+([0-9a-fA-F.:]+)(?:/\d+)?", line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
PATH_KINDS = ("PIX", "PXB", "PHB", "NODE", "SYS")


@dataclass
class Topo:
    """The GPU/NIC rows of ``nvidia-smi topo -m``; ``path[gpu][nic]`` is PIX, PXB, PHB, NODE, SYS."""

    gpus: list[str] = field(default_factory=list)
    nics: dict[str, str] = field(default_factory=dict)  # column label -> device (NIC0 -> mlx5_0)
    path: dict[str, dict[str, str]] = field(default_factory=dict)

    def path_to(self, gpu: str, device: str) -> str | None:
        for label, dev in self.nics.items():
            if dev == device:
                return self.path.get(gpu, {}).get(label)
        return None


def parse_topo(text: str) -> Topo:
    """Parse ``nvidia-smi topo -m``: both the NIC0 + "NIC Legend" form (driver >= 470) and the
    older form that puts ``mlx5_0`` in the header. Tab-separated; "CPU Affinity" has a blank."""
    text = _ANSI.sub("", text)
    lines = text.splitlines()
    header = None
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.split("\t")]
        if cells and cells[0] == "" and any(re.fullmatch(r"GPU\d+", c) for c in cells):
            header = i
            break
    topo = Topo()
    if header is None:
        return topo
    cols = [c.strip() for c in lines[header].split("\t")][1:]
    cols = [c for c in cols if c]
    # Only the matrix columns: GPUn, NICn, or device names (mlx5_0, ...) before "CPU Affinity".
    matrix = []
    for c in cols:
        if "Affinity" in c or c.startswith("GPU NUMA"):
            break
        matrix.append(c)
    legend = dict(re.findall(r"^\s*(NIC\d+):\s*(\S+)\s*$", text, re.MULTILINE))
    for c in matrix:
        if not re.fullmatch(r"GPU\d+", c):
            topo.nics[c] = legend.get(c, c)
    for line in lines[header + 1:]:
        if not line.strip() or line.strip().startswith("Legend"):
            break
        cells = [c.strip() for c in line.split("\t")]
        row = cells[0]
        values = [c for c in cells[1:] if c != ""]
        if not re.fullmatch(r"GPU\d+", row):
            continue
        topo.gpus.append(row)
        topo.path[row] = {col: values[j] for j, col in enumerate(matrix)
                          if j < len(values) and col in topo.nics}
    return topo


def parse_ulimit(text: str) -> int:
    """``ulimit -l`` output (KiB or "unlimited") -> bytes, -1 for unlimited."""
    t = text.strip()
    return -1 if t == "unlimited" else int(t) * 1024


def tail(text: str, n: int = 3) -> list[str]:
    """The last ``n`` non-empty lines of a command's output, as evidence lines."""
    return [ln.strip() for ln in text.splitlines() if ln.strip()][-n:] or ["(no output)"]


def parse_ip_link(text: str) -> tuple[str, str]:
    """``ip -o link show dev X`` -> (operstate lower-cased, link type such as "ether")."""
    state = re.search(r"\bstate (\S+)", text)
    typ = re.search(r"link/(\S+)", text)
    return (state.group(1).lower() if state else "?", typ.group(1) if typ else "?")
