"""Torch DDP on synthetic data: each rank reports its identity, an all_reduce is checked,
and rank 0 prints the loss of every epoch.

    hpcjobs submit train --nodes 3 -- examples/train_ddp.py --epochs 3
    sbatch job_templates/train.sbatch examples/train_ddp.py --epochs 3
    # survives time limits: checkpoint on the warning signal, requeue, resume
    hpcjobs submit train --nodes 3 --time 30 --requeue -- examples/train_ddp.py \
        --epochs 100 --checkpoint ckpt/

Runs under hpcjobs.launch (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from Slurm): NCCL on
GPUs, gloo on CPU-only nodes. With --checkpoint DIR it saves every epoch and resumes from
the last one, and stops early (saving first) when hpcjobs reports the job's warning signal.
"""

import argparse
import gc
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps-per-epoch", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--checkpoint", metavar="DIR", help="save each epoch; resume from the last")
    p.add_argument("--epoch-seconds", type=float, default=0.0,
                   help="sleep this long per epoch (to exercise time limits)")
    return p.parse_args()


def preempted_flag():
    """hpcjobs.preempted() if hpcjobs is importable (it is, under hpcjobs.launch)."""
    try:
        from hpcjobs import preempted

        return preempted()
    except ImportError:
        return lambda: False


def main() -> int:
    args = parse()
    use_cuda = torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    # Slurm or the launcher may bind one GPU per task (then it is cuda:0 for every rank).
    gpu = local_rank % torch.cuda.device_count() if use_cuda else 0
    device = torch.device(f"cuda:{gpu}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, init_method="env://")
    try:
        return train(args, device, gpu, use_cuda, backend, local_rank)
    finally:
        # DDP's reducer holds the process group. It must be gone (train() returned, so its
        # locals are) before the group is destroyed: left to interpreter exit, its destructor
        # aborted one rank in three with gloo on torch 2.13 ("terminate called without an
        # active exception", after "training done").
        gc.collect()
        dist.destroy_process_group()


def train(args, device, gpu: int, use_cuda: bool, backend: str, local_rank: int) -> int:
    rank, world = dist.get_rank(), dist.get_world_size()
    print(f"rank {rank} of {world} local_rank {local_rank} on {socket.gethostname()} "
          f"backend {backend} master {os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}",
          flush=True)

    # The collective itself: every rank contributes its rank; the sum is world*(world-1)/2.
    t = torch.tensor([float(rank)], device=device)
    dist.all_reduce(t)
    expected = world * (world - 1) / 2
    if rank == 0:
        print(f"all_reduce sum = {t.item():g} (expected {expected:g}): "
              f"{'OK' if t.item() == expected else 'WRONG'}", flush=True)

    torch.manual_seed(0)  # same initial weights on every rank
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1)).to(device)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[gpu] if use_cuda else None)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr)
    true_w = torch.randn(16, 1, generator=torch.Generator().manual_seed(1)).to(device)

    start_epoch, step = 0, 0
    ckpt = os.path.join(args.checkpoint, "checkpoint.pt") if args.checkpoint else None
    if ckpt and os.path.exists(ckpt):
        state = torch.load(ckpt, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start_epoch, step = state["epoch"], state["step"]
        if rank == 0:
            print(f"resumed from {ckpt}: epoch {start_epoch}, step {step}", flush=True)

    stop = preempted_flag()
    gen = torch.Generator().manual_seed(1000 + rank)
    for epoch in range(start_epoch, args.epochs):
        total = 0.0
        for _ in range(args.steps_per_epoch):
            x = torch.randn(args.batch_size, 16, generator=gen).to(device)
            y = x @ true_w
            loss = nn.functional.mse_loss(ddp(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            total += loss.item()
        mean = torch.tensor([total / args.steps_per_epoch], device=device)
        dist.all_reduce(mean)
        if rank == 0:
            print(f"epoch {epoch + 1}/{args.epochs} step {step} loss {mean.item() / world:.6f}",
                  flush=True)
        if args.epoch_seconds:
            time.sleep(args.epoch_seconds)
        if ckpt:
            if rank == 0:
                os.makedirs(args.checkpoint, exist_ok=True)
                tmp = ckpt + ".tmp"
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                            "epoch": epoch + 1, "step": step}, tmp)
                os.replace(tmp, ckpt)
            dist.barrier()
        # All ranks agree before stopping, so none waits in a collective for a rank that left.
        flag = torch.tensor([1.0 if stop() else 0.0], device=device)
        dist.all_reduce(flag)
        if flag.item() > 0 and epoch + 1 < args.epochs:
            if rank == 0:
                print(f"warning signal: checkpointed at epoch {epoch + 1}, step {step}; exiting "
                      "for requeue", flush=True)
            return 0
    if rank == 0:
        print(f"training done: {args.epochs} epochs, {step} steps", flush=True)
    return 0


if __name__ == "__main__":
    # Leave without C++ static destructors: torch 2.13's gloo can abort in one at interpreter
    # exit ("terminate called without an active exception"), failing a finished job
    # (hpcjobs/shutdown.py says more). Without hpcjobs (torchrun, say): the ordinary exit.
    try:
        from hpcjobs import finish
    except ImportError:
        finish = sys.exit
    finish(main())
