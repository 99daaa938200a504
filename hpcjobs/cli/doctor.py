"""The ``hpcjobs doctor`` command. ``hpcjobs --help`` imports this module to list the command:
it imports click only; the checks load when the command runs."""

from __future__ import annotations

import json
import sys

import click


@click.command("doctor", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--node", "node_name", metavar="NAME",
              help="Check as this profile/Slurm node (default: SLURMD_NODENAME, the host name, or "
                   "the node whose address this host has).")
@click.option("--cluster", "cluster_file", metavar="FILE", help="Cluster profile (TOML).")
@click.pass_context
def doctor_cmd(ctx: click.Context, as_json: bool, node_name: str | None, cluster_file: str | None):
    """Check this node for fast distributed jobs: RDMA, IPoIB, GPUDirect, memlock, munge, Slurm.

    Each check prints pass/warn/fail/skip with what it saw and the fix. Exit 0 when nothing
    failed, 1 on failures. Inside a job: srun -N1 hpcjobs doctor.
    """
    from hpcjobs.cli.kit import cluster_of, fail
    from hpcjobs.doctor.run import diagnose
    from hpcjobs.errors import HpcjobsError

    try:
        cluster = cluster_of(ctx, cluster_file)
        if node_name and cluster.node(node_name) is None:
            from hpcjobs.errors import BadInput

            raise BadInput("--node", f"no node {node_name!r} in cluster {cluster.name!r}",
                           f"use one of: {', '.join(n.name for n in cluster.nodes)}")
        report = diagnose(cluster, node_name=node_name)
    except HpcjobsError as err:
        fail(err)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.text())
    sys.exit(0 if report.ok else 1)
