"""``hpcjobs kinds`` and ``hpcjobs cluster show|slurm-conf``: what the tool knows of the cluster."""

from __future__ import annotations

import click

from hpcjobs.cli.kit import CONTEXT, cluster_of, guarded


@click.command(context_settings=CONTEXT)
def kinds():
    """List job kinds."""
    from hpcjobs import kinds as k

    for name in k.names():
        click.echo(f"{name:<18} {k.get(name).summary}")


@click.group(context_settings=CONTEXT)
def cluster():
    """The cluster profile."""


@cluster.command("show", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@guarded
def cluster_show(ctx, as_json):
    """Print the profile in use and where it came from."""
    c = cluster_of(ctx)
    if as_json:
        click.echo(c.to_json())
        return
    click.echo(f"cluster {c.name}  (from {c.source})")
    f = c.fabric
    click.echo(f"fabric  {f.kind} {f.device or '-'} port {f.port} via {f.interface or '-'}, "
               f"{f.rate_gbps:g} Gb/s")
    for p in c.partitions:
        click.echo(f"partition {p.name}{' (default)' if p.default else ''}: {len(p.nodes)} nodes, "
                   f"max time {p.max_time or '-'}")
    for n in c.nodes:
        gpu = f"{n.gpu.count}x {n.gpu.model or n.gpu.type} {n.gpu.memory_gb:g} GB CC {n.gpu.compute_capability}" \
            if n.gpu else "no GPU"
        click.echo(f"  {n.name:<12} {n.address or '-':<16} {n.cpus} CPUs {n.memory_mb} MB  {gpu}")


@cluster.command("slurm-conf", context_settings=CONTEXT)
@click.option("--out", metavar="DIR", help="Write slurm.conf, gres.conf and cgroup.conf there "
                                           "(default: print them).")
@click.pass_context
@guarded
def cluster_slurm_conf(ctx, out):
    """slurm.conf, gres.conf and cgroup.conf for the profile in use (slurm.conf.d/ is this
    for the built-in profile)."""
    from hpcjobs import slurmconf

    files = slurmconf.generate(cluster_of(ctx))
    if out:
        for p in slurmconf.write(files, out):
            click.echo(f"wrote {p}")
        return
    click.echo("\n".join(f"# ===== {name} =====\n{text}" for name, text in files.items()), nl=False)
