"""MPI ping-pong between two ranks: latency (osu_latency style) and bandwidth (osu_bw style).

    srun --mpi=pmix -N2 --ntasks-per-node=1 python -m hpcjobs.bench.pingpong
    hpcjobs submit bench-mpi --nodes 2

- latency: rank 0 sends, rank 1 sends back; one-way latency = half the round trip. Each round
  trip is timed on its own and the median reported (osu_latency reports the mean).
- bandwidth: rank 0 posts a window of non-blocking sends, rank 1 the matching receives, then a
  4-byte acknowledgement; bandwidth = window x size / time, median over windows. osu_bw does
  the same with a window of 64 and reports MB/s (10^6); here GB/s (10^9), as nccl-tests.

Host memory buffers (bytearray; no numpy needed). Ranks beyond the first two wait at the end:
the test is between ranks 0 and 1 (put them on different nodes to measure the fabric).
"""

from __future__ import annotations

import argparse
import os
import sys

from hpcjobs.bench import report

ACK_TAG, DATA_TAG = 2, 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hpcjobs.bench.pingpong",
                                description=__doc__.splitlines()[0])
    p.add_argument("--max-size", default="4M", help="largest message (bytes; K/M/G)")
    p.add_argument("--iters", type=int, default=1000,
                   help="round trips per size up to 8K (larger sizes: a tenth, at least 20)")
    p.add_argument("--warmup", type=int, default=50, help="untimed round trips first (likewise)")
    p.add_argument("--window", type=int, default=64, help="messages in flight for bandwidth")
    p.add_argument("--bw-iters", type=int, default=50, help="timed windows per size (large: a fifth)")
    report.add_link_args(p, "bench-mpi")
    return p.parse_args(argv)


LARGE = 8192  # osu's LARGE_MESSAGE_SIZE: fewer iterations above it


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        hi = report.parse_size(args.max_size)
    except ValueError as e:
        print(f"bench-mpi: --max-size: {e}", file=sys.stderr)
        return 2
    link_source = report.link_source(args)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if size < 2:
        print(f"bench-mpi: needs 2 ranks, this one sees {size}. Start it with 2 tasks (srun -n2 / "
              "--nodes 2); if every rank says so, srun's --mpi plugin does not match the MPI "
              "library (Open MPI: --mpi=pmix, MPICH: --mpi=pmi2)", file=sys.stderr)
        return 2
    hosts = comm.allgather(MPI.Get_processor_name())
    peers = hosts[:2]
    nnodes = len(set(peers))
    out = print if rank == 0 else (lambda *a, **k: None)
    lib = MPI.Get_library_version().splitlines()[0].split(",")[0].strip()  # "Open MPI v4.1.4"
    out(f"# hpcjobs bench-mpi: {lib} (mpi4py {_mpi4py_version()}); ping-pong rank 0 on {peers[0]} "
        f"<-> rank 1 on {peers[1]} ({'same node' if nnodes == 1 else 'two nodes'})"
        + (f"; ranks 2..{size - 1} idle" if size > 2 else ""), flush=True)
    out(f"# link: {args.link_gbps:g} Gb/s {args.fabric or '?'} (from {link_source})", flush=True)
    for line in report.pingpong_table([]):
        out(line, flush=True)

    sizes = [0] + report.sweep(1, hi, 2)
    buf = bytearray(max(sizes))
    rows = []
    # Ranks 0 and 1 on a communicator of their own: their barriers must not wait for idle ranks.
    pair = comm.Split(0 if rank < 2 else MPI.UNDEFINED, rank)
    if rank < 2:
        peer = 1 - rank
        for n in sizes:
            large = n > LARGE
            iters = max(20, args.iters // 10) if large else args.iters
            warm = max(2, args.warmup // 10) if large else args.warmup
            lat = _latency(MPI, pair, rank, peer, buf, n, iters, warm)
            bw = None
            if n > 0:
                bwi = max(5, args.bw_iters // 5) if large else args.bw_iters
                bw = _bandwidth(MPI, pair, rank, peer, buf, n, bwi, args.window)
            row = {"size": n, "latency_us": lat * 1e6, "bandwidth": bw,
                   "iters": iters, "bw_iters": None if n == 0 else bwi}
            rows.append(row)
            out(report.pingpong_line(row), flush=True)
        pair.Free()
    comm.Barrier()
    if rank == 0:
        last = rows[-1]
        v = report.verdict(last["bandwidth"], last["size"], args.link_gbps, nnodes, args.fabric,
                           what="bandwidth")
        small = rows[0]["latency_us"]
        out(f"# latency at 0 B: {small:.2f} us (RDMA: ~1 us; TCP: tens of us)")
        out(f"# verdict: {v.text}", flush=True)
        if args.out:
            result = report.Result("pingpong", rows, v, {
                "mpi": lib, "mpi4py": _mpi4py_version(), "world_size": size, "hosts": hosts,
                "nnodes": nnodes, "window": args.window, "latency_0b_us": small,
                "statistic": "median over round trips (latency) and windows (bandwidth)",
                "link_gbps": args.link_gbps, "fabric": args.fabric,
                "job_id": os.environ.get("SLURM_JOB_ID")})
            jpath, ppath = report.output_paths(args.out, args.name)
            png = report.write_png(ppath, result, y="bandwidth", ylabel="bandwidth",
                                   title=f"MPI ping-pong {peers[0]} <-> {peers[1]}")
            result.meta["png"] = png
            report.write_json(jpath, result)
            out(f"# results: {jpath}" + (f", {png}" if png else " (no PNG: matplotlib not installed)"),
                flush=True)
    return 0


def _latency(MPI, comm, rank: int, peer: int, buf: bytearray, n: int, iters: int, warm: int) -> float:
    """Median one-way latency in seconds: half of each round trip."""
    msg = [memoryview(buf)[:n], MPI.BYTE]
    comm.Barrier()
    times = []
    wtime = MPI.Wtime
    for i in range(warm + iters):
        t0 = wtime()
        if rank == 0:
            comm.Send(msg, dest=peer, tag=DATA_TAG)
            comm.Recv(msg, source=peer, tag=DATA_TAG)
        else:
            comm.Recv(msg, source=peer, tag=DATA_TAG)
            comm.Send(msg, dest=peer, tag=DATA_TAG)
        if i >= warm:
            times.append((wtime() - t0) / 2)
    return report.median(times)


def _bandwidth(MPI, comm, rank: int, peer: int, buf: bytearray, n: int, iters: int,
               window: int) -> float:
    """GB/s from rank 0 to rank 1: a window of Isend/Irecv, then an ack; median over windows."""
    msg = [memoryview(buf)[:n], MPI.BYTE]
    ack = bytearray(4)
    comm.Barrier()
    times = []
    for i in range(iters + 1):  # the first window warms up
        t0 = MPI.Wtime()
        if rank == 0:
            MPI.Request.Waitall([comm.Isend(msg, dest=peer, tag=DATA_TAG) for _ in range(window)])
            comm.Recv([ack, MPI.BYTE], source=peer, tag=ACK_TAG)
        else:
            MPI.Request.Waitall([comm.Irecv(msg, source=peer, tag=DATA_TAG) for _ in range(window)])
            comm.Send([ack, MPI.BYTE], dest=peer, tag=ACK_TAG)
        if i:
            times.append(MPI.Wtime() - t0)
    return report.algbw(n * window, report.median(times))


def _mpi4py_version() -> str:
    import mpi4py

    return mpi4py.__version__


if __name__ == "__main__":
    sys.exit(main())
