"""Rank variables from the Slurm task environment (SLURM_PROCID, SLURM_STEP_NODELIST, ...).

Inside a job step srun sets the step's own values (SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST,
SLURM_STEP_TASKS_PER_NODE, ...); a step may use fewer nodes than the job, so the step values are
preferred and the job values are the fallback. Every problem is a :class:`BadInput` naming the
variable (the launcher prints it as one line and exits 2).

Three small parsers live here on purpose: :func:`first_host`, :func:`expand` and
:func:`tasks_per_node`. The maintained library, python-hostlist, is the reference (it keeps
Slurm's order, as `scontrol show hostnames` does, where ClusterShell's NodeSet sorts), but importing it pulls in ``re`` and ``enum`` (~7-12 ms by ``-X
importtime`` in a clean virtual environment, more than all of the launcher's own work) and
expanding a fragmented 10,000-node list with it takes ~10 ms. A task needs only the list's first
host (and, without SLURMD_NODENAME, its own), so the hand paths cover the forms Slurm writes
(``a,b``, ``prefix[1-3,07]suffix``, several brackets) and hand anything else to python-hostlist,
imported only then, which also words the errors. tests/unit/test_launch_slurmenv.py checks
every hand path against python-hostlist on generated input.
"""

from hpcjobs.errors import BadInput

# Below the Linux ephemeral range (32768-60999): a listening port there can collide with any
# outgoing connection on the node.
PORT_MIN = 1024
PORT_MAX = 32767
# slurmctld, slurmd, slurmdbd and slurmrestd listen here by default (slurmd on every compute
# node): a derived port never lands on them.
SLURM_PORTS = range(6817, 6821)
PORTS = PORT_MAX - PORT_MIN + 1 - len(SLURM_PORTS)  # 31740 usable ports
# port = the (job_id * 16 + step_id mod 16)-th usable port, cyclically. Two steps collide only if
# their job ids differ by 1983 or more: steps 0-15 of any 1983 consecutive jobs all differ, and
# job ids equal modulo 10000 differ (10000 * 16 mod 31740 = 1300, far from 0).
STEP_SLOTS = 16

USAGE_FIX = "run the launcher as a task of a job step: srun python -m hpcjobs.launch -- PROG ARGS"

# Where each count comes from, the step's own value first (docs/launch.md and docs/train.md
# list them; a unit test keeps the docs in step with these).
WORLD_SIZE_FROM = ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS")
NNODES_FROM = ("SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES")
TASKS_PER_NODE_FROM = ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
NODELIST_FROM = ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")


