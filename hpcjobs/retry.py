"""Retries that change what they ask for: ``hpcjobs submit --retry N`` (docs/retry.md).

A job that failed for a known, recoverable cause comes back with its request adjusted, within
the budget N the user set, each retry recorded in the chain (hpcjobs/chains.py). The cause is
the one ``hpcjobs why`` names (hpcjobs.triage); the rules (:data:`RULES`):

- ``time_limit`` (TIMEOUT): a longer ``--time`` (x ``--retry-time-factor``, 2 by default),
  capped at the partition's MaxTime; none when the limit is MaxTime already. A program that
  handles the checkpoint signal (hpcjobs.preempted()) does not end TIMEOUT: it checkpoints
  and exits after the warning, and with --requeue the batch script requeues it; a TIMEOUT
  means the program ran on after the warning.
- ``node_fail`` (NODE_FAIL) and ``preflight`` (a node failed the preflight): resubmit with the
  failed node excluded (``--exclude``, added to any the job had); as is when the node cannot
  be named (DOWN nodes get no jobs anyway); none when too few nodes would be left.
- ``oom_host`` (OUT_OF_MEMORY, an oom-kill in the step): more ``--mem`` (or ``--mem-per-gpu``),
  x ``--retry-mem-factor`` (2), capped by the nodes' RealMemory.
- ``nccl_timeout``, ``hung`` (the sentinel's verdict): resubmit as is, once per chain.
- anything else (the program's own exception, bad input, a missing module, a cancel): no retry,
  and the record says that retrying would not help, with hpcjobs why's fix.

:func:`decide` is pure (a :class:`Situation` in, a :class:`Decision` out); :func:`follow` is
what the follower job runs (``python -m hpcjobs.retry CHAIN_DIR JOBID``): it gathers the
situation from Slurm, the output and the record, decides, records, and resubmits through
:func:`hpcjobs.api.submit`.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpcjobs import runs, slurm
from hpcjobs.errors import HpcjobsError

# cause (hpcjobs why's key) -> what a retry changes
RULES: dict[str, str] = {
    "time_limit": "time",
    "node_fail": "exclude",
    "preflight": "exclude",
    "oom_host": "mem",
    "nccl_timeout": "once",
    "hung": "once",
}


@dataclass
class Situation:
    """What a decision needs to know about the attempt that ended (gathered by :func:`follow`)."""

    cause: str  # hpcjobs why's key of the primary finding
    cause_text: str = ""
    fix: str = ""
    state: str = ""
    retries_used: int = 0
    budget: int = 0
    causes_before: list[str] = field(default_factory=list)  # earlier attempts' causes
    # time
    time: str | None = None  # the attempt's --time
    max_time: str | None = None  # the partition's MaxTime (None: no limit)
    time_factor: float = 2.0
    # memory
    mem_option: str = "mem"  # mem | mem_per_gpu: the one the job used (or will use)
    mem_mb: int | None = None  # what the attempt had (per node, or per GPU)
    mem_cap_mb: int | None = None  # RealMemory of the smallest usable node (per GPU: / GPUs)
    mem_factor: float = 2.0
    # nodes
    bad_nodes: list[str] = field(default_factory=list)
    bad_why: str = ""
    exclude: list[str] = field(default_factory=list)  # what the attempt excluded already
    nodelist: list[str] = field(default_factory=list)  # nodes the job must have (--nodelist)
    partition: str = ""
    partition_nodes: list[str] = field(default_factory=list)
    nodes: int = 1


@dataclass
class Decision:
    retry: bool
    message: str
    changes: dict[str, list] = field(default_factory=dict)  # spec field -> [old, new]


def decide(s: Situation) -> Decision:
    """Retry or not, and with what. Pure."""
    action = RULES.get(s.cause)
    if s.state == "CANCELLED" and s.cause in ("cancelled", "exit_code"):
        return Decision(False, "no retry: the job was cancelled (scancel); resubmit it to run again")
    if action is None:
        what = s.cause_text or s.cause
        return Decision(False, f"no retry: {what}: retrying the same request would not help"
                        + (f"; fix: {s.fix}" if s.fix else ""))
    if s.retries_used >= s.budget:
        return Decision(False, f"no retry: the budget of {s.budget} is spent ({s.cause_text or s.cause})")
    if action == "time":
        return _longer(s)
    if action == "exclude":
        return _exclude(s)
    if action == "mem":
        return _more_memory(s)
    if s.cause in s.causes_before:  # once
        return Decision(False, f"no retry: {s.cause_text or s.cause} again; it was retried once "
                        "already as it was, and a second time would not help"
                        + (f"; fix: {s.fix}" if s.fix else ""))
    return Decision(True, f"retry as it was, once: {s.cause_text or s.cause} (a rank stopped or "
                    "stalled; a second time would not be retried)")


def _longer(s: Situation) -> Decision:
    from hpcjobs.spec import time_seconds

    old = time_seconds(s.time) if s.time else None
    cap = time_seconds(s.max_time) if s.max_time else None
    if old is None:
        return Decision(False, "no retry: the job has no time limit of its own to lengthen")
    if cap is not None and old >= cap:
        return Decision(False, f"no retry: the time limit {s.time} is the partition's MaxTime "
                        f"{s.max_time} already; checkpoint on the warning signal "
                        "(hpcjobs.preempted()) and submit with --requeue to continue it")
    minutes = math.ceil(old * s.time_factor / 60)  # Slurm keeps time limits in minutes
    new = minutes * 60
    capped = cap is not None and new >= cap
    if capped:
        new = cap
    text, was = slurm_time(new), slurm_time(old)
    return Decision(True, f"retry with --time {text} (was {was}, x{s.time_factor:g}"
                    + (f", capped at MaxTime {s.max_time} of partition {s.partition}" if capped
                       else "") + ")", {"time": [was, text]})


def _exclude(s: Situation) -> Decision:
    if not s.bad_nodes:
        return Decision(True, f"retry as it was: {s.cause_text or s.cause}, but the node cannot "
                        "be named any more (it is not DOWN now); Slurm gives DOWN nodes no jobs")
    required = [n for n in s.bad_nodes if n in s.nodelist]
    if required:
        return Decision(False, f"no retry: the job must run on {', '.join(required)} "
                        f"(--nodelist), which {s.bad_why or 'failed'}; submit it again without "
                        "that node in --nodelist")
    excluded = list(dict.fromkeys([*s.exclude, *s.bad_nodes]))
    left = [n for n in s.partition_nodes if n not in excluded]
    if s.partition_nodes and len(left) < s.nodes:
        return Decision(False, f"no retry: without {', '.join(s.bad_nodes)} partition "
                        f"{s.partition} has {len(left)} node(s) left and the job needs {s.nodes}")
    new = _hostlist(excluded)
    old = _hostlist(s.exclude) if s.exclude else None
    return Decision(True, f"retry without {', '.join(s.bad_nodes)} ({s.bad_why or s.cause}): "
                    f"--exclude {new}", {"exclude": [old, new]})


def _more_memory(s: Situation) -> Decision:
    opt = "--mem" if s.mem_option == "mem" else "--mem-per-gpu"
    if not s.mem_mb:
        return Decision(False, f"no retry: the job already had all of a node's memory ({opt} 0)")
    new = math.ceil(s.mem_mb * s.mem_factor)
    cap = s.mem_cap_mb
    if cap and s.mem_mb >= cap:
        return Decision(False, f"no retry: the job had {s.mem_mb} MB, all the nodes have "
                        f"(RealMemory {cap} MB{' per GPU' if opt != '--mem' else ''}); load less at once")
    capped = bool(cap) and new >= cap
    if capped:
        new = cap
    return Decision(True, f"retry with {opt} {new}M (was {s.mem_mb}M, x{s.mem_factor:g}"
                    + (", capped by the nodes' RealMemory" if capped else "") + ")",
                    {s.mem_option: [f"{s.mem_mb}M", f"{new}M"]})


def slurm_time(seconds: int) -> str:
    """A time limit as sbatch reads it: HH:MM:SS, D-HH:MM:SS past a day."""
    d, rest = divmod(int(seconds), 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{d}-{text}" if d else text


def _hostlist(names: list[str]) -> str:
    import hostlist

    return hostlist.collect_hostlist(names) if names else ""


# --- what the follower job runs ----------------------------------------------------------------

_NODE_FAILURE = re.compile(r"Node failure on (\S+?)[\s,]*$")


def job_fields(job_id: str) -> dict[str, str]:
    """Fields of ``scontrol show job -o`` that hold no blanks (memory, CPUs, nodes, limit)."""
    proc = slurm.run(["scontrol", "show", "job", "-o", job_id], check=False)
    text = proc.stdout.splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else ""
    keys = ("MinMemoryNode", "MinMemoryCPU", "NumCPUs", "NumNodes", "NodeList", "TimeLimit",
            "ExcNodeList", "Partition")
    out = {}
    for k in keys:
        m = re.search(rf"(?:^| ){re.escape(k)}=(\S*)", text)
        if m:
            out[k] = m.group(1)
    return out


def bad_nodes(log: list[str], preflight: list[dict], job_nodes: list[str],
              down: set[str], cause: str) -> tuple[list[str], str]:
    """The nodes to blame, and how they were named. Pure.

    preflight: the nodes the preflight named (record, else its line in the output);
    node_fail: the job's nodes that are DOWN/not responding now, else those srun named in
    "Node failure on NODE", else a one-node job's node (its only node failed)."""
    if cause == "preflight":
        named = [b["node"] for b in preflight if b.get("node")]
        if not named:
            rx = re.compile(r"^hpcjobs: preflight: (\S+) failed ")
            named = [m.group(1) for ln in log if (m := rx.search(ln))]
        return list(dict.fromkeys(named)), "failed the preflight"
    dead = [n for n in job_nodes if n in down]
    if dead:
        return dead, "DOWN after the node failure"
    named = [m.group(1) for ln in log if (m := _NODE_FAILURE.search(ln.strip()))]
    if named:
        return list(dict.fromkeys(named)), "srun: Node failure"
    if len(job_nodes) == 1:
        return job_nodes, "the job's only node failed"
    return [], ""


