"""``train``: torch DDP training, one task per GPU, ranks from Slurm through hpcjobs.launch.

One srun task per GPU (not torchrun per node): Slurm accounts and confines each rank, and
the launcher maps SLURM_* to RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT (env://).
Nodes without GPUs get one task each (gloo on CPU).
"""

from hpcjobs.kinds.base import Kind


class TrainKind(Kind):
    name = "train"
    summary = "torch DDP training, one task per GPU (env:// rendezvous from Slurm)"
    template = "train.sbatch.j2"
    task_per_gpu = True
    usage = "train.py [ARGS...]"


KIND = TrainKind()
