"""``hpcjobs status|logs|wait|cancel``: watch and control submitted jobs."""

from __future__ import annotations

import json
import sys

import click

from hpcjobs.cli.kit import CONTEXT, guarded


# --- watching jobs ------------------------------------------------------------------------

def _progress(tty: bool):
    def show(st, elapsed):
        if not tty:
            return
        reason = f" ({st.reason})" if st.reason else ""
        line = f"job {st.job_id}: {st.state}{reason}  {elapsed:6.1f}s"
        click.echo("\r\033[K" + line, nl=False, err=True)
    return show


def wait_one(job_id: str) -> int:
    from hpcjobs import api

    tty = sys.stderr.isatty()
    st = api.wait(job_id, on_update=_progress(tty))
    if tty:
        click.echo("", err=True)
    msg = api.describe_end(st)
    click.echo(msg, err=st.state != "COMPLETED")
    return 0 if st.state == "COMPLETED" else 1


def follow_job(job_id: str) -> int:
    """Stream the output file while the job runs, then report how it ended."""
    import time

    from hpcjobs import api, slurm

    path = api.logs(job_id)
    pos = 0
    delay = 0.2
    st = None
    while True:
        st = api._combine(job_id, list(slurm.job_status([job_id]).values()))
        pos = _drain(path, pos)
        if st.done or st.state == "UNKNOWN":
            time.sleep(0.2)
            _drain(path, pos)
            break
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    st = api.wait(job_id)
    msg = api.describe_end(st)
    click.echo(msg, err=st.state != "COMPLETED")
    return 0 if st.state == "COMPLETED" else 1


def _drain(path, pos: int) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(pos)
            data = f.read()
    except FileNotFoundError:
        return pos
    if data:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return pos + len(data)


@click.command(context_settings=CONTEXT)
@click.argument("job_ids", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--all", "show_all", is_flag=True, help="All recorded jobs, not the last 20.")
@click.option("--queue", "-q", is_flag=True, help="All your jobs in Slurm's queue, recorded or not.")
@guarded
def status(job_ids, as_json, show_all, queue):
    """State of jobs (default: the jobs hpcjobs recorded)."""
    from hpcjobs import api

    if queue:
        rows = api.queue()
    else:
        rows = api.status(list(job_ids) or None, limit=0 if show_all else 20)
    if as_json:
        click.echo(json.dumps([{**st.to_dict(), "run_dir": str(r.path) if r else None,
                                "kind": r.meta().get("kind") if r else None,
                                "endpoint": r.meta().get("endpoint") if r else None}
                               for st, r in rows], indent=2))
        return
    if not rows:
        click.echo("no jobs recorded yet (hpcjobs submit ...)" if not job_ids else "no such jobs")
        return
    click.echo(f"{'JOBID':<12} {'KIND':<16} {'STATE':<12} {'EXIT':<5} {'ELAPSED':>10}  {'NODES':<16} REASON/ENDPOINT")
    lines = []
    for st, r in rows:
        meta = r.meta() if r else {}
        extra = meta.get("endpoint") or st.reason or ""
        ec = "" if st.exit_code is None else str(st.exit_code)
        lines.append(f"{st.job_id:<12} {meta.get('kind', '-'):<16} {st.state:<12} {ec:<5} "
                     f"{st.elapsed:>10}  {st.nodes or '-':<16} {extra}")
    click.echo("\n".join(lines))


@click.command(context_settings=CONTEXT)
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the job ends.")
@guarded
def logs(job_id, follow):
    """Print a job's output."""
    from hpcjobs import api

    if follow:
        sys.exit(follow_job(job_id))
    path = api.logs(job_id)
    if not path.exists():
        from hpcjobs.errors import BadInput

        raise BadInput("JOBID", f"output {path} does not exist (yet)", "the job may still be pending")
    _drain(path, 0)


@click.command(context_settings=CONTEXT)
@click.argument("job_ids", nargs=-1, required=True)
@guarded
def cancel(job_ids):
    """Cancel jobs."""
    from hpcjobs import api

    api.cancel(list(job_ids))
    click.echo(f"cancelled {' '.join(job_ids)}")


@click.command("wait", context_settings=CONTEXT)
@click.argument("job_ids", nargs=-1, required=True)
@guarded
def wait_cmd(job_ids):
    """Wait for jobs to end; exit 0 only if all COMPLETED."""
    rc = 0
    for jid in job_ids:
        rc = max(rc, wait_one(jid))
    sys.exit(rc)
