"""Where is each rank of a hung job, and which rank is not where the others are? (pure)

Input: one record per rank as hpcjobs/runners/stacks.py collects it on its node (py-spy's JSON
threads, innermost frame first, each frame with its source line; the process state; the NCCL
flight recorder's summary where there is one). Output: the groups of ranks that stand at the
same place, the straggler(s), a one-line summary as ``hpcjobs why`` prints it::

    hung: ranks 0,2 in all_reduce (train.py:41), rank 1 in time.sleep (train.py:38)

the fix hints, and the stacks as text. No Slurm, no files: the unit tests feed it recorded stacks.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass

# torch.distributed's blocking entry points (distributed_c10d.py), by the names py-spy shows.
TORCH_COLLECTIVES = frozenset((
    "all_reduce", "all_reduce_coalesced", "all_gather", "all_gather_object",
    "all_gather_into_tensor", "all_gather_coalesced", "reduce_scatter", "reduce_scatter_tensor",
    "broadcast", "broadcast_object_list", "barrier", "monitored_barrier", "reduce", "gather",
    "gather_object", "scatter", "scatter_object_list", "all_to_all", "all_to_all_single", "send",
    "recv", "send_object_list", "recv_object_list", "batch_isend_irecv", "init_process_group",
    "new_group", "destroy_process_group", "wait",
))
# Collectives called from C extensions (mpi4py, Horovod): py-spy shows only the caller's line,
# so the call is read from the source (comm.allreduce(...), hvd.allreduce(...)).
C_COLLECTIVES = frozenset((
    "allreduce", "allgather", "alltoall", "bcast", "broadcast", "barrier", "reduce", "gather",
    "scatter", "send", "recv", "sendrecv", "wait", "waitall", "all_reduce", "all_gather",
))
# A frame of an installed library or of the standard library, not of the program.
_LIBRARY = re.compile(r"/(site|dist)-packages/|/lib(64)?/python\d+(\.\d+)?t?/|^<frozen ")
# The first call on a source line: "x = time.sleep(3)" -> time.sleep
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*\(")
_NOT_CALLS = frozenset(("if", "while", "for", "return", "elif", "and", "or", "not", "in", "print",
                        "assert", "with", "yield", "await", "lambda"))


@dataclass(frozen=True)
class Where:
    """Where one rank stands: the call it is in and the program's own line that made it."""

    call: str  # "all_reduce", "time.sleep", "comm.allreduce"; "?" without a stack
    path: str = ""  # the program's file (full path) ...
    line: int = 0  # ... and line
    code: str = ""  # that line's source
    stopped: bool = False  # the process is stopped (state T: SIGSTOP, a debugger)
    in_collective: bool = False
    why_none: str = ""  # no stack: the reason

    @property
    def file(self) -> str:
        return os.path.basename(self.path)

    def label(self) -> str:
        if self.why_none:
            return f"{'stopped, ' if self.stopped else ''}no stack ({self.why_none})"
        at = f" ({self.file}:{self.line})" if self.path else ""
        return f"{'stopped ' if self.stopped else ''}in {self.call}{at}"


def is_library(filename: str) -> bool:
    return bool(_LIBRARY.search(filename or ""))


def main_thread(rank: dict) -> dict | None:
    """The thread whose stack tells where the rank is: the main thread (its id is the pid),
    else the first that has frames."""
    threads = [t for t in rank.get("threads") or () if t.get("frames")]
    for t in threads:
        if t.get("os_thread_id") == rank.get("pid"):
            return t
    return threads[0] if threads else None


def call_on_line(code: str) -> str:
    for m in _CALL.finditer(code or ""):
        name = m.group(1)
        if name not in _NOT_CALLS:
            return name
    return ""


