"""What every ``hpcjobs`` command shares: one-line errors with the exit code, the cluster in use.

Only click is imported here; commands import the library when they run.
Exit codes: 0 ok, 1 job failed, 2 bad input, 3 Slurm.
"""

from __future__ import annotations

import sys

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def fail(err) -> None:
    """Print an hpcjobs error as one line and exit with its code."""
    click.echo(f"hpcjobs: error: {err}", err=True)
    sys.exit(getattr(err, "exit_code", 1))


def guarded(fn):
    """Turn hpcjobs errors into one line + exit code instead of a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from hpcjobs.errors import HpcjobsError

        try:
            return fn(*args, **kwargs)
        except HpcjobsError as err:
            fail(err)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def _usage_error_one_line(self, file=None) -> None:
    """click's own usage errors (unknown option, bad choice) as one line naming the option,
    like every other bad input; exit code 2 as before. click would print the usage, a blank
    line and "Error: ..."."""
    where = f"; see '{self.ctx.command_path} --help'" if self.ctx else ""
    click.echo(f"hpcjobs: error: {self.format_message().rstrip('.')}{where}", err=True, file=file)


click.exceptions.UsageError.show = _usage_error_one_line


def cluster_of(ctx: click.Context, explicit: str | None = None):
    from hpcjobs.cluster import load_cluster

    root = ctx.find_root()
    return load_cluster(explicit or (root.obj or {}).get("cluster"))
