"""The ``hpcjobs`` command: thin over :mod:`hpcjobs.api`.

Every command lives in a module of this package and is imported only when it is used (or
listed by ``--help``); each module imports click alone at the top and the library inside its
commands, so ``hpcjobs --help`` and ``render`` stay fast. Only this package imports click.
"""

from __future__ import annotations

from typing import ClassVar

import click

from hpcjobs.cli.kit import CONTEXT


class LazyGroup(click.Group):
    """The top-level group: each command is "module:attribute", imported on first use
    (hpcjobs.lazy, as the package's public names and the kinds are). A new command adds one line
    to ``lazy``."""

    lazy: ClassVar[dict[str, str]] = {
        "submit": "hpcjobs.cli.jobs:submit",
        "render": "hpcjobs.cli.jobs:render_cmd",
        "plan": "hpcjobs.cli.jobs:plan_cmd",
        "status": "hpcjobs.cli.watch:status",
        "logs": "hpcjobs.cli.watch:logs",
        "wait": "hpcjobs.cli.watch:wait_cmd",
        "cancel": "hpcjobs.cli.watch:cancel",
        "why": "hpcjobs.cli.why:why_cmd",
        "report": "hpcjobs.cli.report:report_cmd",
        "top": "hpcjobs.cli.report:top_cmd",
        "kinds": "hpcjobs.cli.cluster:kinds",
        "cluster": "hpcjobs.cli.cluster:cluster",
        "doctor": "hpcjobs.cli.doctor:doctor_cmd",
        "sandbox": "hpcjobs.cli.sandbox:sandbox",
    }

    def list_commands(self, ctx):
        return sorted(self.lazy)

    def get_command(self, ctx, name):
        from hpcjobs.lazy import load

        target = self.lazy.get(name)
        return load(target) if target else None


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.version_option(package_name="hpcjobs", prog_name="hpcjobs")
@click.option("--cluster", "cluster_file", metavar="FILE", envvar="HPCJOBS_CLUSTER",
              help="Cluster profile (TOML). Default: $HPCJOBS_CLUSTER, the running sandbox, "
                   "~/.config/hpcjobs/cluster.toml, then the built-in pve1..pve3 profile.")
@click.pass_context
def main(ctx: click.Context, cluster_file: str | None) -> None:
    """Render, check, record and submit Slurm jobs that are right for the hardware."""
    ctx.obj = {"cluster": cluster_file}


if __name__ == "__main__":
    main(prog_name="hpcjobs")