def locate(rank: dict) -> Where:
    stopped = str(rank.get("state", "")).startswith("T")  # not t: a tracer (debugger) holds it
    thread = main_thread(rank)
    if thread is None:
        return Where("?", stopped=stopped, why_none=rank.get("error") or "py-spy saw no thread")
    frames = thread["frames"]  # innermost first
    u = next((i for i, f in enumerate(frames) if not is_library(f.get("filename", ""))), None)
    user = frames[u] if u is not None else frames[-1]
    lib = frames[:u] if u is not None else frames
    call, in_coll = "", False
    for f in reversed(lib):  # outermost library frame first: what the program called
        if f.get("name") in TORCH_COLLECTIVES and "distributed" in f.get("filename", ""):
            call, in_coll = f["name"], True
            break
    if not call and lib:
        outer = lib[-1]
        module = os.path.splitext(os.path.basename(outer.get("filename", "")))[0]
        call = f"{module}.{outer.get('name', '?')}" if module else outer.get("name", "?")
    if not call:
        call = call_on_line(user.get("code", "")) or user.get("name", "?")
    if not in_coll:
        in_coll = call.rsplit(".", 1)[-1].lower() in C_COLLECTIVES
    return Where(call, user.get("filename", ""), int(user.get("line") or 0),
                 (user.get("code") or "").strip(), stopped, in_coll)


