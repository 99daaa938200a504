"""``hpcjobs why JOBID``: the cause of a job's end, its evidence and the fix (hpcjobs.triage)."""

from __future__ import annotations

import json

import click

from hpcjobs.cli.kit import CONTEXT, guarded


@click.command("why", context_settings=CONTEXT)
@click.argument("job_id")
@click.option("--log", "log_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Classify this output file (default: the job's own, from its record or Slurm).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@guarded
def why_cmd(job_id: str, log_file: str | None, as_json: bool) -> None:
    """Why did a job end the way it did: the cause, the line that shows it, and the fix.

    Time limit, preemption/requeue, node failure, out of memory (host or CUDA), NCCL timeout or
    TCP-socket fallback, master port in use, missing module, a crash in C++ cleanup at exit
    (std::terminate), plain non-zero exit. Works without Slurm accounting.
    """
    from hpcjobs.triage import why

    v = why(job_id, log_file)
    click.echo(json.dumps(v.to_dict(), indent=2) if as_json else v.text())
