"""Horovod with PyTorch: an allreduce checked against its known sum, then a few steps of
hvd.DistributedOptimizer with the loss printed and the replicas checked to be identical.

    hpcjobs submit horovod --nodes 3 -- examples/horovod_allreduce.py
    sbatch job_templates/horovod.sbatch examples/horovod_allreduce.py

Horovod 0.28.1 is unmaintained (docs/horovod.md); examples/train_ddp.py with the `train` kind
is the maintained equivalent. Started by `srun --mpi=pmix` through hpcjobs.launch: hvd.init()
finds its peers through MPI (PMIx), not horovodrun. Exits 1 if any check fails.
"""

import argparse
import os
import socket
import sys

import torch
import torch.nn as nn


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    return p.parse_args()


def main() -> int:
    args = parse()
    import horovod
    import horovod.torch as hvd

    hvd.init()
    rank, size, local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
    use_cuda = torch.cuda.is_available() and hvd.nccl_built()
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    device = torch.device("cuda" if use_cuda else "cpu")
    ops = "NCCL (GPU)" if use_cuda else ("gloo" if hvd.gloo_enabled() else "MPI") + " (CPU)"
    print(f"rank {rank} of {size} local_rank {local_rank} on {socket.gethostname()} "
          f"horovod {horovod.__version__} controller {'MPI' if hvd.mpi_enabled() else 'gloo'} "
          f"tensors {ops} SLURM_PROCID {os.environ.get('SLURM_PROCID')}", flush=True)
    if rank == 0:
        # Open MPI's parameter names are lower case after the prefix (OMPI_MCA_<name>).
        mca = {k[len("OMPI_MCA_"):]: v for k, v in os.environ.items() if k.startswith("OMPI_MCA_")}
        print(f"Open MPI transport for Horovod's control messages: pml={mca.get('pml', '(default)')} "
              f"btl={mca.get('btl', '(default)')} tcp interface="
              f"{mca.get('btl_tcp_if_include', '(any)')}", flush=True)
    ok = True

    # 1. allreduce: every rank contributes rank + 1; the sum is size * (size + 1) / 2.
    t = torch.tensor([float(rank + 1)], device=device)
    total = hvd.allreduce(t, op=hvd.Sum, name="rank_sum").item()
    expected = size * (size + 1) / 2
    if rank == 0:
        print(f"allreduce sum = {total:g} (expected {expected:g}): "
              f"{'OK' if total == expected else 'WRONG'}", flush=True)
    ok &= total == expected

    # 2. DistributedOptimizer: linear regression on rank-specific data; gradients averaged.
    torch.manual_seed(rank)  # deliberately different initial weights ...
    model = nn.Linear(8, 1).to(device)
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)  # ... made equal by rank 0's
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=args.lr * size),
                                   named_parameters=model.named_parameters())
    hvd.broadcast_optimizer_state(opt, root_rank=0)
    true_w = torch.arange(1.0, 9.0, device=device).view(8, 1) / 8
    gen = torch.Generator().manual_seed(100 + rank)
    losses = []
    for step in range(1, args.steps + 1):
        x = torch.randn(args.batch_size, 8, generator=gen).to(device)
        loss = nn.functional.mse_loss(model(x), x @ true_w)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mean = hvd.allreduce(loss.detach(), op=hvd.Average, name="loss").item()
        losses.append(mean)
        if rank == 0:
            print(f"step {step}/{args.steps} loss {mean:.6f}", flush=True)

    # Replicas must agree after averaged updates: the spread of a weight checksum is 0.
    checksum = torch.cat([p.detach().flatten() for p in model.parameters()]).sum().view(1)
    spread = (hvd.allreduce(checksum, op=hvd.Max, name="cmax")
              - hvd.allreduce(checksum, op=hvd.Min, name="cmin")).abs().item()
    fell = losses[-1] < losses[0] * 0.5
    if rank == 0:
        print(f"loss {losses[0]:.6f} -> {losses[-1]:.6f}: {'OK' if fell else 'DID NOT FALL'}; "
              f"replicas identical (spread {spread:.2e}): {'OK' if spread < 1e-6 else 'WRONG'}",
              flush=True)
    ok &= fell and spread < 1e-6
    hvd.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
