"""The preflight step: every node of the allocation checked before the program starts.

The job script (job_templates/_preflight.j2) runs it as one task per node, through
hpcjobs.launch (so with the same rank, rendezvous and fabric variables as the program), then
decides on the batch node::

    srun -N$SLURM_JOB_NUM_NODES --ntasks-per-node=1 --kill-on-bad-exit=1 \\
        python -m hpcjobs.launch -- python -m hpcjobs.runners.preflight node --dir DIR -- PROG ARGS
    python -m hpcjobs.runners.preflight decide --dir DIR --step-out FILE --step-rc RC ...

``node`` (each node): the local checks (:func:`local_checks`: the interpreter, the program file,
free and writable space in the run directory and the temporary directory, the locked-memory
limit where the job pins memory, the RDMA port where the profile says InfiniBand/RoCE, the GPUs
where the profile says the node has them, the GPU-NIC path), then the job's framework import;
one JSON line (``HPCJOBS-PREFLIGHT {...}``) on stdout; a failed node exits 3, and srun's
--kill-on-bad-exit ends the others at once. Then the cross-node part
(hpcjobs.runners.preflight_collective): a tiny all-reduce over the job's own backend (NCCL on
GPUs, gloo on CPU, MPI for the MPI kinds) within a deadline, the clock offset to rank 0, the bus
bandwidth of a mid-size message, and for NCCL the transport it really chose (fabric truth).

``decide`` (the batch node, hpcjobs.runners.preflight_policy): reads the lines, names the bad
nodes with the check, the evidence and the fix, writes the history into the run record, and
applies ``--on-bad-node``: ``fail`` ends the job (exit 78), ``exclude`` requeues it with the bad
nodes in its ExcNodeList, at most ``--retries`` times.

The checks' thresholds can be set per job: HPCJOBS_PREFLIGHT_MIN_FREE_MB (default 256),
HPCJOBS_PREFLIGHT_DEADLINE (seconds, default 60), HPCJOBS_PREFLIGHT_IMPORTS (comma-separated
modules instead of the kind's framework; empty: none).
"""

from __future__ import annotations

import os
import sys
import time

from hpcjobs.outcome import FAIL, PASS, SKIP
from hpcjobs.runners.checks import Check, human_bytes, memlock_check, rdma_check
from hpcjobs.runners.preflight_lines import FAILED_EXIT, emit

T0 = time.time()  # this process's start, near enough (after two small imports): cost figures
MIN_FREE_MB = 256
DEADLINE = 60.0
# The frameworks each kind's program imports (HPCJOBS_KIND): the import that must work on
# every node. The MPI kinds' Python programs use mpi4py; a compiled MPI program imports none.
FRAMEWORKS = {"train": ("torch",), "deepspeed": ("torch", "deepspeed"),
              "megatron": ("torch", "megatron.core"), "horovod": ("torch", "horovod.torch"),
              "vllm": ("torch", "vllm"), "bench-allreduce": ("torch",), "mpi": ("mpi4py.MPI",),
              "bench-mpi": ("mpi4py.MPI",)}
MPI_KINDS = ("mpi", "bench-mpi")
_PYTHONS = ("python", "python3")


def node_name(env) -> str:
    import socket

    return env.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]


# --- local checks ------------------------------------------------------------------------------

def check_interpreter() -> Check:
    v = sys.version.split()[0]
    return Check("python", PASS, f"Python {v} at {sys.executable}", [sys.executable])


def program_file(argv: list[str]) -> tuple[str | None, str | None]:
    """(file to read, command to find on PATH) of a program's argv, as prepared.check_program
    reads it: a .py file or a path; after ``python``, its script; else the command itself."""
    if not argv:
        return None, None
    first = argv[0]
    if os.path.basename(first).startswith(_PYTHONS):
        rest = argv[1:]
        if rest and not rest[0].startswith("-"):
            return rest[0], None
        return None, first if "/" not in first else None
    if "/" in first or first.endswith(".py"):
        return first, None
    return None, first


