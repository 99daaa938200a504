"""``ray``: a Ray cluster inside the allocation, the user's driver on its head.

One srun task per node (holding the node's GPUs and the job's CPUs there). After hpcjobs.launch
(MASTER_ADDR: the first node's fast-network address), ``python -m hpcjobs.runners.ray cluster``
runs ``ray start --head --block`` on the first node and ``ray start --address HEAD --block`` on
every other, each bound to its node's fast-network address, with every port (GCS, node and
object manager, agents, metrics, client server, workers) from one block derived from the job
and step ids, so two Ray jobs sharing a node never collide (ray#10154, ray#22663). Once the GCS
counts every node (deadline ``--nodes-timeout``, naming the nodes that did not join), the driver
(``-- driver.py ARGS``) runs on the head with RAY_ADDRESS set; when it exits the cluster stops
and the job's exit code is the driver's. The bring-up is hpcjobs/runners/ray.py, which the vllm
kind's Ray backend uses too.

Each job gets a fresh Ray auth token (RAY_AUTH_MODE=token) in its environment: without one,
anyone who can reach the nodes can run code on the job's Ray cluster (Ray's own warning).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpcjobs.cluster import Cluster
from hpcjobs.errors import BadInput
from hpcjobs.kinds.base import Kind, Option
from hpcjobs.runners.ray import NODES_TIMEOUT
from hpcjobs.spec import JobSpec

if TYPE_CHECKING:
    from hpcjobs.prepared import Prepared


class RayKind(Kind):
    name = "ray"
    summary = "a Ray cluster over the job's nodes (ports per job), the driver on its head"
    cpu_fallback = "Ray's tasks on the nodes' CPUs; ray status counts no GPU there"
    template = "ray.sbatch.j2"
    usage = "driver.py [ARGS...]"
    options = (
        Option("nodes-timeout", int, NODES_TIMEOUT, "Seconds for every node to join the Ray "
               "cluster before the job gives up, naming the ones that did not"),
    )

    def tasks_per_node(self, spec: JobSpec) -> int:
        return 1  # one Ray node per Slurm node; Ray starts its own workers

    def check(self, spec: JobSpec, cluster: Cluster) -> None:
        if spec.ntasks_per_node not in (None, 1):
            raise BadInput("--ntasks-per-node", f"Ray runs one node per Slurm node (its workers "
                           f"are its own), got {spec.ntasks_per_node}",
                           "drop it; give Ray more CPUs with --cpus-per-task")
        if spec.signal_handler == "program":
            # Under 'program' the warning signal is at its default in every process of the step,
            # and srun delivers it to all of them: it would end the Ray daemons, not the driver.
            raise BadInput("--signal-handler", "'program' would let the warning signal end "
                           "Ray's own processes", "use the default (hpcjobs): the driver can "
                           "watch for it with hpcjobs.preempted()")
        t = spec.options.get("nodes_timeout")
        if t is not None and t < 1:
            raise BadInput("--nodes-timeout", f"must be at least 1 second, got {t}")

    def context(self, job: Prepared) -> dict:
        return {"ray_nodes_timeout": str(job.options.get("nodes_timeout") or NODES_TIMEOUT)}


KIND = RayKind()
