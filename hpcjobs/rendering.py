"""Render a validated spec into the exact sbatch script Slurm will get.

``materialize`` is pure (no Slurm, no disk writes) and renders a :class:`Prepared` job as it is
(api.prepare checked, defaulted and planned it once), so ``render``, ``submit --dry-run`` and the
tests all see byte for byte what ``sbatch`` receives.

Quoting is the default, not a habit: the environment's ``finalize`` shell-quotes every string
that reaches ``{{ ... }}``. Only values wrapped in :class:`Sh` (text computed by hpcjobs itself)
pass unquoted; ``#SBATCH`` lines use the ``sbatch`` filter, because sbatch parses those lines
with its own rules, not bash's.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from hpcjobs import __version__
from hpcjobs.cluster import Cluster
from hpcjobs.errors import BadInput
from hpcjobs.prepared import Prepared
from hpcjobs.spec import JobSpec, dependency

_env = None


class Sh(str):
    """Shell text that hpcjobs produced itself; emitted as is."""


def shell_quote(value: str) -> str:
    """One shell word for ``value``: shlex.quote, except that a value holding a carriage return
    is written as bash's $'...' with \\r and \\n escaped. sbatch refuses every script that
    contains CR LF ("Batch script contains DOS line breaks"), even inside quotes."""
    if "\r" not in value:
        return shlex.quote(value)
    return ("$'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\r", "\\r")
            .replace("\n", "\\n") + "'")


def _finalize(value):
    if isinstance(value, Sh):
        return value
    if isinstance(value, bool) or value is None:
        raise TypeError(f"template emitted {value!r}: use an explicit test instead")
    if isinstance(value, (int, float)):
        return str(value)
    return shell_quote(str(value))


def sbatch_value(value) -> Sh:
    """Encode one value for an ``#SBATCH --opt=VALUE`` line.

    sbatch's tokenizer (opt.c get_argument) splits these lines at blanks outside ' or "
    quotes, takes the character after a backslash literally and ends the line at an unquoted
    #; bash sees a comment. Slurm 22.05 ends an argument at a backslash-escaped blank outside
    quotes, 24.11 keeps the blank: double quotes with only \\ and \" escaped read back the
    same in both (checked against the real sbatch, docs/reliability.md). A newline would end
    the comment and become bash code, so it is refused (spec.validate names the field first).
    """
    text = str(value)
    if "\n" in text or "\r" in text or "\0" in text:
        raise BadInput("#SBATCH value", f"{text!r} contains a line break or NUL", "remove it")
    if text and all(c.isalnum() or c in "_-.,:/@%+=[]" for c in text):
        return Sh(text)
    return Sh('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')


def quote_args(args) -> Sh:
    return Sh(" ".join(shell_quote(str(a)) for a in args))


def environment():
    """The shared Jinja2 environment (StrictUndefined: a missing value is an error)."""
    global _env
    if _env is None:
        import jinja2

        _env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_templates_dir()),
            undefined=jinja2.StrictUndefined,
            finalize=_finalize,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )
        _env.filters["sbatch"] = sbatch_value
        _env.filters["args"] = quote_args
        _env.filters["sh"] = Sh
    return _env


def _templates_dir() -> str:
    """Installed: the package hpcjobs.job_templates; in a source checkout: ../job_templates."""
    from importlib import resources

    try:
        return str(resources.files("hpcjobs.job_templates"))
    except ModuleNotFoundError:
        import os

        return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "job_templates")


@dataclass
class Rendered:
    script: str
    files: dict[str, str] = field(default_factory=dict)  # written beside the script
    job: Prepared | None = None  # what was rendered


def materialize(job: Prepared, *, run_dir: str | None = None) -> Rendered:
    """Turn a prepared job into the script (and side files) for Slurm.

    ``job.direct`` renders the generic script shipped as job_templates/<kind>.sbatch: the
    program comes from sbatch's command line and nothing run-specific is baked in. ``run_dir`` is
    where the record (and the kind's side files) will live.
    """
    kind, spec, cluster = job.kind, job.spec, job.cluster
    tasks = kind.tasks_per_node(spec)
    ctx = {
        "version": __version__,
        "kind": kind,
        "spec": spec,
        "opts": spec.options,
        "cluster": cluster,
        "direct": job.direct,
        "run_dir": run_dir,
        "tasks_per_node": tasks,
        "ntasks": tasks * spec.nodes,
        "job_name": spec.job_name or f"hpcjobs-{kind.name}",
        "dependency": dependency(spec),
        "gres_type": _gres_type(cluster, spec),
        **kind.context(job),
    }
    script = environment().get_template(kind.template).render(ctx)
    files = {} if job.direct else kind.files(job)
    return Rendered(script=script, files=files, job=job)


def _gres_type(cluster: Cluster, spec: JobSpec) -> str:
    for n in cluster.partition_nodes(spec.partition):
        if n.gpu:
            return n.gpu.type
    return ""


def direct_script(kind: str, cluster: Cluster | None = None) -> str:
    """The script shipped as job_templates/<kind>.sbatch: built-in profile, program from "$@"."""
    from hpcjobs import cluster as cluster_mod
    from hpcjobs.prepared import prepare_direct

    return materialize(prepare_direct(kind, cluster or cluster_mod.builtin())).script


def write_direct_templates(directory: str | None = None) -> list[str]:
    """Regenerate job_templates/<kind>.sbatch for every kind (the unit tests check they match)."""
    import os

    from hpcjobs import kinds

    directory = directory or _templates_dir()
    written = []
    for name in kinds.names():
        path = os.path.join(directory, f"{name}.sbatch")
        with open(path, "w") as f:
            f.write(direct_script(name))
        written.append(path)
    return written


if __name__ == "__main__":  # python -m hpcjobs.rendering: regenerate the direct-use scripts
    for p in write_direct_templates():
        print(p)