def check_program(argv: list[str]) -> Check:
    import shutil

    path, command = program_file(argv)
    if path:
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as e:
            return Check("program", FAIL, f"{path} cannot be read on this node: {e.strerror}",
                         [f"open({path!r}) in {os.getcwd()}: {e}"],
                         "the program must be on a filesystem every node sees (and readable by "
                         "the job's user); check the node's mounts")
        return Check("program", PASS, f"{path} readable", [os.path.abspath(path)])
    if command:
        found = shutil.which(command)
        if not found:
            return Check("program", FAIL, f"{command}: command not found on this node",
                         [f"PATH={os.environ.get('PATH', '')}"],
                         "install it on the nodes or give its full path")
        return Check("program", PASS, f"{command} is {found}", [found])
    return Check("program", SKIP, "no program file to check (a module or a command line)")


def check_space(name: str, directory: str, min_free: int) -> Check:
    """Free space and a real write (a full or read-only filesystem fails the write)."""
    try:
        st = os.statvfs(directory)
    except OSError as e:
        return Check(name, FAIL, f"{directory} is not there: {e.strerror}", [str(e)],
                     "create it, or point the job at a directory every node has")
    free = st.f_bavail * st.f_frsize
    seen = [f"{directory}: {human_bytes(free)} free of {human_bytes(st.f_blocks * st.f_frsize)}"]
    probe = os.path.join(directory, f".hpcjobs-preflight-{os.getpid()}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        return Check(name, FAIL, f"{directory}: cannot write: {e.strerror}", seen + [str(e)],
                     f"free space in {directory} (or fix its permissions / read-only mount); "
                     "the node stays bad for every job until then")
    if free < min_free:
        return Check(name, FAIL, f"{directory} has {human_bytes(free)} free, below "
                     f"{human_bytes(min_free)}", seen,
                     f"free space in {directory} (HPCJOBS_PREFLIGHT_MIN_FREE_MB sets the bar)")
    return Check(name, PASS, f"{directory}: {human_bytes(free)} free, writable", seen)


def check_memlock(pins: str | None) -> Check:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    inf = resource.RLIM_INFINITY
    soft, hard = (-1 if soft == inf else soft), (-1 if hard == inf else hard)
    if pins is None:
        return Check("memlock", SKIP, f"the job pins no memory here (limit "
                     f"{human_bytes(soft)}): no RDMA fabric, no pinned offload")
    c = memlock_check(soft, hard, True, pins == "rdma")
    c.summary += f" ({'RDMA fabric' if pins == 'rdma' else 'pinned offload'})"
    return c


def profile_for(env):
    """The cluster profile the job runs with (hpcjobs.launch's lookup order) and this node."""
    from hpcjobs.cluster import builtin, load_file
    from hpcjobs.launch.profile import profile_path

    path, chosen = profile_path(env)
    cluster = builtin() if chosen == "built-in" else load_file(path)
    return cluster, cluster.node(node_name(env))


def check_fabric_port(cluster, root: str) -> Check:
    from hpcjobs.launch.fabric import rdma_ports

    f = cluster.fabric
    if f.kind not in ("infiniband", "roce"):
        return Check("rdma", SKIP, f"the profile's fabric is {f.kind}: no RDMA port to check")
    return rdma_check(rdma_ports(root), f)


def job_gpus(env) -> int:
    """GPUs the job has on this node: SLURM_GPUS_ON_NODE (Slurm 20.11+), else the ids Slurm
    or the user bound (SLURM_STEP_GPUS, SLURM_JOB_GPUS, CUDA_VISIBLE_DEVICES)."""
    n = env.get("SLURM_GPUS_ON_NODE", "")
    if n.isdigit():
        return int(n)
    for var in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES"):
        ids = [x for x in env.get(var, "").split(",") if x.strip() and x != "NoDevFiles"]
        if ids:
            return len(ids)
    return 0


