"""The preflight's cross-node part: one tiny all-reduce over the job's own backend and fabric.

- torch (NCCL where this task sees a GPU, else gloo): a TCPStore on MASTER_ADDR:MASTER_PORT
  (set by hpcjobs.launch) that every rank joins by writing its node name, so that rank 0 can say
  *which* nodes did not come; then the process group on that store.
- MPI (the mpi and bench-mpi kinds): mpi4py's COMM_WORLD under srun --mpi (PMIx or PMI-2).

Then, on both: the sum of rank+1 must be n(n+1)/2 everywhere; each node's clock offset to rank
0 (one ping-pong each, offset = t_peer - (t_send + t_back) / 2, error at most half the round
trip); the bus bandwidth of a mid-size all-reduce (nccl-tests' busbw, hpcjobs.bench.report)
judged against the profile's link rate; for NCCL the transport it chose per peer, from its own
log (NCCL_DEBUG=INFO, NCCL_DEBUG_SUBSYS=INIT,NET and NCCL_DEBUG_FILE set for this process only:
the program keeps the job's NCCL_DEBUG).

A watchdog ends the task when the whole part has not finished within the deadline, reporting
the phase it was stuck in: a collective that hangs is the finding, not a hung job.
"""

from __future__ import annotations

import glob
import os
import socket
import threading
import time

from hpcjobs.bench import report
from hpcjobs.outcome import FAIL, PASS, SKIP, WARN
from hpcjobs.runners.preflight_lines import FAILED_EXIT, emit

MID_SIZE = 8 << 20  # bytes of the timed all-reduce: mid-size, as NCCL and gloo see it
WARMUP, ITERS = 2, 5
CLOCK_WARN, CLOCK_FAIL = 0.1, 2.0  # seconds of offset to rank 0


class Watchdog:
    """Ends the process with a report when the deadline passes (a hung collective)."""

    def __init__(self, deadline: float, base: dict) -> None:
        self.phase = "start"
        self.base = base
        self.t = threading.Timer(deadline, self._fire, args=(deadline,))
        self.t.daemon = True
        self.t.start()

    def _fire(self, deadline: float) -> None:
        emit({**self.base, "phase": "collective", "status": FAIL, "t": time.time(),
              "stuck": self.phase, "deadline": True,
              "summary": f"the cross-node check did not finish within {deadline:g} s "
                         f"(stuck in {self.phase})"})
        os._exit(FAILED_EXIT)

    def cancel(self) -> None:
        self.t.cancel()


