"""What the benchmark jobs share: nccl-tests' arithmetic, the table, JSON, PNG and the verdict.

Definitions are nccl-tests' own (doc/PERFORMANCE.md, src/all_reduce.cu), so figures from
``bench-allreduce`` and ``all_reduce_perf`` can be put side by side:

- algbw = bytes / time, in GB/s with GB = 10^9 bytes;
- all-reduce busbw = algbw x 2(n-1)/n: the speed the slowest link had to sustain, to be held
  against the hardware's line rate (EDR 4x: 100 Gb/s = 12.5 GB/s);
- point-to-point (ping-pong) bus bandwidth = algbw (factor 1).

Pure Python (no torch, numpy or mpi4py here): the unit tests check the formulas without them.
matplotlib is optional: without it no PNG is written and the JSON says so.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field

GB = 1e9  # nccl-tests divides by 1.0E9
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
# A verdict below this share of the line rate says "check the fabric".
GOOD, FAIR = 0.80, 0.50


def parse_size(text: str | int) -> int:
    """``"1K"`` -> 1024, ``"64M"``, ``"1G"``, ``"4096"``; K/M/G are powers of 2, as in nccl-tests."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"{text!r} is not a size (use e.g. 1K, 64M, 1G or a number of bytes)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def human(n: int) -> str:
    """1024 -> "1K", 1073741824 -> "1G" (exact multiples only; else bytes)."""
    for unit in ("G", "M", "K"):
        if n >= _UNITS[unit] and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def sweep(lo: int, hi: int, factor: int = 2, align: int = 1) -> list[int]:
    """lo, lo*f, lo*f^2, ... up to hi (hi itself included), each rounded down to ``align``."""
    if lo <= 0 or hi < lo or factor < 2:
        raise ValueError(f"bad sweep {lo}..{hi} x{factor}: need 0 < min <= max and factor >= 2")
    out, s = [], lo
    while s <= hi:
        out.append(max(align, s - s % align))
        s *= factor
    if out[-1] != max(align, hi - hi % align):
        out.append(max(align, hi - hi % align))
    return sorted(set(out))


def algbw(nbytes: int, seconds: float) -> float:
    """GB/s moved by the operation as the user sees it (nccl-tests' algBw)."""
    return nbytes / GB / seconds if seconds > 0 else 0.0


def allreduce_busbw(alg: float, nranks: int) -> float:
    """nccl-tests' busBw for all-reduce: algbw x 2(n-1)/n (x1 for 2 ranks, x4/3 for 3)."""
    return alg * 2 * (nranks - 1) / nranks if nranks > 0 else 0.0


def median(values: list[float]) -> float:
    v = sorted(values)
    if not v:
        raise ValueError("median of nothing")
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


@dataclass
class Verdict:
    level: str  # good | fair | poor | above-line-rate | no-fabric
    share: float | None  # busbw / line rate
    busbw: float  # GB/s at the largest size
    size: int
    line_rate: float  # GB/s
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


def verdict(busbw: float, size: int, rate_gbps: float, nnodes: int, fabric: str = "",
            what: str = "busbw") -> Verdict:
    """Judge the bandwidth at the largest size against the profile's line rate (rate_gbps / 8)."""
    line = rate_gbps / 8 if rate_gbps else 0.0
    share = busbw / line if line else None
    link = f"the {line:.2f} GB/s link ({fabric + ' ' if fabric else ''}{rate_gbps:g} Gb/s)"
    head = f"{what} {busbw:.2f} GB/s at {human(size)}"
    if nnodes < 2:
        return Verdict("no-fabric", share, busbw, size, line,
                       f"{head}: all ranks on one node, so the traffic never crossed the fabric "
                       "(NVLink/PCIe/shared memory); no verdict against the link rate")
    if share is None:
        return Verdict("no-fabric", None, busbw, size, line,
                       f"{head}: the profile gives no link rate ([fabric] rate_gbps)")
    pct = f"{share:.0%} of {link}"
    if share > 1.05:
        return Verdict("above-line-rate", share, busbw, size, line,
                       f"{head} = {pct}: above the line rate, so the traffic did not (only) cross "
                       "that link (loopback or virtual network, or [fabric] rate_gbps is wrong)")
    if share >= GOOD:
        return Verdict("good", share, busbw, size, line, f"{head} = {pct}: good")
    level = "fair" if share >= FAIR else "poor"
    mpi = what != "busbw"  # the MPI ping-pong judges its point-to-point bandwidth
    if fabric == "ethernet":
        names = "OMPI_MCA_btl_tcp_if_include" if mpi else "NCCL_SOCKET_IFNAME/GLOO_SOCKET_IFNAME"
        hint = (f"TCP over Ethernet: is {names} the fast interface, at its full speed and MTU? "
                "(`srun hpcjobs doctor`)")
    elif mpi:
        hint = ("run `srun hpcjobs doctor` on the nodes: TCP instead of RDMA (OMPI_MCA_pml=ucx, "
                "UCX_NET_DEVICES)? port DOWN or slower than the profile?")
    else:
        hint = ("run `srun hpcjobs doctor` on the nodes: TCP sockets instead of RDMA? GPUDirect "
                "RDMA off? GPU and NIC on different sockets?")
    return Verdict(level, share, busbw, size, line, f"{head} = {pct}: {level}; {hint}")