def gpu_checks(cluster, node, env) -> list[Check]:
    from hpcjobs.runners import gpuhealth

    if node is None or node.gpu is None:
        return [Check("gpus", SKIP, "the profile lists no GPU for this node")]
    want = job_gpus(env)
    if want == 0:
        return [Check("gpus", SKIP, "the job has no GPU on this node")]
    if cluster.sandbox:
        return [Check("gpus", SKIP, f"sandbox: the profile's {node.gpu.count} GPU(s) are gres "
                      "placeholders (/dev/null), no driver: nothing to check")]
    if not os.path.isdir("/proc/driver/nvidia"):
        return [Check("gpus", FAIL, f"the profile says {node.gpu.count} {node.gpu.model or 'GPU'}"
                      " here, but no NVIDIA driver is loaded (/proc/driver/nvidia)",
                      ["/proc/driver/nvidia: missing"],
                      "load the driver (modprobe nvidia; nvidia-smi) or drain the node")]
    return gpuhealth.node_checks(want, node.gpu.model)


def check_gpu_nic(cluster, node, env) -> Check:
    from hpcjobs.runners.checks import gpu_nic_check
    from hpcjobs.runners.cmd import run_command

    f = cluster.fabric
    if f.kind not in ("infiniband", "roce"):
        return Check("gpu-nic-path", SKIP, f"the profile's fabric is {f.kind}: no GPUDirect RDMA")
    if node is None or node.gpu is None or job_gpus(env) == 0 or cluster.sandbox:
        return Check("gpu-nic-path", SKIP, "no GPU of this job on this node")
    return gpu_nic_check(run_command(["nvidia-smi", "topo", "-m"]), f.device)


def imports_for(env, argv: list[str]) -> list[str]:
    """The framework modules this job's program needs on every node."""
    override = env.get("HPCJOBS_PREFLIGHT_IMPORTS")
    if override is not None:
        return [m.strip() for m in override.split(",") if m.strip()]
    kind = env.get("HPCJOBS_KIND", "")
    mods = list(FRAMEWORKS.get(kind, ("torch",) if kind else ()))
    if kind == "mpi":
        path, _ = program_file(argv)
        if not (path and path.endswith(".py")):
            mods = []  # a compiled MPI program: no Python framework to import
    return mods


def check_imports(modules: list[str]) -> tuple[Check, float]:
    """Import each module for real (what the program pays anyway); (check, seconds)."""
    import importlib
    import traceback

    t = time.perf_counter()
    done = []
    for m in modules:
        try:
            top = importlib.import_module(m.split(".")[0])
            if getattr(top, "__file__", None) is None and hasattr(top, "__path__"):
                # A namespace package: what an empty directory (or one hidden by a mount)
                # imports as; the framework itself is not there.
                where = ", ".join(top.__path__) or "?"
                raise ImportError(f"{top.__name__} is an empty namespace package at {where} "
                                  "(its files are missing or hidden by a mount)")
            if m == "mpi4py.MPI":
                # Load the MPI library without MPI_Init: that needs every rank (the collective
                # part calls it), and a node must fail here alone.
                top.rc.initialize = False
            importlib.import_module(m)
        except BaseException as e:  # any failure of an import is the finding
            if isinstance(e, KeyboardInterrupt):
                raise
            last = traceback.format_exception_only(type(e), e)[-1].strip()
            return (Check("import", FAIL, f"import {m}: {last}",
                          [f"{sys.executable}: {last}", f"sys.path[-1]: {sys.path[-1]}"],
                          f"install {m.split('.')[0]} into {sys.executable} on this node (or "
                          "make the node see the same Python environment: mounts, modules)"),
                    time.perf_counter() - t)
        done.append(m)
    secs = time.perf_counter() - t
    if not modules:
        return Check("import", SKIP, "no framework to import for this job"), secs
    return Check("import", PASS, f"import {', '.join(done)}: {secs:.2f} s", [sys.executable]), secs


