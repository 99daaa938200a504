"""All-reduce sweep with torch.distributed, in nccl-tests' columns, with a verdict.

    srun python -m hpcjobs.launch -- python -m hpcjobs.bench.allreduce --max-size 1G
    hpcjobs submit bench-allreduce --nodes 3

One process per GPU (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT and LOCAL_RANK from
hpcjobs.launch). NCCL on GPUs, gloo on CPU-only nodes. For each size: warm-up, then each
iteration timed on its own (CUDA events on GPUs; barrier + perf_counter on CPU), the median
per rank, and the slowest rank's median reported (a collective ends when its last rank does).

The timed loop is what a PyTorch program pays, host overhead included: per-call overhead that
nccl-tests hides by queueing calls back to back shows up here at small sizes.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from hpcjobs.bench import report

DTYPES = {"float": ("float32", 4), "half": ("float16", 2), "bfloat16": ("bfloat16", 2)}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hpcjobs.bench.allreduce",
                                description=__doc__.splitlines()[0])
    p.add_argument("--min-size", default="1K", help="smallest message, bytes (K/M/G = 2^10/20/30)")
    p.add_argument("--max-size", default=None,
                   help="largest message (default: 1G with NCCL, 16M with gloo on CPU)")
    p.add_argument("--step-factor", type=int, default=2, help="multiply the size by this each step")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per size (default 20 "
                   "with NCCL, 10 with gloo)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 5/2)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float", help="element type")
    p.add_argument("--backend", choices=("auto", "nccl", "gloo"), default="auto")
    report.add_link_args(p, "bench-allreduce")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        lo = report.parse_size(args.min_size)
        hi_text = args.max_size
    except ValueError as e:
        print(f"bench-allreduce: --min-size: {e}", file=sys.stderr)
        return 2
    link_source = report.link_source(args)

    import torch
    import torch.distributed as dist

    use_cuda = args.backend == "nccl" or (args.backend == "auto" and torch.cuda.is_available())
    backend = "nccl" if use_cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        # hpcjobs.launch or Slurm may already have narrowed CUDA_VISIBLE_DEVICES to one GPU.
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    try:
        hi = report.parse_size(hi_text or ("1G" if use_cuda else "16M"))
    except ValueError as e:
        print(f"bench-allreduce: --max-size: {e}", file=sys.stderr)
        return 2
    iters = args.iters or (20 if use_cuda else 10)
    warmup = args.warmup if args.warmup is not None else (5 if use_cuda else 2)
    tname, esize = DTYPES[args.dtype]
    dtype = getattr(torch, tname)
    try:
        sizes = report.sweep(lo, hi, args.step_factor, align=esize)
    except ValueError as e:
        print(f"bench-allreduce: {e}", file=sys.stderr)
        return 2

    dist.init_process_group(backend=backend, init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    hosts: list = [None] * world
    dist.all_gather_object(hosts, socket.gethostname())
    nodes = list(dict.fromkeys(hosts))
    out = print if rank == 0 else (lambda *a, **k: None)

    versions = f"torch {torch.__version__} {backend}"
    if use_cuda:
        versions += " " + ".".join(map(str, torch.cuda.nccl.version()))
        versions += f", {torch.cuda.get_device_name(device)}"
    out(f"# hpcjobs bench-allreduce: {versions}; {world} ranks on {len(nodes)} node(s) "
        f"({', '.join(nodes)}); {tname} sum; warm-up {warmup}, median of {iters}", flush=True)
    out(f"# link: {args.link_gbps:g} Gb/s {args.fabric or '?'} (from {link_source})", flush=True)
    for line in report.allreduce_table([]):
        out(line, flush=True)

    # One buffer of the largest size; each size uses a prefix of it (as nccl-tests does).
    # Zeros: repeated in-place sums stay finite, and the speed does not depend on the values.
    buf = torch.zeros(hi // esize, dtype=dtype, device=device)
    rows = []
    for size in sizes:
        t = buf[: size // esize]
        for _ in range(warmup):
            dist.all_reduce(t)
        times = _time_gpu(torch, dist, t, iters) if use_cuda else _time_cpu(dist, t, iters)
        mine = report.median(times)
        slowest = torch.tensor([mine], dtype=torch.float64, device=device)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        sec = float(slowest.item())
        alg = report.algbw(size, sec)
        row = {"size": size, "count": size // esize, "type": args.dtype, "redop": "sum",
               "time_us": sec * 1e6, "algbw": alg, "busbw": report.allreduce_busbw(alg, world)}
        rows.append(row)
        out(report.allreduce_line(row), flush=True)

    ok, expect = _check(torch, dist, buf, rank, world)
    last = rows[-1]
    v = report.verdict(last["busbw"], last["size"], args.link_gbps, len(nodes), args.fabric)
    avg = sum(r["busbw"] for r in rows) / len(rows)
    out(f"# Avg bus bandwidth    : {avg:.3f}")
    out(f"# check: all_reduce of rank+1 over {world} ranks = {expect:g} everywhere at "
        f"{report.human(hi)}: {'ok' if ok else 'WRONG'}")
    out(f"# verdict: {v.text}", flush=True)
    if rank == 0 and args.out:
        result = report.Result("allreduce", rows, v, {
            "backend": backend, "versions": versions, "world_size": world, "nnodes": len(nodes),
            "hosts": hosts, "dtype": tname, "op": "sum", "iters": iters, "warmup": warmup,
            "timing": "cuda events per call" if use_cuda else "barrier + perf_counter per call",
            "statistic": "max over ranks of each rank's median",
            "avg_busbw": avg, "check_ok": ok, "link_gbps": args.link_gbps, "fabric": args.fabric,
            "job_id": os.environ.get("SLURM_JOB_ID")})
        jpath, ppath = report.output_paths(args.out, args.name)
        png = report.write_png(ppath, result, y="busbw", ylabel="busbw",
                               title=f"all_reduce {tname}: {world} ranks on {len(nodes)} node(s), "
                                     f"{backend}")
        result.meta["png"] = png
        report.write_json(jpath, result)
        out(f"# results: {jpath}" + (f", {png}" if png else " (no PNG: matplotlib not installed)"),
            flush=True)
    dist.destroy_process_group()
    return 0 if ok else 1


def _time_gpu(torch, dist, t, iters: int) -> list[float]:
    """Seconds per call from CUDA events around each call, all queued, one sync at the end."""
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    torch.cuda.synchronize()
    for s, e in zip(starts, ends):
        s.record()
        dist.all_reduce(t)
        e.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]


def _time_cpu(dist, t, iters: int) -> list[float]:
    """Seconds per call: ranks start together (barrier), each times its own call."""
    from time import perf_counter

    times = []
    for _ in range(iters):
        dist.barrier()
        t0 = perf_counter()
        dist.all_reduce(t)
        times.append(perf_counter() - t0)
    return times


def _check(torch, dist, buf, rank: int, world: int) -> tuple[bool, float]:
    """The result must be right, not only fast: sum of rank+1 over all ranks, everywhere."""
    buf.fill_(rank + 1)
    dist.all_reduce(buf)
    expect = world * (world + 1) / 2
    ok = bool((buf == expect).all().item())
    flag = torch.tensor([0 if ok else 1], device=buf.device)
    dist.all_reduce(flag)
    return int(flag.item()) == 0, expect


if __name__ == "__main__":
    sys.exit(main())
