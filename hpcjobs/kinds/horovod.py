"""``horovod``: Horovod with PyTorch, one task per GPU, started by ``srun --mpi=pmix``.

Status, stated plainly: Horovod's last release is 0.28.1 (June 2023); it is unmaintained and
does not build against current PyTorch without a patch (scripts/build-horovod applies it). The
maintained path for the same data-parallel training is torch DDP: the ``train`` kind.

Transport, as Horovod's own docs run it: MPI carries only Horovod's control messages, over TCP
(ob1 PML, TCP BTL); NCCL moves GPU tensors (when Horovod was built with
HOROVOD_GPU_OPERATIONS=NCCL); CPU tensors go through MPI. Not Gloo: under srun there is no
horovodrun rendezvous for Gloo's own controller, and Gloo tensor operations under the MPI
controller crash 0.28.1 (segmentation fault in GlooAllreduce, seen on the sandbox).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpcjobs.cluster import Cluster
from hpcjobs.errors import BadInput
from hpcjobs.kinds.base import Kind, Option
from hpcjobs.spec import JobSpec

if TYPE_CHECKING:
    from hpcjobs.prepared import Prepared


class HorovodKind(Kind):
    name = "horovod"
    summary = "Horovod 0.28.1 (unmaintained; see docs/horovod.md), one task per GPU, srun --mpi=pmix"
    cpu_fallback = "CPU tensors through MPI in place of NCCL"
    template = "horovod.sbatch.j2"
    task_per_gpu = True
    usage = "train.py [ARGS...]"
    options = (
        Option("mpi", str, "pmix", "srun --mpi plugin: pmix for Open MPI, pmi2 for MPICH/Intel MPI",
               choices=("pmix", "pmi2")),
        Option("mpi-control", str, "tcp", "tcp: Horovod's MPI control messages over TCP (ob1 "
               "PML, TCP BTL), as Horovod recommends; native: leave Open MPI's transport choice "
               "(UCX on InfiniBand) alone.", choices=("tcp", "native")),
    )

    def check(self, spec: JobSpec, cluster: Cluster) -> None:
        o = spec.options
        if o["mpi"] == "pmi2" and o["mpi_control"] == "tcp":
            # OMPI_MCA_* variables mean nothing to MPICH/Intel MPI: say so instead of pretending.
            raise BadInput("--mpi-control", "tcp sets Open MPI (OMPI_MCA_*) parameters, but "
                           "--mpi pmi2 is for MPICH/Intel MPI", "use --mpi-control native with "
                           "--mpi pmi2 and set your MPI's own TCP settings with --env")

    def context(self, job: Prepared) -> dict:
        cluster = job.cluster
        # The interface MPI's TCP traffic should use: the profile's fast-network interface
        # (IPoIB ib0 on the default cluster), if the profile names one.
        return {"tcp_interface": cluster.fabric.interface or ""}


KIND = HorovodKind()
