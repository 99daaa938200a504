"""The receipt as a picture: utilisation and memory per GPU over time (matplotlib, the optional
extra ``plot``); a job without GPU figures gets CPU cores and RSS per node instead."""

from __future__ import annotations

import os
from pathlib import Path

from hpcjobs.errors import BadInput
from hpcjobs.report.numbers import GIB
from hpcjobs.report.receipt import Receipt


def require_matplotlib():
    """matplotlib.pyplot on the Agg backend (no display), or BadInput saying how to get it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BadInput("--plot", "matplotlib is not installed (it is the optional extra 'plot')",
                       "pip install 'hpcjobs[plot]' (or pip install matplotlib), or leave --plot out") from None
    return plt


def check_target(path: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        raise BadInput("--plot", f"{path} is a directory", "give a file name, e.g. --plot job.png")
    if not p.parent.is_dir():
        raise BadInput("--plot", f"{p.parent} does not exist", "create it first or choose another path")
    return p


def draw(r: Receipt, path: str) -> Path:
    """Write the picture to ``path`` (atomically: a temporary file renamed into place)."""
    plt = require_matplotlib()
    target = check_target(path)
    t0 = r.first_t or 0.0
    span = (r.last_t or t0) - t0
    scale, unit = (60.0, "minutes") if span >= 180 else (1.0, "seconds")
    with_gpus = [g for g in r.gpus if g.series.get("t")]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    title = f"job {r.job_id}" + (f" ({r.kind})" if r.kind else "") + f": {r.state}"
    if r.running:
        title += " (running: samples so far)"
    if with_gpus:
        for g in with_gpus:
            ts = [(t - t0) / scale for t in g.series["t"]]
            top.plot(ts, [u if u is not None else float("nan") for u in g.series["u"]],
                     label=g.label, linewidth=1.2)
            bottom.plot(ts, [m / GIB if m is not None else float("nan") for m in g.series["m"]],
                        label=g.label, linewidth=1.2)
        top.set_ylabel("GPU utilisation (%)")
        top.set_ylim(-2, 102)
        bottom.set_ylabel("GPU memory used (GiB)")
        cards = {g.memory_total for g in with_gpus if g.memory_total}
        for c in sorted(cards):
            bottom.axhline(c / GIB, color="grey", linestyle=":", linewidth=1,
                           label=f"card {c / GIB:.0f} GiB")
        if r.plan_need_bytes:
            bottom.axhline(r.plan_need_bytes / GIB, color="tab:red", linestyle="--", linewidth=1,
                           label="plan")
        sub = (f"mean utilisation {r.util_mean:.0f}%" if r.util_mean is not None else "") + \
              (f", energy {r.energy_kwh:.4f} kWh" if r.energy_kwh is not None else "")
    else:
        for n in r.nodes:
            ts = [(t - t0) / scale for t in n.series.get("t", [])]
            top.plot(ts, [c if c is not None else float("nan") for c in n.series.get("c", [])],
                     label=n.node, linewidth=1.2)
            bottom.plot(ts, [m / GIB if m is not None else float("nan") for m in n.series.get("rss", [])],
                        label=n.node, linewidth=1.2)
        top.set_ylabel("CPU cores used")
        bottom.set_ylabel("RSS of the job's processes (GiB)")
        sub = "no GPU figures: CPU and memory per node"
    fig.suptitle(title + (f"\n{sub}" if sub else ""), fontsize=11)
    bottom.set_xlabel(f"{unit} since the monitor started")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp{target.suffix}")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, target)
    except ValueError as e:  # a suffix matplotlib cannot write
        raise BadInput("--plot", str(e).split("\n")[0], "use a .png (or .svg, .pdf) file name") from None
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return target
