"""Multi-process JAX: every process reports itself, a psum over all devices of all processes is
checked, then a few steps of a tiny data-parallel training show the loss falling.

    hpcjobs submit jax --nodes 3 --wait -- examples/jax_allreduce.py
    hpcjobs submit jax --nodes 3 --mesh data=3 -- examples/jax_allreduce.py --steps 8
    sbatch job_templates/jax.sbatch examples/jax_allreduce.py

Runs under hpcjobs.launch, one process per GPU (one per node on CPU-only nodes):
JAX_COORDINATOR_ADDRESS is the first node's fast-network address and the step's port, and
JAX_NUM_PROCESSES / JAX_PROCESS_ID are the step's task count and rank, all from Slurm.
``jax.distributed.initialize`` gets them explicitly: left alone it would take SLURM_NTASKS
(the job's tasks, not the step's). On CPU the processes all-reduce through gloo
(``jax_cpu_collectives_implementation``); on GPUs through NCCL. The mesh is one "data" axis over
every device unless HPCJOBS_JAX_MESH (the kind's --mesh, e.g. ``data=2,model=2``) says otherwise.
"""

import argparse
import os
import socket
import sys
import time

import jax

# Before anything touches a backend: cross-process collectives on CPU go through gloo.
jax.config.update("jax_cpu_collectives_implementation", "gloo")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6, help="training steps")
    p.add_argument("--batch", type=int, default=64, help="examples per device per step")
    p.add_argument("--lr", type=float, default=0.3)
    p.add_argument("--bench-mb", type=float, default=0.0,
                   help="also time a psum of this many MB per device (GPU figures)")
    return p.parse_args()


def initialize() -> str:
    """jax.distributed.initialize from the launcher's variables; returns the coordinator."""
    addr = os.environ.get("JAX_COORDINATOR_ADDRESS")
    n = os.environ.get("JAX_NUM_PROCESSES")
    pid = os.environ.get("JAX_PROCESS_ID")
    if not (addr and n and pid):
        sys.exit("jax_allreduce: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID "
                 "are not set: run it under srun python -m hpcjobs.launch (hpcjobs submit jax)")
    # local_device_ids stays None: under Slurm JAX then takes device SLURM_LOCALID of the GPUs
    # the task sees, or JAX_LOCAL_DEVICE_IDS (the launcher sets 0 when a task sees one GPU).
    jax.distributed.initialize(coordinator_address=addr, num_processes=int(n), process_id=int(pid))
    return addr


def mesh_shape(n_devices: int) -> dict[str, int]:
    """Axis name -> size: HPCJOBS_JAX_MESH ("data=2,model=2"), else one "data" axis."""
    text = os.environ.get("HPCJOBS_JAX_MESH", "").strip()
    if not text:
        return {"data": n_devices}
    shape = {}
    for part in text.split(","):
        name, _, size = part.partition("=")
        shape[name.strip()] = int(size)
    total = 1
    for size in shape.values():
        total *= size
    if total != n_devices:
        print(f"jax_allreduce: HPCJOBS_JAX_MESH={text} holds {total} devices but the job has "
              f"{n_devices}: give a shape whose sizes multiply to {n_devices}", file=sys.stderr)
        sys.exit(2)
    return shape


def shard_map_fn():
    """shard_map: jax.shard_map in current releases, jax.experimental.shard_map before."""
    try:
        return jax.shard_map
    except AttributeError:
        from jax.experimental.shard_map import shard_map

        return shard_map


