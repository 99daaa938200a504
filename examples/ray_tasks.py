"""A Ray driver for a cluster inside a Slurm job: tasks on every node, arrays fetched from other
nodes with ray.get, and an actor, each result checked.

    hpcjobs submit ray --nodes 3 --wait -- examples/ray_tasks.py
    sbatch --nodes=3 job_templates/ray.sbatch examples/ray_tasks.py --tasks 8

The ray kind starts the cluster (the head on the first node, one worker per other node, ports
from the job and step) and runs this on the head with RAY_ADDRESS set, so ``ray.init()``
connects to it. "Every node" is a placement group with one bundle per node (STRICT_SPREAD):
the SPREAD strategy alone may leave a node out when its first worker process starts late.
Exit 0 only if every check passed.
"""

import argparse
import os
import socket
import sys
import time

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=4, help="tasks per node")
    p.add_argument("--mb", type=float, default=8.0, help="size of each array fetched with ray.get")
    return p.parse_args()


@ray.remote
def where(i: int) -> tuple[int, str]:
    """Which node ran task i."""
    return i, ray.util.get_node_ip_address()


@ray.remote
def make_array(i: int, n: int):
    import numpy as np

    return ray.util.get_node_ip_address(), np.full(n, float(i), dtype=np.float64)


@ray.remote
class Counter:
    def __init__(self) -> None:
        self.count = 0

    def add(self, k: int) -> int:
        self.count += k
        return self.count

    def node(self) -> str:
        return ray.util.get_node_ip_address()


def main() -> int:
    args = parse()
    ray.init()  # RAY_ADDRESS: the job's own cluster
    alive = [n for n in ray.nodes() if n["Alive"]]
    cpus = ray.cluster_resources().get("CPU", 0)
    print(f"driver on {socket.gethostname()} ({ray.util.get_node_ip_address()}): Ray "
          f"{ray.__version__}, {len(alive)} nodes alive, {cpus:g} CPUs, RAY_ADDRESS="
          f"{os.environ.get('RAY_ADDRESS', '-')}", flush=True)
    ok = True

    # One bundle of 1 CPU on each node (a node's Ray gets the CPUs Slurm gave the job there).
    pg = placement_group([{"CPU": 1}] * len(alive), strategy="STRICT_SPREAD")
    ray.get(pg.ready(), timeout=120)

    def on(bundle: int):
        return PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=bundle)

    n = args.tasks * len(alive)
    results = ray.get([where.options(scheduling_strategy=on(i % len(alive))).remote(i)
                       for i in range(n)])
    ips = sorted({ip for _, ip in results})
    spread = sorted(i for i, _ in results) == list(range(n)) and len(ips) == len(alive)
    ok &= spread
    print(f"{n} tasks ran on {len(ips)} nodes: {', '.join(ips)} "
          f"(expected {len(alive)}): {'OK' if spread else 'WRONG'}", flush=True)

    # Objects made on every node, fetched by the driver through Ray's object managers.
    size = max(1, int(args.mb * 1e6 / 8))
    t = time.perf_counter()
    got = ray.get([make_array.options(scheduling_strategy=on(b)).remote(b, size)
                   for b in range(len(alive))])
    took = time.perf_counter() - t
    sums = [float(a.sum()) for _, a in got]
    want = [float(b * size) for b in range(len(alive))]
    good = sums == want
    ok &= good
    print(f"ray.get of {len(got)} arrays of {size * 8 / 1e6:.1f} MB made on "
          f"{len({ip for ip, _ in got})} nodes: sums {'match' if good else 'DIFFER'} "
          f"({took:.2f} s): {'OK' if good else 'WRONG'}", flush=True)
    remove_placement_group(pg)

    counter = Counter.remote()
    total = ray.get([counter.add.remote(k) for k in range(1, 11)])[-1]
    good = total == 55
    ok &= good
    print(f"actor Counter on {ray.get(counter.node.remote())}: sum of 1..10 = {total} "
          f"(expected 55): {'OK' if good else 'WRONG'}", flush=True)
    ray.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
