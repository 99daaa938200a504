"""``hpcjobs why JOBID``: the cause of a job's end, its evidence and the fix (hpcjobs.triage)."""

from __future__ import annotations

import json

import click

from hpcjobs.cli.kit import CONTEXT, guarded


# An array: the verdicts of this many failed tasks follow the per-task summary.
ARRAY_VERDICTS = 3


def _complete_ids(ctx, param, incomplete: str):
    from hpcjobs.cli.watch import _complete_ids as complete

    return complete(ctx, param, incomplete)


@click.command("why", context_settings=CONTEXT)
@click.argument("job_id", required=False, shell_complete=_complete_ids)
@click.option("--log", "log_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Classify this output file (default: the job's own, from its record or Slurm); "
                   "alone, without JOBID, the file is all there is to go on.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@guarded
def why_cmd(job_id: str | None, log_file: str | None, as_json: bool) -> None:
    """Why did a job end the way it did: the cause, the line that shows it, and the fix.

    Time limit, preemption/requeue, node failure, out of memory (host or CUDA), NCCL timeout or
    TCP-socket fallback, master port in use, missing module, a crash in C++ cleanup at exit
    (std::terminate), a dependency that can never be met, plain non-zero exit. A failed
    multi-rank step names the rank that failed first, its node, its own exit code and its
    traceback (not the peers srun then killed); a pending job, Slurm's reason in words; a
    requeued job, its last run (earlier runs are remarks). Works without Slurm accounting.
    For a job array's own id: each task's state, exit code and run time, then the verdict of
    the failed tasks (JOBID_TASK for one task).
    """
    from hpcjobs.triage import why

    if job_id is not None and log_file is None and _why_array(job_id, as_json):
        return
    v = why(job_id, log_file)
    click.echo(json.dumps(v.to_dict(), indent=2) if as_json else v.text())


def _why_array(job_id: str, as_json: bool) -> bool:
    """The per-task summary and the failed tasks' verdicts, if ``job_id`` is an array's."""
    from hpcjobs import api
    from hpcjobs.triage import why

    from hpcjobs.errors import HpcjobsError

    try:
        (st, _run), = api.status([job_id])
    except HpcjobsError:  # Slurm unreachable, a bad id: hpcjobs.triage says it (record, log)
        return False
    if not st.tasks:
        return False
    failed = [t for t in st.tasks if t.done and t.state != "COMPLETED"]
    verdicts = [why(t.job_id) for t in failed[:ARRAY_VERDICTS]]
    if as_json:
        click.echo(json.dumps({
            "job_id": job_id, "state": st.state, "summary": api.task_summary(st),
            "tasks": [{"job_id": t.job_id, "state": t.state, "exit_code": t.exit_code,
                       "signal": t.signal, "elapsed_seconds": t.seconds} for t in st.tasks],
            "verdicts": [v.to_dict() for v in verdicts]}, indent=2))
        return True
    width = max(len(t.job_id) for t in st.tasks)
    states = max(len(t.state) for t in st.tasks)
    lines = [f"job {job_id}: {st.state}, array of {api.task_summary(st)}"]
    for t in st.tasks:
        ec = f"exit {t.exit_code}" if t.done and t.exit_code is not None else ""
        lines.append(f"  {t.job_id:<{width}}  {t.state:<{states}}  {ec:<8} "
                     f"{api.format_duration(t.seconds)}".rstrip())
    for v in verdicts:
        lines += ["", v.text()]
    rest = [t.job_id for t in failed[ARRAY_VERDICTS:]]
    if rest:
        lines += ["", f"also failed: {' '.join(rest)} (hpcjobs why {rest[0]})"]
    click.echo("\n".join(lines))
    return True