@dataclass
class Result:
    """One benchmark run: its rows plus what is needed to reproduce and judge it."""

    benchmark: str  # "allreduce" | "pingpong"
    rows: list[dict]
    verdict: Verdict
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"benchmark": self.benchmark, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **self.meta, "rows": self.rows, "verdict": self.verdict.to_dict()}


def allreduce_table(rows: list[dict]) -> list[str]:
    """nccl-tests' columns (in-place only: torch's all_reduce is in place)."""
    out = ["#       size         count      type   redop     time   algbw   busbw",
           "#        (B)    (elements)                       (us)  (GB/s)  (GB/s)"]
    out += [allreduce_line(r) for r in rows]
    return out


def allreduce_line(r: dict) -> str:
    return (f"{r['size']:>12} {r['count']:>13} {r['type']:>9} {r['redop']:>7} "
            f"{r['time_us']:>8.2f} {r['algbw']:>7.2f} {r['busbw']:>7.2f}")


def pingpong_table(rows: list[dict]) -> list[str]:
    out = ["#       size    latency   bandwidth",
           "#        (B)       (us)      (GB/s)"]
    out += [pingpong_line(r) for r in rows]
    return out


def pingpong_line(r: dict) -> str:
    bw = "-" if r.get("bandwidth") is None else f"{r['bandwidth']:.3f}"
    return f"{r['size']:>12} {r['latency_us']:>10.2f} {bw:>11}"


def parse_nccl_tests(text: str) -> list[dict]:
    """The data rows of nccl-tests' text output (``all_reduce_perf``), in-place figures first.

    A row is ``size count type redop root`` then out-of-place ``time algbw busbw #wrong`` then
    in-place ``time algbw busbw #wrong`` (src/util.cu). ``time_us``/``algbw``/``busbw`` are the
    in-place figures (torch's all_reduce is in place); ``oop`` holds the out-of-place ones.
    """
    rows = []
    for line in text.splitlines():
        tok = line.split()
        if len(tok) < 13 or not tok[0].isdigit():
            continue
        try:
            rows.append({"size": int(tok[0]), "count": int(tok[1]), "type": tok[2], "redop": tok[3],
                         "time_us": float(tok[9]), "algbw": float(tok[10]), "busbw": float(tok[11]),
                         "wrong": tok[12], "oop": {"time_us": float(tok[5]), "algbw": float(tok[6]),
                                                   "busbw": float(tok[7]), "wrong": tok[8]}})
        except ValueError:
            continue
    return rows


def output_paths(out_dir: str, name: str) -> tuple[str, str]:
    """``<out>/<name>-<jobid>.json`` and ``.png`` (a timestamp outside Slurm)."""
    tag = os.environ.get("SLURM_JOB_ID") or time.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(out_dir, f"{name}-{tag}")
    return base + ".json", base + ".png"


def write_json(path: str, result: Result) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result.to_dict(), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def write_png(path: str, result: Result, *, y: str, ylabel: str, title: str) -> str | None:
    """Bandwidth vs message size with the line rate drawn in; None if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in result.rows if r.get(y) is not None and r["size"] > 0]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot([r["size"] for r in rows], [r[y] for r in rows], marker="o", label=ylabel)
    if result.verdict.line_rate:
        ax.axhline(result.verdict.line_rate, color="gray", linestyle="--",
                   label=f"line rate {result.verdict.line_rate:.2f} GB/s")
    ax.set_xscale("log", base=2)
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: human(int(x)) if x >= 1 else ""))
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel(f"{ylabel} (GB/s)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def add_link_args(p, name: str) -> None:
    """The options both benchmarks share: the line rate to judge against and where results go."""
    p.add_argument("--link-gbps", type=float, default=None,
                   help="line rate of one port in Gb/s, for the verdict (default: [fabric] "
                        "rate_gbps of the cluster profile in use on the node)")
    p.add_argument("--fabric", default="", help="fabric kind, for the verdict's text (default: "
                   "the profile's, with --link-gbps unset)")
    p.add_argument("--out", default=None, help="directory for the JSON (and PNG) results")
    p.add_argument("--name", default=name, help="file name stem of the results")


def link_source(args) -> str:
    """:func:`link_from_profile`, where a profile that cannot be read costs the verdict (no line
    rate: 0), never the figures."""
    from hpcjobs.errors import HpcjobsError

    try:
        return link_from_profile(args)
    except (OSError, ValueError, HpcjobsError) as e:
        args.link_gbps = 0.0
        return f"no profile ({e})"


def link_from_profile(args, env: dict | None = None) -> str:
    """Fill ``args.link_gbps``/``args.fabric`` from the cluster profile in use on this node when
    the command line gave none (the direct-use scripts: sbatch job_templates/bench-*.sbatch), so
    a veth link on the sandbox is judged against the sandbox's rate, not the built-in EDR one.
    Found as the launcher finds it (hpcjobs.launch.profile: $HPCJOBS_CLUSTER, the running
    sandbox, the user's, the built-in). Returns where the figures came from, for the header."""
    if args.link_gbps is not None:
        args.fabric = args.fabric or ""
        return "command line"
    from hpcjobs.cluster import load_file
    from hpcjobs.launch.profile import profile_path

    path, chosen_by = profile_path(dict(os.environ if env is None else env))
    fab = load_file(path).fabric
    args.link_gbps, args.fabric = fab.rate_gbps, args.fabric or fab.kind
    return f"profile {path} ({chosen_by})"