def run(env, *, node: str, rank: int, deadline: float, log_dir: str, attempt: str, info: dict,
        mpi: bool) -> dict:
    base = {"node": node, "rank": rank}
    dog = Watchdog(deadline, base)
    try:
        if mpi:
            return _mpi(env, dog, info)
        return _torch(env, dog, info, node, rank, deadline, log_dir, attempt)
    except Exception as e:  # a failing collective is the finding
        # error: raised in this process (its own fault, unless every node raised).
        return {"status": FAIL, "stuck": dog.phase, "error": True,
                "summary": f"{type(e).__name__} in {dog.phase}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
    finally:
        dog.cancel()


def clock_offset(t_send: float, t_peer: float, t_back: float) -> tuple[float, float]:
    """(offset of the peer's clock, its uncertainty): NTP's one-exchange estimate."""
    return t_peer - (t_send + t_back) / 2, (t_back - t_send) / 2


def clock_status(offsets: dict[str, float]) -> tuple[str, str]:
    worst = max(offsets.items(), key=lambda kv: abs(kv[1]), default=(None, 0.0))
    if worst[0] is None:
        return SKIP, "one node: no clock to compare"
    node, off = worst
    text = f"largest clock offset to rank 0: {off * 1e3:+.1f} ms ({node})"
    if abs(off) >= CLOCK_FAIL:
        return FAIL, text
    if abs(off) >= CLOCK_WARN:
        return WARN, text
    return PASS, text


def bandwidth(seconds: float, size: int, world: int, nnodes: int, info: dict,
              what: str = "busbw") -> dict:
    alg = report.algbw(size, seconds)
    bus = report.allreduce_busbw(alg, world)
    v = report.verdict(bus, size, float(info.get("rate_gbps") or 0.0), nnodes,
                       str(info.get("fabric") or ""), what=what)
    return {"size": size, "time_us": round(seconds * 1e6, 1), "algbw": round(alg, 4),
            "busbw": round(bus, 4), "verdict": v.level, "verdict_text": v.text}


# --- torch -------------------------------------------------------------------------------------

def _torch(env, dog: Watchdog, info: dict, node: str, rank: int, deadline: float, log_dir: str,
           attempt: str) -> dict:
    from datetime import timedelta

    world = int(env["WORLD_SIZE"])
    dog.phase = "import torch"
    import torch
    import torch.distributed as dist

    gpu = torch.cuda.is_available()
    backend = "nccl" if gpu else "gloo"
    nccl_log = None
    if gpu:
        # NCCL's own init log, for this process only (the program keeps the job's NCCL_DEBUG).
        os.makedirs(log_dir, mode=0o700, exist_ok=True)
        nccl_log = os.path.join(log_dir, f"nccl-{attempt}-{node}-{rank}.log")
        os.environ.update(NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT,NET",
                          NCCL_DEBUG_FILE=nccl_log)
        torch.cuda.set_device(int(env.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    addr, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
    left = max(1.0, deadline - 1.0)
    dog.phase = f"rendezvous at {addr}:{port}"
    t_join = time.monotonic()
    try:
        store = dist.TCPStore(addr, port, world, rank == 0, timeout=timedelta(seconds=left),
                              wait_for_workers=False)
    except Exception as e:
        return {"status": FAIL, "stuck": dog.phase, "unreachable": True,
                "summary": f"cannot reach rank 0's rendezvous {addr}:{port} from {node}: "
                           f"{str(e).splitlines()[0][:200]}"}
    store.set(f"hpcjobs/preflight/{rank}", node)
    if rank == 0:
        keys = [f"hpcjobs/preflight/{r}" for r in range(world)]
        while not store.check(keys) and time.monotonic() - t_join < left * 0.8:
            time.sleep(0.05)
        missing = [r for r, k in enumerate(keys) if not store.check([k])]
        if missing:
            return {"status": FAIL, "stuck": "rendezvous", "missing_ranks": missing,
                    "summary": f"rank(s) {', '.join(map(str, missing))} did not reach the "
                               f"rendezvous {addr}:{port} within {left * 0.8:.0f} s"}
    dog.phase = f"init_process_group({backend})"
    dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                            timeout=timedelta(seconds=left))
    device = torch.device("cuda") if gpu else torch.device("cpu")
    out: dict = {"backend": backend, "world": world}

    dog.phase = "all_reduce (sum of rank+1)"
    t = torch.full((1,), float(rank + 1), device=device)
    dist.all_reduce(t)
    want = world * (world + 1) / 2
    ok = float(t.item()) == want
    hosts: list = [None] * world
    dog.phase = "all_gather (host names)"
    dist.all_gather_object(hosts, node)
    nnodes = len(dict.fromkeys(hosts))
    out.update(hosts=hosts, sum_ok=ok, sum=float(t.item()), expected=want)

    dog.phase = "clock offset"
    out["clock"] = _torch_clock(torch, dist, device, rank, world, hosts)

    dog.phase = f"all_reduce of {report.human(MID_SIZE)}"
    out["bandwidth"] = _torch_bandwidth(torch, dist, device, gpu, world, nnodes, info)

    if nccl_log:
        out["nccl"] = _nccl_truth(env, glob_logs(nccl_log), rank, hosts, info)
    else:
        iface = env.get("GLOO_SOCKET_IFNAME") or "the default route's interface"
        out["transport"] = f"gloo/TCP over {iface}"
    dog.phase = "destroy_process_group"
    dist.destroy_process_group()
    out["status"] = PASS if ok else FAIL
    if not ok:
        out["summary"] = f"all_reduce of rank+1 gave {out['sum']:g}, not {want:g}"
    return out


def glob_logs(path: str) -> list[str]:
    return sorted(glob.glob(path) + glob.glob(path + ".*"))


def _torch_clock(torch, dist, device, rank: int, world: int, hosts: list) -> dict:
    offsets, errors = {}, {}
    buf = torch.zeros(1, dtype=torch.float64, device=device)
    for peer in range(1, world):
        if rank == 0:
            t_send = time.time()
            dist.send(torch.tensor([t_send], dtype=torch.float64, device=device), peer)
            dist.recv(buf, peer)
            t_back = time.time()
            off, err = clock_offset(t_send, float(buf.item()), t_back)
            offsets[hosts[peer]], errors[hosts[peer]] = off, err
        elif rank == peer:
            dist.recv(buf, 0)
            dist.send(torch.tensor([time.time()], dtype=torch.float64, device=device), 0)
    status, text = clock_status(offsets) if rank == 0 else (SKIP, "measured by rank 0")
    return {"offsets": {k: round(v, 6) for k, v in offsets.items()},
            "error": {k: round(v, 6) for k, v in errors.items()}, "status": status, "text": text}


def _torch_bandwidth(torch, dist, device, gpu: bool, world: int, nnodes: int, info: dict) -> dict:
    from time import perf_counter

    buf = torch.zeros(MID_SIZE // 4, dtype=torch.float32, device=device)
    for _ in range(WARMUP):
        dist.all_reduce(buf)
    times = []
    for _ in range(ITERS):
        dist.barrier()
        if gpu:
            torch.cuda.synchronize()
        t0 = perf_counter()
        dist.all_reduce(buf)
        if gpu:
            torch.cuda.synchronize()
        times.append(perf_counter() - t0)
    slowest = torch.tensor([report.median(times)], dtype=torch.float64, device=device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)  # a collective ends when its last rank does
    return bandwidth(float(slowest.item()), MID_SIZE, world, nnodes, info)


def _nccl_truth(env, paths: list[str], rank: int, hosts: list, info: dict) -> dict:
    from hpcjobs.cluster import Fabric
    from hpcjobs.launch.fabric import gpudirect, rdma_ports
    from hpcjobs.runners import fabric_truth, nccllog
    from hpcjobs.runners.checks import parse_topo, worst_path
    from hpcjobs.runners.cmd import run_command

    lines: list[str] = []
    for p in paths:
        try:
            with open(p, errors="replace") as f:
                lines += f.read().splitlines()
        except OSError:
            pass
    log = nccllog.parse(lines)
    peers = nccllog.peers(log, rank, hosts)
    root = env.get("HPCJOBS_SYSFS_ROOT") or "/"
    fab = Fabric(str(info.get("fabric") or "ethernet"), info.get("device"),
                 int(info.get("port") or 1), None, float(info.get("rate_gbps") or 0))
    path = None
    if fab.kind in ("infiniband", "roce"):
        topo = run_command(["nvidia-smi", "topo", "-m"])
        path = worst_path(parse_topo(topo.out), fab.device) if topo.rc == 0 else None
    check = fabric_truth.judge(
        peers, log, fabric=fab, env=env, ports=rdma_ports(root), has_gpu=True,
        gdr_module=gpudirect(root)[0], gpu_nic_path=path,
        ibverbs=fabric_truth.ibverbs_loadable() if fab.kind in ("infiniband", "roce") else None,
        dev_infiniband=fabric_truth.dev_infiniband_visible())
    return {"log": paths, "version": log.version, "network": log.network,
            "peers": [p.to_dict() for p in peers], "transport": nccllog.summary(peers),
            "check": check.to_dict()}


# --- MPI ---------------------------------------------------------------------------------------

def _mpi(env, dog: Watchdog, info: dict) -> dict:
    from array import array
    from time import perf_counter

    dog.phase = "MPI_Init"
    from mpi4py import MPI  # loaded without MPI_Init by the import check (rc.initialize)

    if not MPI.Is_initialized():
        MPI.Init()
    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    out: dict = {"backend": "mpi", "world": world,
                 "library": MPI.Get_library_version().replace("\0", "").splitlines()[0].strip()}
    if world != int(env.get("SLURM_NTASKS", world)):
        return {**out, "status": FAIL, "stuck": "MPI_Init",
                "summary": f"MPI sees {world} rank(s), Slurm started {env.get('SLURM_NTASKS')}: "
                           "srun's --mpi plugin does not match this MPI (PMIx for Open MPI, "
                           "PMI-2 for MPICH)"}
    dog.phase = "MPI_Allreduce (sum of rank+1)"
    total = comm.allreduce(rank + 1)
    want = world * (world + 1) // 2
    hosts = comm.allgather(socket.gethostname().split(".")[0] if not env.get("SLURMD_NODENAME")
                           else env["SLURMD_NODENAME"])
    nnodes = len(dict.fromkeys(hosts))
    out.update(hosts=hosts, sum_ok=total == want, sum=total, expected=want)

    dog.phase = "clock offset"
    offsets, errors = {}, {}
    for peer in range(1, world):
        if rank == 0:
            t_send = time.time()
            comm.send(t_send, dest=peer, tag=7)
            t_peer = comm.recv(source=peer, tag=8)
            off, err = clock_offset(t_send, t_peer, time.time())
            offsets[hosts[peer]], errors[hosts[peer]] = off, err
        elif rank == peer:
            comm.recv(source=0, tag=7)
            comm.send(time.time(), dest=0, tag=8)
    status, text = clock_status(offsets) if rank == 0 else (SKIP, "measured by rank 0")
    out["clock"] = {"offsets": {k: round(v, 6) for k, v in offsets.items()},
                    "error": {k: round(v, 6) for k, v in errors.items()}, "status": status,
                    "text": text}

    dog.phase = f"MPI_Allreduce of {report.human(MID_SIZE)}"
    send = array("f", bytes(MID_SIZE))
    recv = array("f", bytes(MID_SIZE))
    for _ in range(WARMUP):
        comm.Allreduce([send, MPI.FLOAT], [recv, MPI.FLOAT], op=MPI.SUM)
    times = []
    for _ in range(ITERS):
        comm.Barrier()
        t0 = perf_counter()
        comm.Allreduce([send, MPI.FLOAT], [recv, MPI.FLOAT], op=MPI.SUM)
        times.append(perf_counter() - t0)
    slowest = comm.allreduce(report.median(times), op=MPI.MAX)
    # "MPI ..." makes the verdict's hint name Open MPI's TCP interface, not NCCL's.
    out["bandwidth"] = bandwidth(slowest, MID_SIZE, world, nnodes, info, what="MPI busbw")
    # What Open MPI chose is not in its output without verbose MCA logging; see
    # docs/runtime-checks.md ("MPI and UCX") for why the transport is not judged here.
    out["transport"] = f"MPI ({out['library'].split(',')[0]})" + (
        f", OMPI_MCA_pml={env['OMPI_MCA_pml']}" if env.get("OMPI_MCA_pml") else "")
    out["status"] = PASS if total == want else FAIL
    if total != want:
        out["summary"] = f"MPI_Allreduce of rank+1 gave {total}, not {want}"
    dog.phase = "MPI_Finalize"
    MPI.Finalize()  # the process leaves with os._exit: no atexit finalizes it
    return out
