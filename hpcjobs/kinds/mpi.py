"""``mpi``: any MPI program across the nodes, started by srun through PMIx.

Open MPI under Slurm: ``srun --mpi=pmix`` (MPICH would be pmi2). No mpirun: srun already
knows the allocation, and a PMI mismatch shows up as every rank reporting size 1.
"""

from hpcjobs.kinds.base import Kind, Option


class MpiKind(Kind):
    name = "mpi"
    summary = "MPI program on every task (srun --mpi=pmix)"
    template = "mpi.sbatch.j2"
    # An MPI program asks for GPUs only when told (--gpus-per-node N): two small CPU jobs can
    # then share a node instead of each holding its GPU (slurm.conf CR_Core_Memory).
    gpus_by_default = False
    cpu_fallback = ""
    options = (
        Option("mpi", str, "pmix", "srun --mpi plugin: pmix for Open MPI, pmi2 for MPICH/Intel MPI",
               choices=("pmix", "pmi2", "none")),
    )


KIND = MpiKind()
