"""What a job kind is: its options, its checks, its template and the files it writes.

Adding a kind means one module here (registered in ``hpcjobs.kinds.KINDS``), one template in
job_templates/, one example and one test file. The CLI builds each kind's options from
``Kind.options``, so a kind never touches cli.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpcjobs.cluster import Cluster
from hpcjobs.spec import JobSpec


@dataclass(frozen=True)
class Option:
    """A kind-specific option; ``name`` is the long option without dashes (``ds-config``)."""

    name: str
    type: Any = str  # str, int, float, bool (a flag), "path" (must exist)
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] | None = None
    multiple: bool = False

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")


class Kind:
    name: str = ""
    summary: str = ""
    template: str = ""  # file name in job_templates/, e.g. "mpi.sbatch.j2"
    options: tuple[Option, ...] = ()
    # One task per GPU (torch-style kinds) rather than the user's --ntasks-per-node.
    task_per_gpu: bool = False
    # The program is required (most kinds); False for kinds that run something of their own.
    needs_program: bool = True
    # Default arguments of the direct-use script (job_templates/<kind>.sbatch), shown in usage.
    usage: str = "PROG [ARGS...]"

    def defaults(self) -> dict:
        return {o.key: ([] if o.multiple else o.default) for o in self.options}

    def tasks_per_node(self, spec: JobSpec) -> int:
        if spec.ntasks_per_node is not None:
            return spec.ntasks_per_node
        if self.task_per_gpu:
            return max(1, spec.gpus_per_node or 0)
        return 1

    def check(self, spec: JobSpec, cluster: Cluster) -> None:
        """Kind-specific checks; raise BadInput. ``spec`` is already validated."""

    def context(self, spec: JobSpec, cluster: Cluster) -> dict:
        """Extra values for the template (trusted: computed here, not typed by the user)."""
        return {}

    def files(self, spec: JobSpec, cluster: Cluster) -> dict[str, str]:
        """Files written beside the script in the run directory (name -> text)."""
        return {}

    def plan(self, spec: JobSpec, cluster: Cluster):
        """A :class:`hpcjobs.plan.Plan` for kinds that have one, else None."""
        return None