def pins_memory(cluster, env) -> str | None:
    if cluster.fabric.kind in ("infiniband", "roce"):
        return "rdma"
    if env.get("HPCJOBS_KIND") == "deepspeed":
        return "offload"
    return None


def local_checks(env, argv: list[str], run_dir: str) -> tuple[list[Check], dict]:
    """Every check of this node alone, cheap ones first, the framework import last."""
    root = env.get("HPCJOBS_SYSFS_ROOT") or "/"
    min_free = int(float(env.get("HPCJOBS_PREFLIGHT_MIN_FREE_MB", MIN_FREE_MB)) * (1 << 20))
    checks = [check_interpreter(), check_program(argv)]
    dirs = [("run-dir-space", run_dir)]
    if os.path.realpath(os.getcwd()) != os.path.realpath(run_dir):
        dirs.append(("workdir-space", os.getcwd()))
    dirs.append(("tmp-space", env.get("TMPDIR") or "/tmp"))
    checks += [check_space(name, d, min_free) for name, d in dirs]
    info: dict = {}
    try:
        cluster, node = profile_for(env)
    except Exception as e:  # an unreadable profile is a finding, not a crash
        checks.append(Check("profile", FAIL, f"cluster profile: {e}", [str(e)],
                            "point HPCJOBS_CLUSTER at a readable profile"))
        return checks, info
    f = cluster.fabric
    info.update(cluster=cluster.name, fabric=f.kind, device=f.device, port=f.port,
                rate_gbps=f.rate_gbps)
    checks.append(check_memlock(pins_memory(cluster, env)))
    checks.append(check_fabric_port(cluster, root))
    checks += gpu_checks(cluster, node, env)
    checks.append(check_gpu_nic(cluster, node, env))
    imp, secs = check_imports(imports_for(env, argv))
    checks.append(imp)
    info["import_s"] = round(secs, 3)
    return checks, info


# --- entry points ------------------------------------------------------------------------------

def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def node_main(argv: list[str]) -> int:
    import argparse

    opts, prog = _split(argv)
    p = argparse.ArgumentParser(prog="python -m hpcjobs.runners.preflight node")
    p.add_argument("--dir", required=True, help="the preflight directory (NCCL logs)")
    p.add_argument("--run-dir", default=None, help="the job's run directory (default: --dir's parent)")
    p.add_argument("--attempt", default="0")
    a = p.parse_args(opts)
    env = os.environ
    node, rank = node_name(env), int(env.get("RANK", env.get("SLURM_PROCID", "0")))
    checks, info = local_checks(env, prog, a.run_dir or os.path.dirname(os.path.abspath(a.dir)))
    failed = [c for c in checks if c.status == FAIL]
    emit({"phase": "local", "node": node, "rank": rank, "checks": [c.to_dict() for c in checks],
          "t0": T0, "t": time.time(), **info})
    if failed:
        return FAILED_EXIT
    from hpcjobs.runners import preflight_collective

    deadline = float(env.get("HPCJOBS_PREFLIGHT_DEADLINE", DEADLINE))
    result = preflight_collective.run(env, node=node, rank=rank, deadline=deadline,
                                      log_dir=a.dir, attempt=a.attempt, info=info,
                                      mpi=env.get("HPCJOBS_KIND") in MPI_KINDS)
    result.update(phase="collective", node=node, rank=rank, t0=T0, t=time.time())
    emit(result)
    return FAILED_EXIT if result.get("status") == FAIL else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["node"]:
        code = node_main(argv[1:])
        from hpcjobs.shutdown import finish

        finish(code)  # gloo may abort in its destructors at exit (hpcjobs/shutdown.py)
    if argv[:1] == ["decide"]:
        from hpcjobs.runners import preflight_policy

        return preflight_policy.main(argv[1:])
    sys.stderr.write("usage: python -m hpcjobs.runners.preflight node|decide ... (see --help of each)\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
