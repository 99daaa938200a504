"""Prepared: one job, checked and planned, ready to render and submit; and the functions that make it.

``api.prepare()`` builds it once: the spec validated against the cluster with every option of
its kind filled in, the kind, the cluster and the kind's plan. ``render.materialize()`` turns
exactly this value into the script, and ``api.submit()`` sends what materialize made (as
torchx's ``submit`` takes the dry-run object its ``materialize`` built), so nothing is planned
or defaulted twice. The direct-use scripts (job_templates/<kind>.sbatch) are a Prepared with no
plan and ``direct=True``: the job's shape comes from sbatch's command line at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpcjobs.cluster import Cluster
    from hpcjobs.kinds.base import Kind
    from hpcjobs.planner import Plan
    from hpcjobs.spec import JobSpec


@dataclass(frozen=True)
class Prepared:
    spec: JobSpec  # validated; spec.options holds every option of the kind
    kind: Kind
    cluster: Cluster
    plan: Plan | None = None  # the kind's plan; None: the kind has none, or a direct script
    direct: bool = False  # the generic script shipped as job_templates/<kind>.sbatch

    @property
    def options(self) -> dict:
        return self.spec.options


_PYTHONS = ("python", "python3")


def complete(spec: JobSpec, cluster: Cluster) -> tuple[JobSpec, Kind]:
    """The spec validated against the cluster, with every option of its kind filled in.

    The one place where a kind's defaults meet the user's options.
    """
    from hpcjobs import kinds
    from hpcjobs.errors import BadInput
    from hpcjobs.spec import validate

    kind = kinds.get(spec.kind)
    defaults = kind.defaults()
    unknown = set(spec.options) - set(defaults)
    if unknown:
        raise BadInput(f"--{sorted(unknown)[0].replace('_', '-')}", f"not an option of kind {kind.name!r}",
                       f"see hpcjobs submit {kind.name} --help")
    s = validate(spec, cluster)
    s.options = {**defaults, **s.options}
    return s, kind


def prepare(spec: JobSpec, cluster: Cluster) -> Prepared:
    """Validate, check and plan a job once; refuse what cannot run (BadInput, exit 2)."""
    from hpcjobs.errors import BadInput

    s, kind = complete(spec, cluster)
    check_program(s, kind)
    kind.check(s, cluster)
    p = kind.plan(s, cluster)
    if p is not None and not p.ok:
        raise BadInput(p.field or "plan", p.reason, p.suggestion)
    return Prepared(s, kind, cluster, p)


def prepare_direct(kind: str, cluster: Cluster, *, nodes: int | None = None,
                   time: str | None = None, partition: str | None = None,
                   options: dict | None = None) -> Prepared:
    """The job behind job_templates/<kind>.sbatch: its shape only, no program, no plan."""
    from hpcjobs.spec import JobSpec

    s, k = complete(JobSpec(kind=kind, nodes=nodes, time=time, partition=partition,
                            options=dict(options or {})), cluster)
    return Prepared(s, k, cluster, None, direct=True)


def check_program(spec: JobSpec, kind: Kind) -> None:
    """The program exists and is readable where the job will start (or is a command on PATH)."""
    import os
    import shutil
    import sys
    from pathlib import Path

    from hpcjobs.errors import BadInput

    if not spec.program:
        if kind.needs_program:
            raise BadInput("PROG", "no program given",
                           f"put it after --, e.g. hpcjobs submit {kind.name} -- python3 prog.py")
        return
    base = spec.chdir or os.getcwd()
    first = spec.program[0]
    candidates = [first]
    name = os.path.basename(first)
    if name.startswith(_PYTHONS) and len(spec.program) > 1 and not spec.program[1].startswith("-"):
        candidates = [spec.program[1]]
    for c in candidates:
        if c.startswith("-"):
            continue  # arguments, not a program (vllm serve / pretrain_gpt.py --megatron-path)
        if "/" in c or c.endswith(".py"):
            p = Path(base, os.path.expanduser(c))
            if not p.exists():
                raise BadInput("PROG", f"{c} does not exist (looked in {base})", "check the path")
            if p.is_dir():
                raise BadInput("PROG", f"{c} is a directory, not a program", "give the program file")
            if not os.access(p, os.R_OK):
                raise BadInput("PROG", f"{c} is not readable", f"chmod u+r {c}")
        elif c == first and not shutil.which(c):
            # Not fatal on a real cluster (the program may exist only on compute nodes),
            # but almost always a typo here: say so on stderr.
            print(f"hpcjobs: warning: {c!r} is not on this host's PATH", file=sys.stderr)
