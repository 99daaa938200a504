"""Pure parsers of the commands the doctor runs: ``ip -o addr/link``, ``nvidia-smi topo -m``,
``ulimit -l``; and the last lines of any output as evidence."""

from __future__ import annotations

import re

# Shared with the preflight step, which runs on the compute nodes (re-exported here).
from hpcjobs.runners.checks import PATH_KINDS, Topo, parse_topo  # noqa: F401
from hpcjobs.runners.cmd import tail  # noqa: F401


def parse_ip_addr(text: str) -> list[tuple[str, str]]:
    """``ip -o addr show`` -> [(interface, address)], addresses without the prefix length."""
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*\d+:\s+([^\s:@]+)(?:@\S+)?\s+inet6?\s+([0-9a-fA-F.:]+)(?:/\d+)?", line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def parse_ulimit(text: str) -> int:
    """``ulimit -l`` output (KiB or "unlimited") -> bytes, -1 for unlimited."""
    t = text.strip()
    return -1 if t == "unlimited" else int(t) * 1024


def parse_ip_link(text: str) -> tuple[str, str]:
    """``ip -o link show dev X`` -> (operstate lower-cased, link type such as "ether")."""
    state = re.search(r"\bstate (\S+)", text)
    typ = re.search(r"link/(\S+)", text)
    return (state.group(1).lower() if state else "?", typ.group(1) if typ else "?")