def main() -> int:
    args = parse()
    t0 = time.perf_counter()
    coordinator = initialize()
    t_init = time.perf_counter() - t0
    import numpy as np
    import jax.numpy as jnp
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    me, nproc = jax.process_index(), jax.process_count()
    host = socket.gethostname()
    print(f"process {me} of {nproc} on {host}: local devices {jax.local_device_count()}, "
          f"global devices {jax.device_count()}, backend {jax.default_backend()}, "
          f"coordinator {coordinator}", flush=True)

    shape = mesh_shape(jax.device_count())
    axes = tuple(shape)
    mesh = Mesh(np.array(jax.devices()).reshape(tuple(shape.values())), axes)

    # psum across every device of every process: each device contributes its process index + 1.
    local = np.array([me + 1.0] * jax.local_device_count(), dtype=np.float32)
    spec = P(axes)  # one element per device, over all axes of the mesh
    x = multihost_utils.host_local_array_to_global_array(local, mesh, spec)
    psum = jax.jit(shard_map_fn()(lambda v: jax.lax.psum(v, axes), mesh=mesh,
                                  in_specs=spec, out_specs=P()))
    t0 = time.perf_counter()
    total = float(np.asarray(psum(x).addressable_data(0))[0])
    t_psum = time.perf_counter() - t0
    expected = float(sum(d.process_index + 1 for d in jax.devices()))
    ok = abs(total - expected) < 1e-6
    print(f"process {me}: psum over {jax.device_count()} devices of (process index + 1) = "
          f"{total:g} (expected {expected:g}): {'OK' if ok else 'WRONG'}", flush=True)

    if args.bench_mb > 0:
        bench(args.bench_mb, mesh, axes, me)

    # Data parallel: a linear model, parameters replicated, the batch split over the first
    # mesh axis; jit over the global mesh turns the mean loss's gradient into an all-reduce.
    dim = 8
    batch_axis = axes[0]
    rng = np.random.default_rng(1234 + me)  # each process its own data
    w_true = np.arange(1.0, dim + 1.0, dtype=np.float32) / dim
    local_n = args.batch * jax.local_device_count()
    xs = rng.normal(size=(args.steps, local_n, dim)).astype(np.float32)
    ys = xs @ w_true + 0.01 * rng.normal(size=(args.steps, local_n)).astype(np.float32)
    data = NamedSharding(mesh, P(batch_axis))
    replicated = NamedSharding(mesh, P())

    def loss_fn(w, xb, yb):
        return jnp.mean((xb @ w - yb) ** 2)

    @jax.jit
    def step(w, xb, yb):
        loss, grad = jax.value_and_grad(loss_fn)(w, xb, yb)
        return w - args.lr * grad, loss

    w = jax.device_put(jnp.zeros(dim, jnp.float32), replicated)
    t_steps = 0.0
    for i in range(args.steps):
        t0 = time.perf_counter()
        xb = jax.make_array_from_process_local_data(data, xs[i])
        yb = jax.make_array_from_process_local_data(data, ys[i])
        w, loss = step(w, xb, yb)
        loss = float(loss)  # waits for the step
        if i > 0:  # the first step compiles
            t_steps += time.perf_counter() - t0
        if me == 0:
            print(f"step {i + 1}/{args.steps} loss {loss:.6f} "
                  f"(global batch {xb.shape[0]})", flush=True)
    multihost_utils.sync_global_devices("done")
    if me == 0:
        per = f", {t_steps / (args.steps - 1) * 1e3:.2f} ms each" if args.steps > 1 else ""
        print(f"times: initialize {t_init:.2f} s, first psum {t_psum:.2f} s (with compile), "
              f"steps 2-{args.steps} {t_steps:.3f} s{per}", flush=True)
    jax.distributed.shutdown()
    return 0 if ok else 1


def bench(mb: float, mesh, axes, me: int) -> None:
    """Time a float32 psum of ``mb`` MB per device (median of 10 after a warm-up)."""
    import numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import PartitionSpec as P

    n = max(1, int(mb * 1e6 / 4))
    local = np.ones((jax.local_device_count() * n,), dtype=np.float32)
    x = multihost_utils.host_local_array_to_global_array(local, mesh, P(axes))
    f = jax.jit(shard_map_fn()(lambda v: jax.lax.psum(v, axes), mesh=mesh,
                               in_specs=P(axes), out_specs=P(axes)))
    f(x).block_until_ready()
    times = []
    for _ in range(10):
        t = time.perf_counter()
        f(x).block_until_ready()
        times.append(time.perf_counter() - t)
    t = sorted(times)[len(times) // 2]
    d = jax.device_count()
    bus = (n * 4 / t) * 2 * (d - 1) / d if d > 1 else 0.0  # nccl-tests' busbw for all-reduce
    if me == 0:
        print(f"psum {n * 4 / 1e6:.1f} MB per device over {d} devices: {t * 1e3:.3f} ms, "
              f"algbw {n * 4 / t / 1e9:.2f} GB/s, busbw {bus / 1e9:.2f} GB/s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