class Step:
    """What one task knows about its step. A plain class: dataclasses costs ~7 ms to import."""

    __slots__ = (
        "first_node",
        "job_id",
        "local_rank",
        "local_world_size",
        "nnodes",
        "node_name",
        "node_rank",
        "nodelist",
        "rank",
        "source",
        "step_id",
        "world_size",
    )

    def __init__(self, **kw: object) -> None:
        for k, v in kw.items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        return "Step({})".format(", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__))


def _pick(env: dict, *names: str) -> tuple[str, str]:
    """The first of ``names`` that is set, as (name, value); missing -> BadInput on the first."""
    for n in names:
        v = env.get(n)
        if v is not None and v != "":
            return n, v
    also = f" (nor {', '.join(names[1:])})" if len(names) > 1 else ""
    raise BadInput(names[0], "is not set" + also, USAGE_FIX)


def _int(name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise BadInput(name, f"is {value!r}, not a whole number", "check the job's environment")
    return int(value)


def tasks_per_node(value: str, name: str = "SLURM_TASKS_PER_NODE") -> list[int]:
    """Expand Slurm's compressed task counts: ``2(x3),1`` -> [2, 2, 2, 1]."""
    out: list[int] = []
    for part in value.split(","):
        count, sep, rep = part.partition("(x")
        if sep:
            if not rep.endswith(")"):
                raise BadInput(name, f"{value!r} is malformed at {part!r}", "expected e.g. 2(x3),1")
            rep = rep[:-1]
        else:
            rep = "1"
        if not (count.isascii() and count.isdigit() and rep.isascii() and rep.isdigit()):
            raise BadInput(name, f"{value!r} is malformed at {part!r}", "expected e.g. 2(x3),1")
        out.extend([int(count)] * int(rep))
    return out


def _digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def first_host(nodelist: str, name: str = "SLURM_STEP_NODELIST") -> str:
    """The first host of a Slurm host list, in Slurm's order (never sorted).

    ``compute-b2[1-3,5-6,8],compute-a1`` -> ``compute-b21``; ``gpu[01-04,07],login1`` -> ``gpu01``.
    The first host is the first top-level item with each bracket replaced by the low end of its
    first range (python-hostlist prints a low end with its own width, i.e. unchanged). Anything
    this fast path does not fully understand goes to python-hostlist, which also reports errors.
    Only the first item is read, so a list that is malformed further on (Slurm writes none) is
    not reported here.
    """
    i, n = 0, len(nodelist)
    while i < n and nodelist[i] == ",":  # hostlist skips empty items
        i += 1
    out = []
    while i < n:
        c = nodelist[i]
        if c == ",":
            break
        if c == "]":
            return expand(nodelist, name)[0]
        if c == "[":
            j = nodelist.find("]", i)
            if j < 0:
                return expand(nodelist, name)[0]
            first = nodelist[i + 1:j].partition(",")[0]
            lo, dash, hi = first.partition("-")
            if "[" in first or not _digits(lo) or (dash and not (_digits(hi) and int(hi) >= int(lo))):
                return expand(nodelist, name)[0]
            out.append(lo)
            i = j + 1
            continue
        out.append(c)
        i += 1
    if not out:
        return expand(nodelist, name)[0]
    return "".join(out)


# python-hostlist refuses ranges and results larger than this (its MAX_SIZE); the hand path
# leaves such lists to it, so the error is its own.
_MAX_HOSTS = 100000


def _ranges(inner: str) -> list[str] | None:
    """``1-3,07`` -> ['1', '2', '3', '07'] (a range keeps the width of its low end, as
    python-hostlist prints it); None for anything else."""
    parts = inner.split(",")
    if "-" not in inner:  # single numbers only (a fragmented list): one check for all of them
        digits = inner.replace(",", "")
        return parts if "" not in parts and digits.isascii() and digits.isdigit() else None
    out: list[str] = []
    for r in parts:
        lo, dash, hi = r.partition("-")
        if not _digits(lo):
            return None
        if not dash:
            out.append(lo)
            continue
        if not _digits(hi):
            return None
        a, b = int(lo), int(hi)
        if b < a or b - a > _MAX_HOSTS:
            return None
        w = len(lo)
        out.extend([f"{i:0{w}d}" for i in range(a, b + 1)])
    return out


def _hand_expand(nodelist: str) -> list[str] | None:
    """The whole list in Slurm's order, duplicates dropped (as python-hostlist does), or None
    when a form is not one this path knows (then python-hostlist decides, errors included)."""
    if "[" not in nodelist and "]" not in nodelist:
        return list(dict.fromkeys(h for h in nodelist.split(",") if h))
    out: list[str] = []
    i, n = 0, len(nodelist)
    while i <= n:  # one top-level item per round; the round at i == n ends an empty last item
        variants = [""]
        while i < n and nodelist[i] != ",":
            j = i
            while j < n and nodelist[j] not in ",[]":
                j += 1
            text = nodelist[i:j]
            if j < n and nodelist[j] == "[":
                k = nodelist.find("]", j)
                inner = nodelist[j + 1:k] if k > 0 else "["
                nums = None if "[" in inner else _ranges(inner)
                if nums is None:
                    return None
                seg = [text + x for x in nums] if text else nums
                i = k + 1
            elif j < n and nodelist[j] == "]":
                return None  # unbalanced
            else:
                seg, i = [text], j
            # Earlier brackets vary slowest: x[1-2]y[3-4] -> x1y3, x1y4, x2y3, x2y4.
            variants = seg if variants == [""] else [v + t for v in variants for t in seg]
            if len(variants) > _MAX_HOSTS:
                return None
        if variants != [""]:  # empty items (",,") are skipped
            out.extend(variants)
        i += 1
    return list(dict.fromkeys(out))


def expand(nodelist: str, name: str = "SLURM_STEP_NODELIST") -> list[str]:
    """The whole host list in Slurm's order: by hand for the forms Slurm writes, else through
    python-hostlist (imported only then)."""
    hosts = _hand_expand(nodelist)
    if hosts is None:
        return _expand(nodelist, name)
    if not hosts:
        raise BadInput(name, "is empty", USAGE_FIX)
    return hosts


def _expand(nodelist: str, name: str = "SLURM_STEP_NODELIST") -> list[str]:
    """The whole list through python-hostlist (keeps Slurm's order; ClusterShell would sort)."""
    import hostlist

    try:
        hosts = hostlist.expand_hostlist(nodelist)
    except hostlist.BadHostlist as e:
        raise BadInput(name, f"{nodelist!r} is not a valid host list ({e})") from None
    if not hosts:
        raise BadInput(name, "is empty", USAGE_FIX)
    return hosts


def master_port(job_id: int, step_id: int) -> int:
    """A port for rank 0's rendezvous, from the job id AND the step id, in 1024..32767.

    Distinct for up to 16 steps of each of up to 1983 consecutive job ids, and for job ids equal
    modulo 10000 (see STEP_SLOTS); Slurm's own daemon ports are skipped.
    """
    port = PORT_MIN + (job_id * STEP_SLOTS + step_id % STEP_SLOTS) % PORTS
    if port >= SLURM_PORTS.start:
        port += len(SLURM_PORTS)
    return port


def read(env: dict) -> Step:
    """Read and cross-check the task's Slurm variables; BadInput names the first bad one."""
    _, job = _pick(env, "SLURM_JOB_ID", "SLURM_JOBID")
    job_id = _int("SLURM_JOB_ID", job)
    step_name, step = _pick(env, "SLURM_STEP_ID", "SLURM_STEPID")
    step_id = _int(step_name, step)
    rank = _int("SLURM_PROCID", _pick(env, "SLURM_PROCID")[1])
    local_rank = _int("SLURM_LOCALID", _pick(env, "SLURM_LOCALID")[1])
    node_rank = _int("SLURM_NODEID", _pick(env, "SLURM_NODEID")[1])
    # The step's values where srun set them, else the job's (srun --preserve-env keeps those).
    ws_name, ws = _pick(env, *WORLD_SIZE_FROM)
    world = _int(ws_name, ws)
    nn_name, nn = _pick(env, *NNODES_FROM)
    nnodes = _int(nn_name, nn)
    tpn_name, tpn = _pick(env, *TASKS_PER_NODE_FROM)
    per_node = tasks_per_node(tpn, tpn_name)
    nl_name, nodelist = _pick(env, *NODELIST_FROM)

    if world < 1:
        raise BadInput(ws_name, f"is {world}; a step has at least one task")
    if rank >= world:
        raise BadInput("SLURM_PROCID", f"is {rank}, not below {ws_name}={world}",
                       "check the job's environment (srun --preserve-env keeps job-wide counts)")
    if node_rank >= nnodes:
        raise BadInput("SLURM_NODEID", f"is {node_rank}, not below {nn_name}={nnodes}",
                       "check the job's environment")
    if len(per_node) != nnodes:
        raise BadInput(tpn_name, f"{tpn!r} lists {len(per_node)} nodes but {nn_name}={nnodes}",
                       "check the job's environment")
    if sum(per_node) != world:
        raise BadInput(tpn_name, f"{tpn!r} adds up to {sum(per_node)} tasks but {ws_name}={world}",
                       "check the job's environment")
    local_world = per_node[node_rank]
    if local_rank >= local_world:
        raise BadInput("SLURM_LOCALID", f"is {local_rank}, but node {node_rank} runs {local_world} "
                       f"task(s) by {tpn_name}={tpn}", "check the job's environment")

    node_name = env.get("SLURMD_NODENAME")
    if node_name:
        first = first_host(nodelist, nl_name)
    else:
        # Without SLURMD_NODENAME (only in hand-made environments) the whole list is needed.
        hosts = expand(nodelist, nl_name)
        if len(hosts) != nnodes:
            raise BadInput(nl_name, f"has {len(hosts)} nodes but {nn_name}={nnodes}",
                           "check the job's environment")
        first, node_name = hosts[0], hosts[node_rank]
    return Step(rank=rank, local_rank=local_rank, world_size=world, local_world_size=local_world,
                node_rank=node_rank, nnodes=nnodes, job_id=job_id, step_id=step_id,
                nodelist=nodelist, first_node=first, node_name=node_name,
                source={"world": ws_name, "nnodes": nn_name, "tasks": tpn_name, "nodelist": nl_name,
                        "tasks_value": tpn, "step": step_name})
