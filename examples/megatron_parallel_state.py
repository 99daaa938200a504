"""megatron-core's parallel_state across the job's ranks: TP, PP and DP groups, checked and printed.

    hpcjobs submit megatron --nodes 3 --gpus-per-node 0 --ntasks-per-node 2 \
        --tensor-parallel-size 2 -- examples/megatron_parallel_state.py

Every rank initialises torch.distributed from the launcher's env:// variables (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT), then ``parallel_state.initialize_model_parallel``; it checks its groups
against Megatron's documented layout (order tp-cp-ep-dp-pp: TP groups are consecutive ranks, so
they stay inside a node when tasks are placed node by node, and DP groups stride by TP x CP),
runs one all_reduce in each group, and rank 0 prints every rank's membership.

Runs on GPUs (NCCL) and, for the sandbox, on CPUs over gloo: megatron-core 0.16 needs no change
for that (docs/megatron.md, "parallel_state without CUDA"). TP/PP/CP come from the command line
or from HPCJOBS_TP_SIZE / HPCJOBS_PP_SIZE / HPCJOBS_CP_SIZE, which the megatron job sets from its
plan.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys


def expected_groups(rank: int, world: int, tp: int, pp: int, cp: int = 1) -> dict[str, list[int]]:
    """Megatron's groups for order tp-cp-ep-dp-pp (EP 1): rank = tp_i + TP*(cp_i + CP*(dp_i + DP*pp_i))."""
    dp = world // (tp * pp * cp)
    tp_i, rest = rank % tp, rank // tp
    cp_i, rest = rest % cp, rest // cp
    dp_i, pp_i = rest % dp, rest // dp

    def r(t, c, d, p):
        return t + tp * (c + cp * (d + dp * p))

    return {
        "tp": [r(t, cp_i, dp_i, pp_i) for t in range(tp)],
        "dp": [r(tp_i, cp_i, d, pp_i) for d in range(dp)],
        "pp": [r(tp_i, cp_i, dp_i, p) for p in range(pp)],
    }


def main() -> int:
    env = os.environ
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tensor-model-parallel-size", type=int, default=int(env.get("HPCJOBS_TP_SIZE", 1)))
    p.add_argument("--pipeline-model-parallel-size", type=int, default=int(env.get("HPCJOBS_PP_SIZE", 1)))
    p.add_argument("--context-parallel-size", type=int, default=int(env.get("HPCJOBS_CP_SIZE", 1)))
    a = p.parse_args()
    tp, pp, cp = a.tensor_model_parallel_size, a.pipeline_model_parallel_size, a.context_parallel_size

    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    if cuda:
        # hpcjobs.launch may show each task only its own GPU: index modulo what is visible.
        torch.cuda.set_device(int(env.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    dist.init_process_group(backend="nccl" if cuda else "gloo", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()

    from megatron.core import parallel_state as ps

    # create_gloo_process_groups (default True) also builds Megatron's gloo DP groups: on CPU every
    # group is gloo anyway.
    ps.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
                                 context_parallel_size=cp)
    got = {
        "tp": dist.get_process_group_ranks(ps.get_tensor_model_parallel_group()),
        "dp": dist.get_process_group_ranks(ps.get_data_parallel_group()),
        "pp": dist.get_process_group_ranks(ps.get_pipeline_model_parallel_group()),
    }
    want = expected_groups(rank, world, tp, pp, cp)
    problems = [f"{k.upper()} group {got[k]} != expected {want[k]}" for k in want if got[k] != want[k]]
    if ps.get_tensor_model_parallel_rank() != want["tp"].index(rank):
        problems.append("tensor_model_parallel_rank disagrees with the group")

    # One real collective per group: the sum of the member ranks.
    device = torch.device("cuda") if cuda else torch.device("cpu")
    sums = {}
    for name, group in (("tp", ps.get_tensor_model_parallel_group()),
                        ("dp", ps.get_data_parallel_group())):
        t = torch.tensor([float(rank)], device=device)
        dist.all_reduce(t, group=group)
        sums[name] = int(t.item())
        if sums[name] != sum(want[name]):
            problems.append(f"all_reduce over the {name.upper()} group gave {sums[name]}, "
                            f"expected {sum(want[name])}")

    host = env.get("SLURMD_NODENAME") or socket.gethostname()
    line = (f"rank {rank} on {host}: tp_rank {ps.get_tensor_model_parallel_rank()} "
            f"dp_rank {ps.get_data_parallel_rank()} pp_rank {ps.get_pipeline_model_parallel_rank()}; "
            f"TP group {got['tp']} DP group {got['dp']} PP group {got['pp']}; "
            f"all_reduce TP {sums['tp']} DP {sums['dp']}; {'ok' if not problems else '; '.join(problems)}")
    lines = [None] * world
    dist.all_gather_object(lines, (line, host, not problems))
    if rank == 0:
        for text, _, _ in lines:
            print(text)
        hosts = list(dict.fromkeys(h for _, h, _ in lines))
        ok = all(good for _, _, good in lines)
        dp = world // (tp * pp * cp)
        print(f"megatron parallel_state: TP {tp} x PP {pp} x CP {cp} x DP {dp} = {world} ranks on "
              f"{len(hosts)} node(s) ({', '.join(hosts)}), backend {dist.get_backend()}: "
              f"{'groups ok' if ok else 'GROUPS WRONG'}; CUDA_DEVICE_MAX_CONNECTIONS="
              f"{env.get('CUDA_DEVICE_MAX_CONNECTIONS', 'unset')}", flush=True)
    ok = all(good for _, _, good in lines)
    ps.destroy_model_parallel()
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    # Leave without C++ static destructors: torch 2.13's gloo can abort in one at interpreter
    # exit ("terminate called without an active exception"), failing a finished job
    # (hpcjobs/shutdown.py says more). Without hpcjobs (torchrun, say): the ordinary exit.
    try:
        from hpcjobs import finish
    except ImportError:
        finish = sys.exit
    finish(main())
