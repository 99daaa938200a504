"""``hpcjobs sandbox up|down|status``: a real Slurm cluster on this machine (root only)."""

from __future__ import annotations

import sys

import click

from hpcjobs.cli.kit import CONTEXT, guarded


@click.group(context_settings=CONTEXT)
def sandbox():
    """A real Slurm cluster on this machine: munged, slurmctld and N slurmd in network
    namespaces, configured from the repository's slurm.conf.d (docs/sandbox.md)."""


@sandbox.command(context_settings=CONTEXT)
@click.option("--nodes", "-N", type=int, default=None,
              help="Number of nodes node1..nodeN (default 3; 1-99).")
@click.option("--accounting", is_flag=True,
              help="Also run MariaDB and slurmdbd, so that sacct answers (Debian packages "
                   "mariadb-server and slurmdbd; a few seconds more).")
@guarded
def up(nodes, accounting):
    """Start the sandbox (no-op if it is already up and healthy)."""
    from hpcjobs.sandbox import lifecycle

    lifecycle.up(nodes, log=click.echo, accounting=accounting)


@sandbox.command(context_settings=CONTEXT)
@guarded
def down():
    """Stop the sandbox and remove everything it created."""
    from hpcjobs.sandbox import lifecycle

    lifecycle.down(log=click.echo)


@sandbox.command(context_settings=CONTEXT)
@guarded
def status():
    """Show the nodes; exit 0 if the sandbox is up and healthy, 1 if not."""
    from hpcjobs.sandbox import lifecycle

    h = lifecycle.health()
    if h.sinfo:
        click.echo(h.sinfo)
    if h.up:
        click.echo(f"sandbox up: {h.nodes} nodes, healthy"
                   f"{', accounting on (sacct)' if h.accounting else ''}")
        for line in lifecycle.notes(h):
            click.echo(line)
        sys.exit(0)
    click.echo(f"sandbox not up: {'; '.join(h.problems)}", err=True)
    sys.exit(1)
