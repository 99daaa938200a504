"""A torch.distributed loop of all_reduce steps that can hang on purpose, for the hang sentinel.

    # rank 1 sleeps before the all_reduce of step 5; the others wait in it: the sentinel dumps
    # every rank's stacks after 20 s without progress and stops the job
    hpcjobs submit train --nodes 3 --hang-timeout 20s -- examples/hang_gloo.py --hang-rank 1 --hang-at 5
    # rank 1 stops itself (SIGSTOP), once: the job is requeued and the second run completes
    hpcjobs submit train --nodes 3 --hang-timeout 20s --requeue -- examples/hang_gloo.py \
        --hang-rank 1 --hang-at 5 --hang-how stop --once /shared/dir/hung-once
    # slow but progressing: 4 s steps under a 10 s timeout are never stopped
    hpcjobs submit train --nodes 3 --hang-timeout 10s -- examples/hang_gloo.py --steps 6 --step-seconds 4

Each step: every rank adds its rank+1 to a tensor with all_reduce and checks the sum, calls
hpcjobs.heartbeat(step=...) and (rank 0) prints the step. --quiet-until K leaves the prints out
before step K (progress then is the heartbeat alone); --heartbeat-until K leaves the heartbeat
out from step K on (progress then is the output alone). gloo on CPU, NCCL on GPUs.
"""

import argparse
import os
import signal
import sys
import time

import torch
import torch.distributed as dist


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--step-seconds", type=float, default=0.2, help="each step's sleep (compute)")
    p.add_argument("--hang-rank", type=int, default=None, help="this rank hangs")
    p.add_argument("--hang-at", type=int, default=5, help="before the all_reduce of this step")
    p.add_argument("--hang-how", choices=("sleep", "stop"), default="sleep",
                   help="sleep (in time.sleep) or stop (SIGSTOP to itself)")
    p.add_argument("--once", metavar="FILE", help="hang only if FILE does not exist (creates it)")
    p.add_argument("--quiet-until", type=int, default=0, help="no prints before this step")
    p.add_argument("--heartbeat-until", type=int, default=None, help="no heartbeat from this step")
    return p.parse_args()


def heartbeat_function():
    try:
        from hpcjobs import heartbeat

        return heartbeat
    except ImportError:  # outside hpcjobs: nothing to tell
        return lambda step=None: None


def fault(args, rank: int, step: int) -> None:
    if rank != args.hang_rank or step != args.hang_at:
        return
    if args.once:
        if os.path.exists(args.once):
            return
        open(args.once, "w").close()
    print(f"rank {rank}: hanging ({args.hang_how}) before step {step} at {time.time():.3f}",
          flush=True)
    if args.hang_how == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)  # sentinel-test: stop
    time.sleep(3600)  # sentinel-test: sleep


def main() -> int:
    args = parse()
    use_cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % max(1, torch.cuda.device_count())}"
                          if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    beat = heartbeat_function()
    expected = world * (world + 1) / 2
    if rank == 0:
        print(f"{world} ranks ready ({dist.get_backend()})", flush=True)
    start = time.perf_counter()
    for step in range(args.steps):
        time.sleep(args.step_seconds)
        fault(args, rank, step)
        t = torch.full((4,), float(rank + 1), device=device)
        dist.all_reduce(t)  # sentinel-test: all_reduce
        assert t[0].item() == expected, f"step {step}: sum {t[0].item()} != {expected}"
        if args.heartbeat_until is None or step < args.heartbeat_until:
            beat(step=step)
        if rank == 0 and step >= args.quiet_until:
            print(f"step {step}: all_reduce sum {t[0].item():.0f} over {world} ranks", flush=True)
    if rank == 0:
        print(f"done: {args.steps} steps on {world} ranks in {time.perf_counter() - start:.3f} s",
              flush=True)
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