def ranks_text(ranks: list[int]) -> str:
    """rank 1; ranks 0,2; ranks 0-7,9 (runs of three or more as ranges)."""
    ranks = sorted(ranks)
    parts, i = [], 0
    while i < len(ranks):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] == ranks[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{ranks[i]}-{ranks[j]}")
        else:
            parts.extend(str(r) for r in ranks[i:j + 1])
        i = j + 1
    return ("rank " if len(ranks) == 1 else "ranks ") + ",".join(parts)


@dataclass
class Group:
    ranks: list[int]
    where: Where

    def text(self) -> str:
        return f"{ranks_text(self.ranks)} {self.where.label()}"


def group(ranks: list[dict]) -> list[Group]:
    """Ranks at the same place, the largest group first (then by lowest rank)."""
    by: dict[tuple, Group] = {}
    for r in ranks:
        w = locate(r)
        key = (w.stopped, w.call, w.path, w.line, w.why_none)
        by.setdefault(key, Group([], w)).ranks.append(int(r["rank"]))
    return sorted(by.values(), key=lambda g: (-len(g.ranks), min(g.ranks)))


def stragglers(groups: list[Group]) -> list[int]:
    """The ranks that are not where the others are: those outside a collective while others
    wait in one; else the ranks outside the one largest group; none if all stand together."""
    if len(groups) < 2:
        return []
    waiting = [g for g in groups if g.where.in_collective and not g.where.stopped]
    if waiting:
        out = [r for g in groups if g not in waiting for r in g.ranks]
        if out:
            return sorted(out)
    if len(groups[0].ranks) > len(groups[1].ranks):
        return sorted(r for g in groups[1:] for r in g.ranks)
    return []


def fix_hints(groups: list[Group], late: list[int], missing: list[int]) -> list[str]:
    hints = []
    waiting = next((g for g in groups if g.where.in_collective and set(g.ranks).isdisjoint(late)), None)
    others = f"the others wait in {waiting.where.call}" if waiting else "the others wait for them"
    for g in groups:
        if not set(g.ranks) & set(late):
            continue
        who = ranks_text(g.ranks)
        if g.where.stopped:
            hints.append(f"{who} {'was' if len(g.ranks) == 1 else 'were'} stopped (process state "
                         f"T: SIGSTOP, a debugger, job control) and {others}: find what stopped "
                         "it; resubmit, or submit with --requeue so that a hang restarts the job")
        elif g.where.in_collective:
            hints.append(f"{who} {'is' if len(g.ranks) == 1 else 'are'} in a different collective "
                         f"({g.where.call} at {g.where.file}:{g.where.line}) than the others: the "
                         "ranks call collectives in a different order (a rank-dependent branch, "
                         "uneven data); TORCH_DISTRIBUTED_DEBUG=DETAIL makes torch check the order")
        elif g.where.why_none:
            hints.append(f"{who}: no stack ({g.where.why_none}); see docs/runtime-checks.md for "
                         "what py-spy needs (ptrace rights)")
        else:
            hints.append(f"{who} never reached the collective: {g.where.call} at "
                         f"{g.where.file}:{g.where.line} ({g.where.code or 'its code'}) while "
                         f"{others}: fix that path (a branch only some ranks take, a stuck data "
                         "loader or file read, a lock); every rank must call the same "
                         "collectives in the same order")
    if not late and groups and all(g.where.in_collective for g in groups):
        hints.append(f"every rank waits in {groups[0].where.call}: none is missing from it, so the "
                     "collective itself is stuck (the network, or a peer outside this step): "
                     "check the nodes with `hpcjobs doctor` and rerun with --nccl-debug")
    if missing:
        hints.append(f"{ranks_text(missing)}: no process found (exited, or on a node that did "
                     "not answer): look for its last lines in the output")
    hints.append("if the job is only slow, not hung: call hpcjobs.heartbeat(step=...) in its loop, "
                 "or raise --hang-timeout")
    return hints


def analyse(ranks: list[dict], expected: int | None = None) -> dict:
    """The report's analysis part: groups, stragglers, the summary line and the fix hints."""
    by_rank: dict[int, dict] = {}
    for r in ranks:  # one record per rank (the first), in rank order
        by_rank.setdefault(int(r["rank"]), r)
    ranks = [by_rank[k] for k in sorted(by_rank)]
    groups = group(ranks)
    late = stragglers(groups)
    seen = {int(r["rank"]) for r in ranks}
    missing = sorted(set(range(expected)) - seen) if expected else []
    summary = "hung: " + (", ".join(g.text() for g in groups) if groups else "no rank found")
    if missing:
        summary += f", {ranks_text(missing)} not found"
    nccl = nccl_summary(ranks)
    fr_hint = None
    enqueued = {int(k): v["last_enqueued"] for k, v in nccl.items()}
    if len(enqueued) >= 2 and min(enqueued.values()) < max(enqueued.values()):
        # NCCL returns from a collective before it completes, so the stacks may show every rank
        # at some later sync point; the flight recorder still says who enqueued fewer.
        low, high = min(enqueued.values()), max(enqueued.values())
        late = sorted(k for k, v in enqueued.items() if v == low)
        fr_hint = (f"NCCL flight recorder: {ranks_text(late)} enqueued collectives up to #{low}, "
                   f"the others up to #{high}: {ranks_text(late)} did not reach the next one")
    hints = fix_hints(groups, late, missing)
    if fr_hint:
        hints.insert(0, fr_hint)
    return {"summary": summary, "stragglers": late, "missing_ranks": missing,
            "groups": [{"ranks": g.ranks, **asdict(g.where), "file": g.where.file} for g in groups],
            "fix": hints, "nccl": nccl}


def nccl_summary(ranks: list[dict]) -> dict:
    """Per rank, the flight recorder's last completed and last enqueued collective (NCCL)."""
    out = {}
    for r in ranks:
        fr = r.get("nccl") or {}
        if fr.get("pg_status"):
            out[str(r["rank"])] = {
                "last_enqueued": max(int(s.get("last_enqueued_collective", -1)) for s in fr["pg_status"].values()),
                "last_completed": max(int(s.get("last_completed_collective", -1)) for s in fr["pg_status"].values()),
                "last": fr.get("last_entries", [])[-1:],
            }
    return out


def stacks_text(ranks: list[dict]) -> str:
    """Every rank's threads, as Python prints a traceback (most recent call last)."""
    lines = []
    for r in sorted(ranks, key=lambda r: int(r["rank"])):
        head = (f"rank {r['rank']} on {r.get('host', '?')}: pid {r.get('pid', '?')}, step "
                f"{r.get('step', '?')}, state {r.get('state_text') or r.get('state', '?')}")
        if r.get("pyspy"):
            head += f", py-spy {r['pyspy']}"
        lines.append(head)
        if r.get("error"):
            lines.append(f"  no stack: {r['error']}")
        for t in r.get("threads") or ():
            name = t.get("thread_name") or t.get("name") or ""
            flags = ", ".join(x for x, on in (("active", t.get("active")), ("holds the GIL",
                                              t.get("owns_gil"))) if on)
            lines.append(f"  Thread {t.get('os_thread_id', '?')}{' ' + name if name else ''}"
                         f"{' (' + flags + ')' if flags else ''}, most recent call last:")
            for f in reversed(t.get("frames") or ()):
                lines.append(f"    File \"{f.get('filename', '?')}\", line {f.get('line', '?')}, "
                             f"in {f.get('name', '?')}")
                if f.get("code"):
                    lines.append(f"      {f['code'].strip()}")
        fr = r.get("nccl") or {}
        for e in fr.get("last_entries", []):
            lines.append(f"  NCCL flight recorder: #{e.get('collective_seq_id')} "
                         f"{e.get('profiling_name')} {e.get('state')}")
        lines.append("")
    return "\n".join(lines)