def _down(states: dict[str, str]) -> set[str]:
    """Nodes Slurm will not use: DOWN, DRAIN, FAIL, or not responding ("*")."""
    bad = ("DOWN", "DRAIN", "FAIL", "NOT_RESPONDING")
    return {n for n, s in states.items() if s.endswith("*") or any(b in s.upper() for b in bad)}


def situation(chain_data: dict, attempt_no: int, job_id: str, run: runs.Run) -> tuple[Situation, dict]:
    """What the follower learns about the attempt that ended: Slurm's state (squeue), the cause
    from its output (hpcjobs.triage.classify), the partition and nodes now (scontrol). Returns
    the situation and the status as a dict (for the record)."""
    from hpcjobs import triage, watch
    from hpcjobs.sbatch_options import hosts, memory_mb
    from hpcjobs.spec import JobSpec

    spec = JobSpec.from_dict(run.spec())
    st = watch.lookup([job_id], records=False)[job_id]
    facts = triage.Facts(job_id, state=st.state, exit_code=st.exit_code, signal=st.signal,
                         reason=st.reason, restarts=st.restarts, elapsed=st.elapsed,
                         nodes=st.nodes, source=st.source)
    meta = run.meta()
    facts.transport = meta.get("transport") or ""
    hist = meta.get("preflight") or []
    facts.preflight = list(hist[-1].get("bad") or []) if hist else []
    log_path = Path(spec.output_dir or run.path) / f"slurm-{job_id}.out"
    try:
        facts.log, facts.log_path = triage.read_log(log_path), str(log_path)
    except OSError:
        facts.notes.append(f"no output file {log_path}")
    finding = triage.classify(facts)[0]
    fields = job_fields(job_id)
    part = next((p for p in slurm.partitions() if p.name == spec.partition), None)
    part_nodes = slurm.nodes(part.nodes) if part else []
    states = {n.name: n.state for n in part_nodes}
    job_nodes = hosts("NodeList", st.nodes or fields.get("NodeList", "")) if \
        (st.nodes or fields.get("NodeList", "")) not in ("", "(null)") else []
    bad, why = bad_nodes(facts.log, facts.preflight, job_nodes, _down(states), finding.key)
    excluded = hosts("--exclude", spec.exclude) if spec.exclude else []
    usable = [n for n in part_nodes if n.name not in excluded and n.name not in bad]
    cap = min((n.memory_mb for n in usable), default=None)
    mem_option, mem = "mem", None
    if spec.mem_per_gpu:
        mem_option, mem = "mem_per_gpu", memory_mb("--mem-per-gpu", spec.mem_per_gpu)
        cap = cap // max(1, spec.gpus_per_node or 1) if cap else None
    elif spec.mem is not None:
        mem = memory_mb("--mem", spec.mem)
    else:  # Slurm's default for the partition: per CPU or per node
        per_node, per_cpu = fields.get("MinMemoryNode"), fields.get("MinMemoryCPU")
        cpus, nodes = fields.get("NumCPUs", "1"), fields.get("NumNodes", "1").split("-")[0]
        if per_node:
            mem = memory_mb("MinMemoryNode", per_node)
        elif per_cpu and cpus.isdigit() and nodes.isdigit():
            mem = memory_mb("MinMemoryCPU", per_cpu) * int(cpus) // max(1, int(nodes))
    before = [a.get("cause", "") for a in chain_data.get("attempts", [])[:attempt_no - 1]]
    s = Situation(
        cause=finding.key, cause_text=finding.cause, fix=finding.fix, state=st.state,
        retries_used=attempt_no - 1, budget=chain_data.get("budget", 0), causes_before=before,
        time=spec.time, max_time=None if part is None or part.max_time.upper() in
        ("UNLIMITED", "INFINITE") else part.max_time,
        time_factor=chain_data.get("time_factor", 2.0), mem_option=mem_option, mem_mb=mem,
        mem_cap_mb=cap, mem_factor=chain_data.get("mem_factor", 2.0), bad_nodes=bad, bad_why=why,
        exclude=excluded, partition=spec.partition or "", nodes=spec.nodes or 1,
        nodelist=hosts("--nodelist", spec.nodelist) if spec.nodelist else [],
        partition_nodes=[n.name for n in part_nodes])
    ended = {k: v for k, v in st.to_dict().items() if k in
             ("state", "exit_code", "signal", "elapsed", "nodes", "reason", "name", "partition")}
    return s, {"ended": ended, "evidence": finding.evidence}


