"""``hpcjobs report JOBID`` (a job's receipt) and ``hpcjobs top`` (your running jobs, live).

Both read the samples the job's monitors wrote (hpcjobs/runners/monitor.py); ``report`` asks
Slurm once for the job's state, ``top`` one squeue per refresh of the job list, at a growing
interval while nothing changes (the figures themselves come from files).
"""

from __future__ import annotations

import json
import sys

import click

from hpcjobs.cli.kit import CONTEXT, guarded


def _complete_ids(ctx, param, incomplete: str):
    from click.shell_completion import CompletionItem

    from hpcjobs import api

    return [CompletionItem(j) for j in api.known_job_ids() if j.startswith(incomplete)]


@click.command("report", context_settings=CONTEXT)
@click.argument("job_id", shell_complete=_complete_ids)
@click.option("--json", "as_json", is_flag=True, help="Print the receipt as JSON.")
@click.option("--plot", "plot_file", metavar="FILE.png",
              help="Draw utilisation and memory per GPU over time (CPU and RSS per node for a "
                   "job without GPU figures); needs matplotlib (the extra 'plot').")
@click.option("--dir", "samples_dir", metavar="DIR",
              help="Where the samples are, when hpcjobs cannot find them (a direct job Slurm "
                   "has forgotten: its hpcjobs-monitor directory).")
@guarded
def report_cmd(job_id, as_json, plot_file, samples_dir):
    """A job's receipt: wall time, GPU-hours, per-GPU utilisation (mean, p95, idle), peak
    memory against the card and the plan, energy from NVML's counters, CPU and memory per
    node, NCCL's transport where logged, and findings in words with their thresholds.

    A running job shows the samples so far. Exit 2 for a job without samples (it says where
    it looked) and for --plot without matplotlib.
    """
    from hpcjobs import report

    if plot_file:
        from hpcjobs.report import plot

        plot.require_matplotlib()  # before any work: a clear message, nothing written
        plot.check_target(plot_file)
    r = report.receipt(job_id, samples_dir)
    if as_json:
        click.echo(json.dumps(r.to_dict(), indent=2))
    else:
        from hpcjobs.report.text import render

        click.echo(render(r))
    if plot_file:
        from hpcjobs.report import plot

        path = plot.draw(r, plot_file)
        click.echo(f"plot: {path}", err=as_json)


# --- top --------------------------------------------------------------------------------------

def _gib(b) -> str:
    return "-" if b is None else f"{b / 2**30:.1f}"


def top_rows(rows, now: float | None = None):
    """Table rows for running jobs: (job id, kind, state, elapsed, nodes, GPU% now, GPU% mean,
    GPU memory, power, CPU cores, RSS, age of the last sample)."""
    from pathlib import Path

    from hpcjobs import report
    from hpcjobs.report.sources import DIRECT_DIR
    from hpcjobs.slurm import format_duration

    out = []
    for st, run in rows:
        live = report.live_for_run(run, st.job_id, now) if run is not None else \
            report.live(Path.cwd() / DIRECT_DIR / st.job_id, now)
        kind = run.meta().get("kind", "-") if run is not None else "-"
        if live is None:
            cells = ["-"] * 7
        else:
            mem = "-" if live.mem_used is None else \
                f"{_gib(live.mem_used)}/{_gib(live.mem_total)}" if live.mem_total else _gib(live.mem_used)
            cells = ["-" if live.util_now is None else f"{live.util_now:.0f}",
                     "-" if live.util_mean is None else f"{live.util_mean:.0f}", mem,
                     "-" if live.power_w is None else f"{live.power_w:.0f}",
                     "-" if live.cpu is None else f"{live.cpu:.1f}", _gib(live.rss),
                     f"{live.age:.0f}s" + (" stale" if live.stale() else "")]
        out.append((st.job_id, kind, st.state, format_duration(st.seconds), st.nodes or "-", *cells))
    return out


TOP_HEAD = ("JOBID", "KIND", "STATE", "ELAPSED", "NODES", "GPU%", "GPU%avg", "GPUMEM GiB",
            "POWER W", "CPU", "RSS GiB", "SAMPLE")


@click.command("top", context_settings=CONTEXT)
@click.option("--interval", type=click.FloatRange(min=1.0, max=3600.0), default=5.0,
              show_default=True, metavar="SECONDS", help="Seconds between redraws.")
@click.option("--once", is_flag=True, help="Print the table once and exit.")
@click.option("--all-states", is_flag=True, help="Pending jobs too.")
@guarded
def top_cmd(interval, once, all_states):
    """Your running jobs with their live GPU utilisation (now and mean so far), GPU memory,
    power, CPU and RSS, redrawn every --interval seconds from the monitors' samples.

    One squeue per refresh of the job list, at a growing interval (up to 30 s) while the list
    does not change; the figures are read from files. Ctrl-C ends it.
    """
    import time

    from hpcjobs import api, watch
    from hpcjobs.report.text import table

    tty = sys.stdout.isatty()
    backoff = watch.Backoff(first=interval, cap=max(interval, watch.CAP))
    rows, key, next_poll = [], None, 0.0
    try:
        while True:
            now = time.monotonic()
            if now >= next_poll:
                rows = [(st, r) for st, r in api.queue()
                        if all_states or st.state in watch.ACTIVE]
                new_key = tuple((st.job_id, st.state, st.nodes) for st, _ in rows)
                next_poll = now + backoff.after(new_key != key)
                key = new_key
            body = table(TOP_HEAD, top_rows(rows), {5, 6, 8, 9, 10}) if rows else \
                "no running jobs of yours" + (" (or pending)" if all_states else "")
            stamp = time.strftime("%H:%M:%S")
            if tty and not once:
                click.echo("\033[H\033[2J", nl=False)
            click.echo(f"hpcjobs top  {stamp}  (every {interval:g} s; Ctrl-C ends)\n{body}"
                       if not once else body)
            if once:
                return
            if not tty:
                click.echo("")
            time.sleep(interval)
    except KeyboardInterrupt:
        return
