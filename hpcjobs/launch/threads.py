"""OMP_NUM_THREADS for one task: the CPUs Slurm gave it, not one thread per core of the node.

Without it every rank's OpenMP runtime (torch's intra-op pool, MKL, numpy's BLAS) starts one
thread per core it can see, so N ranks on a node run N x cores threads that fight over the same
cores. torchrun sets OMP_NUM_THREADS=1 when it starts several processes per node for this reason;
one report (ISEEKYAN/Megatron-LM#137) saw a CPU-heavy step go from 26 s to 1012 s without it.

The value, unless the user (or the batch script) set OMP_NUM_THREADS already:

1. ``SLURM_CPUS_PER_TASK`` when the job or step asked for ``--cpus-per-task``;
2. else the CPUs of the job on this node (``SLURM_CPUS_ON_NODE``; without it, the CPUs this
   process may run on) divided by the tasks of the step on this node;

capped at the CPUs this process may run on (``os.sched_getaffinity``: a task bound to its own
cores, or a node with fewer real cores than Slurm was told, gets no more threads than cores),
and at least 1.
"""

import os

from hpcjobs.errors import BadInput


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: cgroup cpuset and Slurm's binding)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _count(env: dict, name: str) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit() and int(value) > 0):
        raise BadInput(name, f"is {value!r}, not a positive whole number", "check the job's environment")
    return int(value)


def omp_threads(env: dict, local_tasks: int, usable: int, tasks_name: str = "tasks") -> tuple[str, str]:
    """(value of OMP_NUM_THREADS, why) for a task with ``local_tasks`` tasks on its node."""
    cap = max(1, usable)
    per_task = _count(env, "SLURM_CPUS_PER_TASK")
    if per_task is not None:
        n, why = per_task, f"SLURM_CPUS_PER_TASK={per_task}"
    else:
        on_node = _count(env, "SLURM_CPUS_ON_NODE")
        src = f"SLURM_CPUS_ON_NODE={on_node}" if on_node is not None else f"{cap} usable CPUs"
        on_node = on_node if on_node is not None else cap
        n = on_node // max(1, local_tasks)
        why = f"{src} / {local_tasks} task(s) on this node ({tasks_name})"
        if n < 1:
            n, why = 1, why + ", at least 1"
    if n > cap:
        why += f", capped at the {cap} CPU(s) this task may run on (sched_getaffinity)"
        n = cap
    return str(n), (why + ": one OpenMP thread per CPU of the task, not one per core of the node "
                    "in every rank (torchrun sets 1 for the same reason)")