def follow(chain_dir: str, job_id: str) -> int:
    """Decide about attempt ``job_id`` of the chain in ``chain_dir``; resubmit it when a rule
    says so. Prints what it decided (the follower's output, retry-<id>.out in the attempt's
    record) and writes it into the chain. Deciding twice is a no-op."""
    slurm.clean_job_env()
    chain = runs.Run(Path(chain_dir))
    data = chain.attempts()
    entries = data.get("attempts", [])
    k = next((i for i, a in enumerate(entries) if a["job_id"] == job_id), None)
    if k is None:
        print(f"hpcjobs: retry: job {job_id} is not in the chain {chain_dir}", file=sys.stderr)
        return 2
    if entries[k].get("decision"):
        print(f"hpcjobs: retry: job {job_id} was decided already: {entries[k].get('message')}")
        return 0
    run = runs.Run(Path(entries[k].get("run_dir") or chain_dir))
    s, seen = situation(data, k + 1, job_id, run)
    d = decide(s)
    print(f"hpcjobs: retry: job {job_id} (attempt {k + 1} of at most {data.get('budget', 0) + 1}) "
          f"ended {seen['ended'].get('state')}: {s.cause_text or s.cause}", flush=True)
    print(f"hpcjobs: retry: {d.message}", flush=True)
    entries[k].update(seen, cause=s.cause, cause_text=s.cause_text, message=d.message,
                      decision="retry" if d.retry else "stop", changed=d.changes,
                      decided=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    chain.write_attempts(data)
    if not d.retry:
        return 0
    try:
        sub = resubmit(chain, run, d)
    except HpcjobsError as e:
        entries[k].update(decision="stop", message=f"{d.message}; but the resubmission was "
                          f"refused: {e}")
        chain.write_attempts(data)
        print(f"hpcjobs: retry: resubmission refused: {e}", file=sys.stderr, flush=True)
        return 1
    print(f"hpcjobs: retry: submitted job {sub.job_id} (attempt {k + 2}; record {sub.run.path})",
          flush=True)
    return 0


def resubmit(chain: runs.Run, run: runs.Run, d: Decision):
    """The attempt's recorded spec with the decision's changes, through api.submit (which
    records it as the chain's next attempt and queues its follower while retries are left)."""
    from hpcjobs import api
    from hpcjobs.cluster import builtin, load_file
    from hpcjobs.spec import JobSpec

    data = run.spec()
    if data.get("output_dir") == str(run.path):  # the record's own directory: the new one's
        data["output_dir"] = None
    for name, (_old, new) in d.changes.items():
        data[name] = new
    meta = run.meta()
    source = meta.get("cluster_source") or "built-in"
    cluster = builtin() if source == "built-in" else load_file(source)
    cwd = meta.get("cwd")
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)  # relative program paths were given from there
    return api.submit(JobSpec.from_dict(data), cluster, retry_of=chain.job_id)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m hpcjobs.retry CHAIN_RECORD_DIR JOBID (run by the follower job)",
              file=sys.stderr)
        return 2
    try:
        return follow(argv[0], argv[1])
    except HpcjobsError as e:
        print(f"hpcjobs: retry: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)


if __name__ == "__main__":
    sys.exit(main())
