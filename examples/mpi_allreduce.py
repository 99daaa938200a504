"""Each MPI rank reports where it runs; then an allreduce of the ranks is checked.

    hpcjobs submit mpi --nodes 3 --wait -- python examples/mpi_allreduce.py
    sbatch job_templates/mpi.sbatch python examples/mpi_allreduce.py

Expected with N ranks: N lines "rank R of N on HOST" and "allreduce sum = N(N-1)/2 (expected ...)
OK" from rank 0. Exit status 1 if the sum is wrong or the world is a singleton when Slurm
started several tasks (the symptom of a PMI mismatch).
"""

import os
import socket
import sys

from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
host = socket.gethostname()
print(f"rank {rank} of {size} on {host} (SLURM_PROCID={os.environ.get('SLURM_PROCID', '-')})",
      flush=True)

total = comm.allreduce(rank, op=MPI.SUM)
hosts = comm.gather(host, root=0)
expected = size * (size - 1) // 2
slurm_ntasks = int(os.environ.get("SLURM_NTASKS", size))
if rank == 0:
    ok = total == expected and size == slurm_ntasks
    print(f"allreduce sum = {total} (expected {expected}) over {size} ranks on "
          f"{len(set(hosts))} hosts: {'OK' if ok else 'WRONG'}", flush=True)
    if size != slurm_ntasks:
        print(f"world size {size} but Slurm started {slurm_ntasks} tasks: PMI mismatch "
              "(Open MPI wants srun --mpi=pmix)", file=sys.stderr)
    sys.exit(0 if ok else 1)
