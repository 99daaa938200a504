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
    s = validate(spec, cluster, default_gpus=None if kind.gpus_by_default else 0)
    s.options = {**defaults, **s.options}
    return s, kind


def prepare(spec: JobSpec, cluster: Cluster) -> Prepared:
    """Validate, check and plan a job once; refuse what cannot run (BadInput, exit 2)."""
    from hpcjobs.errors import BadInput

    s, kind = complete(spec, cluster)
    check_program(s, kind)
    kind.check(s, cluster)
    placeholder_notice(s, kind, cluster)
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


# What the direct-use script takes from a spec (prepare_direct); the rest would be dropped.
_DIRECT_KEEPS = {"kind", "nodes", "time", "partition", "options", "python"}


def check_direct(spec: JobSpec) -> None:
    """``render --direct`` prints the generic job_templates/<kind>.sbatch: refuse what it would
    silently drop (the program, options other than --nodes/--time/--partition/the kind's)."""
    from dataclasses import fields

    from hpcjobs.errors import BadInput
    from hpcjobs.spec import JobSpec

    if spec.program:
        args = " ".join(spec.program)
        raise BadInput("--direct", "the direct-use script takes the program from sbatch's command "
                       f"line, so {args!r} would be dropped",
                       f"drop --direct to bake it in, or run: sbatch job_templates/{spec.kind}.sbatch "
                       f"{args}")
    blank = JobSpec(kind=spec.kind)
    for f in fields(JobSpec):
        if f.name not in _DIRECT_KEEPS and getattr(spec, f.name) != getattr(blank, f.name):
            flag = "--" + f.name.replace("_", "-")
            raise BadInput("--direct", f"the direct-use script keeps only --nodes, --time, "
                           f"--partition and the kind's options, so {flag} would be dropped",
                           f"drop --direct, or give {flag} to sbatch when you run the script")


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
        elif c == first and not shutil.which(c, path=spec.env.get("PATH")):
            # Not fatal on a real cluster (the program may exist only on compute nodes),
            # but almost always a typo here: say so on stderr.
            print(f"hpcjobs: warning: {c!r} is not on this host's PATH", file=sys.stderr)
    if candidates != [first] and "/" not in first and not shutil.which(first, path=spec.env.get("PATH")):
        # `-- python x.py`: the job runs `python` as given, from its PATH (Debian has only python3).
        print(f"hpcjobs: warning: {first!r} is not on this host's PATH; a .py program runs under "
              f"the job's Python ({spec.python}) when given alone: -- {' '.join(spec.program[1:2])} ...",
              file=sys.stderr)


def placeholder_notice(spec: JobSpec, kind: Kind, cluster: Cluster) -> None:
    """One line on stderr where a GPU job will get placeholder GPUs: it runs on CPU, with what
    the kind falls back to (``Kind.cpu_fallback``)."""
    import sys

    from hpcjobs.spec import placeholder_gpus

    if spec.gpus_per_node and kind.cpu_fallback and placeholder_gpus(cluster):
        print(f"hpcjobs: notice: the GPUs of cluster {cluster.name!r} are placeholders (GRES "
              f"without a driver): {kind.name} runs on CPU ({kind.cpu_fallback})", file=sys.stderr)


def check_with_slurm(job: Prepared) -> None:
    """What only the live Slurm knows, asked just before a real submission (never by render or
    --dry-run, which work without Slurm): the partition (exists, UP, MaxTime, node count) and
    its nodes (GPUs, RealMemory, features, GRES), one ``scontrol`` call each; and each
    ``--after`` job (one squeue for all). Skipped without a Slurm client (sbatch then says so);
    Slurm's own errors raise SlurmError (exit 3)."""
    import shutil

    from hpcjobs import slurm
    from hpcjobs.spec import check_after, check_live

    if not shutil.which("scontrol"):
        return
    s = job.spec
    parts = slurm.partitions()
    part = next((p for p in parts if p.name == s.partition), None)
    check_live(s, job.cluster.name, parts, slurm.nodes(part.nodes) if part else [])
    if s.after:
        check_after(s, _after_states(s))


def _after_states(spec: JobSpec) -> dict:
    """{--after job id: [the statuses of it (an array: its tasks)]}: squeue first (one call for
    all), then what hpcjobs recorded of its end, then sacct where accounting is on."""
    from hpcjobs import runs, slurm

    ids = [dep.partition(":")[0] for dep in spec.after]
    found: dict = {j: [] for j in ids}
    for st in slurm.squeue_jobs(ids):
        for j in ids:
            if st.job_id == j or st.job_id.split("_")[0] == j:
                found[j].append(st)
    missing = [j for j in ids if not found[j]]
    for j in list(missing):
        run = runs.find(j)
        final = run.meta().get("final") if run else None
        if final:
            found[j].append(slurm.JobStatus.from_dict(final))
            missing.remove(j)
    if missing:
        for st in slurm.sacct_jobs(missing):
            for j in missing:
                if st.job_id == j or st.job_id.split("_")[0] == j:
                    found[j].append(st)
    return found
