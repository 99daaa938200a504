"""Compose the task's environment: ranks, rendezvous, fabric, GPU binding, framework hooks.

Pure apart from reading sysfs and the cluster profile: ``build(env)`` returns a :class:`TaskEnv`
that lists each variable with its value and the reason, and never changes ``env``. A variable
already set (by the user, the batch script or Slurm) is kept: the user wins.
"""

from hpcjobs.errors import BadInput
from hpcjobs.launch import fabric, frameworks, gpus, profile, signals, slurmenv, threads

_TRUE = ("1", "true", "yes", "on")


class TaskEnv:
    """The environment one task gets: each variable the launcher adds (``added``) or found
    already set (``kept``), with its reason, plus notes and rank 0's warnings.

    (Named for what it is; hpcjobs.planner's ``Plan`` is the job-level fit check.)"""

    __slots__ = ("added", "check_port", "env", "kept", "notes", "profile", "step", "warning_signal",
                 "warnings")

    def __init__(self, env: dict) -> None:
        self.env = env
        self.added: list[tuple[str, str, str]] = []
        self.kept: list[tuple[str, str, str, str]] = []  # key, value in env, value not used, why
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.step: slurmenv.Step | None = None
        self.profile: profile.Profile | None = None
        self.check_port: int | None = None
        # (signal number, "hpcjobs" or "program", why): the disposition the program starts with.
        self.warning_signal: tuple[int, str, str] | None = None

    def add(self, key: str, value: str, why: str) -> None:
        if key in self.env:
            self.kept.append((key, self.env[key], value, why))
        else:
            self.added.append((key, value, why))

    def extend(self, variables: list) -> None:
        for key, value, why in variables:
            self.add(key, value, why)

    def value(self, key: str) -> str | None:
        """The value the program will see."""
        if key in self.env:
            return self.env[key]
        return next((v for k, v, _ in self.added if k == key), None)

    def additions(self) -> dict:
        return {k: v for k, v, _ in self.added}


def build(env: dict, *, nccl_debug: bool = False, framework: str | None = None) -> TaskEnv:
    """The environment for this task; BadInput names the variable that is missing or wrong."""
    task = TaskEnv(env)
    root = env.get("HPCJOBS_SYSFS_ROOT") or "/"
    hooks, hooks_why = frameworks.select(framework, env)  # bad --framework fails before anything
    task.warning_signal = signals.warning_signal(env)
    step = task.step = slurmenv.read(env)
    src = step.source

    task.add("RANK", str(step.rank), "SLURM_PROCID")
    task.add("LOCAL_RANK", str(step.local_rank), "SLURM_LOCALID")
    task.add("WORLD_SIZE", str(step.world_size), src["world"])
    task.add("LOCAL_WORLD_SIZE", str(step.local_world_size),
             f"{src['tasks']}={src['tasks_value']} at SLURM_NODEID={step.node_rank}")
    task.add("NODE_RANK", str(step.node_rank), "SLURM_NODEID")
    task.add("OMP_NUM_THREADS", *threads.omp_threads(env, step.local_world_size, threads.usable_cpus(),
                                                     src["tasks"]))

    prof = task.profile = profile.load(env)
    first = step.first_node
    addr = prof.address(first)
    order = f"first node {first} of {src['nodelist']}, in Slurm's order"
    if addr:
        task.add("MASTER_ADDR", addr, f"{order}; its fast-network address in {prof.label}")
    else:
        task.add("MASTER_ADDR", first, f"{order}; not in {prof.label}, so the host name as given")
    # torch's TCPStore server runs in rank 0: MASTER_ADDR must be rank 0's node.
    if "MASTER_ADDR" not in env and step.rank == 0 and step.node_rank != 0:
        raise BadInput("SLURM_NODEID", f"rank 0 runs on node {step.node_rank} of the step, not on "
                       f"its first node {first}", "set MASTER_ADDR to rank 0's node "
                       "(the task distribution put rank 0 elsewhere)")
    port = slurmenv.master_port(step.job_id, step.step_id)
    task.add("MASTER_PORT", str(port),
             f"from SLURM_JOB_ID={step.job_id} and {src['step']}={step.step_id}: the "
             f"(job*16 + step mod 16)-th port of 1024-32767 without Slurm's 6817-6820, cyclically; "
             "rank 0 checks it is free")
    if step.rank == 0 and "MASTER_ADDR" not in env:
        chosen = task.value("MASTER_PORT") or ""
        if not (chosen.isascii() and chosen.isdigit() and 0 < int(chosen) < 65536):
            raise BadInput("MASTER_PORT", f"is {chosen!r}, not a port number", "unset it or give 1-65535")
        task.check_port = int(chosen)

    node_addr = prof.address(step.node_name)
    debug = nccl_debug or env.get("HPCJOBS_NCCL_DEBUG", "").lower() in _TRUE
    fab = fabric.detect(root, prof.device, prof.port, prof.interface, node_addr, debug)
    task.extend(fab.vars)
    task.notes += fab.notes
    if fab.warning and step.nnodes > 1:
        task.warnings.append(fab.warning)
    elif fab.warning:
        # One node: GPUs talk over NVLink/PCIe/shared memory; sockets only bootstrap.
        task.notes.append(fab.warning.removeprefix("hpcjobs.launch: ") + " (one node: no traffic "
                          "crosses the network, so no warning)")

    gvars, gnotes = gpus.binding(env, root, step.local_rank, step.local_world_size, hooks)
    task.extend(gvars)
    task.notes += gnotes

    fvars, fnotes = frameworks.hooks(
        hooks, master_addr=task.value("MASTER_ADDR") or first,
        master_port=task.value("MASTER_PORT") or str(port), world_size=step.world_size,
        rank=step.rank, node_addr=node_addr, node_name=step.node_name,
        cuda_visible=task.value("CUDA_VISIBLE_DEVICES"))
    task.extend(fvars)
    task.notes.append(f"framework hooks: {', '.join(hooks)} ({hooks_why})")
    task.notes += fnotes
    if task.warning_signal:
        task.notes.append(f"HPCJOBS_SIGNAL={env['HPCJOBS_SIGNAL']} passed through (the job's warning "
                          f"signal before its time limit); {task.warning_signal[2]}")
    return task


def explain(task: TaskEnv) -> str:
    """Every variable with its value and the reason, as shell comments around KEY=VALUE lines."""
    step, prof = task.step, task.profile
    head = (f"# hpcjobs.launch: rank {step.rank} of {step.world_size} on {step.node_name} "
            f"(node {step.node_rank} of {step.nnodes}), job {step.job_id} step {step.step_id}; "
            f"cluster profile {prof.label}{' (cached)' if prof.cached else ''}")
    lines = [head]
    width = max([len(f"{k}={v}") for k, v, _ in task.added] + [0])
    lines += [f"{k}={v}".ljust(width) + f"  # {why}" for k, v, why in task.added]
    for k, v, ours, why in task.kept:
        lines.append(f"# kept {k}={v} (already set; the launcher would set {ours}: {why})")
    lines += [f"# {n}" for n in task.notes]
    lines += [f"# warning (printed by rank 0): {w}" for w in task.warnings]
    return "\n".join(lines) + "\n"


def dry_run(task: TaskEnv) -> str:
    return "".join(f"{k}={v}\n" for k, v in sorted(task.additions().items()))
