"""``jax``: multi-process JAX, one process per GPU (one per node without GPUs).

Every task runs the program through hpcjobs.launch, whose jax hook sets
``JAX_COORDINATOR_ADDRESS`` (the first node's fast-network address and the step's port, as
MASTER_ADDR:MASTER_PORT), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (the step's task count and
rank). The program calls ``jax.distributed.initialize()`` with them (docs/jax.md).

GPUs: every process sees all of its node's GPUs and takes one through ``local_device_ids``:
JAX's own rule under Slurm picks device ``SLURM_LOCALID`` when local_device_ids is None
(jax/_src/clusters/cluster.py), and the launcher's binding for the frameworks that choose their
own device leaves the node's GPUs visible. Where Slurm narrows a task to one GPU
(``--gpus-per-task=1``), the hook sets ``JAX_LOCAL_DEVICE_IDS=0``. So the layout must be one
process per GPU: fewer processes would leave GPUs idle, more would share one.

Refused before it queues: a ``--mesh`` whose sizes do not multiply to the job's device count
(``jax.sharding.Mesh`` would fail on every process after the job waited in the queue), and a
GPU job whose tasks per node differ from its GPUs per node.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from hpcjobs.cluster import Cluster
from hpcjobs.errors import BadInput
from hpcjobs.kinds.base import Kind, Option
from hpcjobs.spec import JobSpec

if TYPE_CHECKING:
    from hpcjobs.prepared import Prepared

_AXIS = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# XLA's CPU client makes this many devices per process (one without it).
_HOST_DEVICES = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def parse_mesh(text: str) -> dict[str, int]:
    """``data=2,model=4`` -> {"data": 2, "model": 4}; BadInput names what is wrong."""
    shape: dict[str, int] = {}
    example = "e.g. --mesh data=6 or --mesh data=3,model=2"
    for part in text.split(","):
        name, eq, size = (s.strip() for s in part.partition("="))
        if not eq or not _AXIS.match(name) or not (size.isascii() and size.isdigit()):
            raise BadInput("--mesh", f"{part.strip()!r} is not AXIS=SIZE", example)
        if name in shape:
            raise BadInput("--mesh", f"axis {name!r} is named twice", example)
        if int(size) < 1:
            raise BadInput("--mesh", f"axis {name!r} has size {size}; sizes start at 1", example)
        shape[name] = int(size)
    return shape


def devices_per_process(spec: JobSpec) -> int:
    """One GPU per process; on CPU, XLA's host device count (XLA_FLAGS in --env), else 1."""
    if spec.gpus_per_node:
        return 1
    m = _HOST_DEVICES.search(spec.env.get("XLA_FLAGS", ""))
    return max(1, int(m.group(1))) if m else 1


def _factor_hint(n: int) -> str:
    pairs = [f"data={n // k},model={k}" for k in range(2, n) if n % k == 0][:2]
    return " or ".join([f"data={n}", *pairs])


class JaxKind(Kind):
    name = "jax"
    summary = "multi-process JAX, one process per GPU; jax.distributed from Slurm through the launcher"
    cpu_fallback = "JAX's CPU backend, its collectives over gloo"
    template = "jax.sbatch.j2"
    task_per_gpu = True
    usage = "prog.py [ARGS...]"
    options = (
        Option("mesh", str, None, "device mesh AXIS=SIZE[,AXIS=SIZE...] passed to the program as "
               "HPCJOBS_JAX_MESH; its sizes must multiply to the job's device count"),
    )

    def check(self, spec: JobSpec, cluster: Cluster) -> None:
        gpus = spec.gpus_per_node or 0
        tasks = self.tasks_per_node(spec)
        if gpus and tasks != gpus:
            raise BadInput("--ntasks-per-node", f"the jax kind runs one process per GPU; {tasks} "
                           f"per node for {gpus} GPUs per node would "
                           + ("leave GPUs idle" if tasks < gpus else "put several processes on one GPU"),
                           "drop --ntasks-per-node (or set --gpus-per-node to match)")
        text = spec.options.get("mesh")
        if not text:
            return
        shape = parse_mesh(text)
        per = devices_per_process(spec)
        devices = spec.nodes * tasks * per
        size = 1
        for s in shape.values():
            size *= s
        if size != devices:
            what = "GPU" if gpus else ("CPU device" if per > 1 else "CPU process")
            raise BadInput("--mesh", f"{text} holds {size} devices but the job has {devices} "
                           f"({spec.nodes} nodes x {tasks * per} {what}{'s' * (tasks * per != 1)} "
                           "each)", f"give a shape whose sizes multiply to {devices}, e.g. "
                           f"{_factor_hint(devices)}, or change --nodes")

    def context(self, job: Prepared) -> dict:
        text = job.options.get("mesh")
        # Normalised (no spaces); checked above, so it is plain AXIS=SIZE text.
        mesh = ",".join(f"{k}={v}" for k, v in parse_mesh(text).items()) if text else ""
        return {"jax_mesh": mesh}


KIND = JaxKind()
