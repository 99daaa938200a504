"""The preflight's decision on the batch node: which nodes are bad, what the job does about it.

Reads the node tasks' report lines (hpcjobs.runners.preflight), names every failure as one line
that `hpcjobs why` reads back (:data:`LINE`)::

    hpcjobs: preflight: node2 failed import: import torch: ModuleNotFoundError: ... | fix: ... | seen: ...

keeps the history in the run record (meta.json ``preflight``: one entry per attempt with the
time, the nodes, the bad ones with check, evidence and fix, the action; ``transport``: what the
job's backend really used), and applies the policy:

- ``fail``: exit :data:`~hpcjobs.runners.preflight.PREFLIGHT_EXIT`; the job ends FAILED.
- ``exclude``: the bad nodes join the job's ExcNodeList and the job requeues, at most
  ``--retries`` times. Slurm refuses ExcNodeList on a running job ("Job is no longer pending
  execution", checked on 22.05) and refuses to requeue a --no-requeue job, so: ``scontrol update
  Requeue=1`` where needed, ``scontrol requeuehold``, ``scontrol update ExcNodeList=...`` while it
  is pending and held, ``scontrol release``. SIGTERM is ignored meanwhile: Slurm's kill of the
  old run (SIGTERM, then SIGKILL after KillWait) must not stop it half way. Slurm then holds the
  job about two minutes before it runs again (its requeue delay; ``scontrol update jobid=N
  StartTime=now`` shortens it).

A failure the policy cannot pin on a node (a collective that hangs with every node present, a
setting that is wrong everywhere such as NCCL_IB_DISABLE=1) fails the job under both policies:
excluding nodes would not help.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

from hpcjobs.outcome import FAIL, WARN
from hpcjobs.runners.preflight_lines import PREFLIGHT_EXIT, REQUEUED_EXIT, read_reports

LINE = "hpcjobs: preflight: {node} failed {check}: {summary} | fix: {fix}{seen}"
# Causes of a fabric-truth failure that are the job's settings, the same on every node.
JOB_WIDE = ("NCCL_IB_DISABLE=1 is set", "NCCL_IB_HCA=")


@dataclass
class Bad:
    node: str
    check: str
    summary: str
    evidence: list[str] = field(default_factory=list)
    fix: str = ""
    node_local: bool = True  # False: a job-wide cause; excluding the node would not help

    def line(self) -> str:
        seen = f" | seen: {' / '.join(self.evidence[:3])}" if self.evidence else ""
        return LINE.format(node=self.node, check=self.check, summary=self.summary, seen=seen,
                           fix=self.fix or "see the evidence")


@dataclass
class Outcome:
    nodes: list[str]
    bad: list[Bad] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)
    transport: str | None = None
    bandwidth: dict | None = None
    clock: dict | None = None
    import_s: float | None = None
    node_s: float | None = None

    @property
    def ok(self) -> bool:
        return not self.bad

    @property
    def excludable(self) -> list[str]:
        """The bad nodes when every failure is the node's own; [] if any is job-wide."""
        if any(not b.node_local for b in self.bad):
            return []
        return list(dict.fromkeys(b.node for b in self.bad))


def evaluate(reports: list[dict], nodes: list[str], fabric_check: str = "fail",
             step_rc: int = 0) -> Outcome:
    """The bad nodes and the rest, from the node tasks' reports (pure)."""
    out = Outcome(nodes)
    local = {r["node"]: r for r in reports if r.get("phase") == "local"}
    coll = {r["node"]: r for r in reports if r.get("phase") == "collective"}
    for node, r in local.items():
        for c in r.get("checks", []):
            if c["status"] == FAIL:
                out.bad.append(Bad(node, c["name"], c["summary"], c.get("evidence") or [],
                                   c.get("fix") or ""))
            elif c["status"] == WARN:
                out.warnings.append(f"{node} {c['name']}: {c['summary']}")
    imports = [r.get("import_s") for r in local.values() if r.get("import_s") is not None]
    out.import_s = max(imports) if imports else None
    spans = [r["t"] - r["t0"] for r in [*local.values(), *coll.values()] if "t0" in r]
    out.node_s = max(spans) if spans else None
    silent = [n for n in nodes if n not in local]
    if out.bad:
        # srun ended the others when a node failed: the silent ones were not checked.
        out.not_checked = silent
        return out
    for n in silent:
        out.bad.append(Bad(n, "start", f"no report from {n}: the check did not start there "
                           f"(step exit {step_rc})", [f"srun step exit status {step_rc}"],
                           "read the job's output above for srun's or the interpreter's error on "
                           f"{n}; try `srun -w {n} -N1 {sys.executable} -c 'print(1)'`"))
    if out.bad:
        return out
    _collective(out, coll, nodes, fabric_check)
    return out


def _collective(out: Outcome, coll: dict, nodes: list[str], fabric_check: str) -> None:
    by_rank = {r.get("rank"): r for r in coll.values()}
    rank0 = by_rank.get(0)
    failed = {n: r for n, r in coll.items() if r.get("status") == FAIL}
    if rank0 and rank0.get("missing_ranks"):
        for rk in rank0["missing_ranks"]:
            n = nodes[rk] if rk < len(nodes) else f"rank {rk}"
            mine = coll.get(n, {})
            out.bad.append(Bad(n, "rendezvous", f"{n} did not join the cross-node check",
                               [rank0.get("summary", ""), mine.get("summary", "no report")],
                               f"check the network from {n} to {nodes[0]} (the fast interface is "
                               "up, the address in the profile is right, no firewall)"))
        return
    unreachable = [n for n, r in failed.items() if r.get("unreachable")]
    if unreachable and len(unreachable) == len(nodes) - 1 and nodes:
        out.bad.append(Bad(nodes[0], "rendezvous", f"no node reached rank 0's rendezvous on "
                           f"{nodes[0]}", [failed[unreachable[0]]["summary"]],
                           f"check {nodes[0]}'s fast interface and address"))
        return
    for n in unreachable:
        out.bad.append(Bad(n, "rendezvous", failed[n]["summary"], [], f"check the network from "
                           f"{n} to {nodes[0] if nodes else 'rank 0'}"))
    if unreachable:
        return
    raised = [n for n, r in failed.items() if r.get("error")]
    if raised and len(raised) < len(nodes):
        # An error in some nodes' own processes (an import, CUDA, MPI_Init): those nodes.
        for n in raised:
            out.bad.append(Bad(n, "collective", failed[n]["summary"], [f"in {failed[n].get('stuck')}"],
                               f"run the job's Python on {n} by hand (srun -w {n} -N1 ...) and "
                               "fix what the error names"))
        return
    missing = [n for n in nodes if n not in coll]
    if failed or missing:
        # Every node was there and the collective still failed or hung: not one node's fault.
        what = next(iter(failed.values()), {}).get("summary") or \
            f"no result from {', '.join(missing)}"
        out.bad.append(Bad(", ".join(sorted(failed) or missing), "collective", what,
                           [f"{n}: {r.get('summary', '')}" for n, r in failed.items()][:3],
                           "rerun with --nccl-debug; `hpcjobs submit bench-allreduce` on the same "
                           "nodes; `srun hpcjobs doctor` on each", node_local=False))
        return
    if rank0:
        out.bandwidth = rank0.get("bandwidth")
        out.clock = rank0.get("clock")
        clock = out.clock or {}
        if clock.get("status") == FAIL:
            worst = max(clock.get("offsets", {}).items(), key=lambda kv: abs(kv[1]))
            out.bad.append(Bad(worst[0], "clock", clock.get("text", ""),
                               [f"offset {worst[1]:+.3f} s to {nodes[0]}"],
                               "sync the node's clock (chrony/ntp; `chronyc tracking`)"))
        elif clock.get("status") == WARN:
            out.warnings.append(clock.get("text", ""))
    transports = []
    for n in nodes:
        r = coll.get(n, {})
        nccl = r.get("nccl")
        if nccl:
            transports.append(nccl.get("transport"))
            c = nccl.get("check", {})
            if c.get("status") == FAIL and fabric_check == "fail":
                wide = any(w in c.get("summary", "") for w in JOB_WIDE)
                out.bad.append(Bad(n, "fabric-truth", c["summary"], c.get("evidence") or [],
                                   c.get("fix") or "", node_local=not wide))
            elif c.get("status") in (FAIL, WARN):
                out.warnings.append(f"{n} fabric-truth: {c['summary']}")
        elif r.get("transport"):
            transports.append(r["transport"])
    uniq = list(dict.fromkeys(t for t in transports if t))
    out.transport = "; ".join(uniq) if uniq else None


# --- what the job prints and keeps --------------------------------------------------------------

def lines(o: Outcome, wall: float | None) -> list[str]:
    state = {n: "FAIL" for b in o.bad for n in b.node.split(", ")}
    for n in o.not_checked:
        state.setdefault(n, "not checked")
    cost = f" in {wall:.1f} s" if wall is not None else ""
    if o.import_s is not None:
        cost += f" (framework import {o.import_s:.1f} s)"
    out = [f"hpcjobs: preflight: {len(o.nodes)} node(s) checked{cost}: "
           + ", ".join(f"{n} {state.get(n, 'ok')}" for n in o.nodes)]
    out += [b.line() for b in o.bad]
    out += [f"hpcjobs: preflight: warning: {w}" for w in o.warnings]
    if o.transport:
        bw = o.bandwidth or {}
        out.append(f"hpcjobs: preflight: transport: {o.transport}"
                   + (f"; all-reduce {bw['verdict_text']}" if bw.get("verdict_text") else ""))
    return out


def history_entry(o: Outcome, attempt: int, action: str, wall: float | None) -> dict:
    return {"attempt": attempt, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "job_id": os.environ.get("SLURM_JOB_ID"), "nodes": o.nodes,
            "bad": [asdict(b) for b in o.bad], "warnings": o.warnings,
            "not_checked": o.not_checked, "action": action, "transport": o.transport,
            "bandwidth": o.bandwidth, "clock": o.clock, "import_s": o.import_s,
            "node_s": o.node_s, "wall_s": None if wall is None else round(wall, 3)}


def record(run_dir: str | None, out_dir: str, entry: dict) -> str:
    """Append the entry to the run record (meta.json) or, without one, to out_dir's JSON."""
    from pathlib import Path

    from hpcjobs import runs

    if run_dir and os.path.isfile(os.path.join(run_dir, "meta.json")):
        run = runs.Run(Path(run_dir))
        meta = run.meta()
        hist = list(meta.get("preflight") or []) + [entry]
        values = {"preflight": hist}
        if entry.get("transport"):
            values["transport"] = entry["transport"]
        run.update_meta(**values)
        return os.path.join(run_dir, "meta.json")
    path = os.path.join(out_dir, "preflight.json")
    try:
        with open(path) as f:
            hist = json.load(f)
    except (OSError, ValueError):
        hist = []
    runs.atomic_write(Path(path), json.dumps(hist + [entry], indent=2) + "\n")
    return path


# --- exclude: requeue the job without the bad nodes -----------------------------------------------

def _scontrol(args: list[str]) -> tuple[int, str]:
    try:
        p = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, str(e)
    return p.returncode, (p.stdout + p.stderr).strip()


def _job_fields(job_id: str) -> dict[str, str]:
    from hpcjobs.slurm import parse_kv

    rc, text = _scontrol(["show", "job", "-o", job_id])
    return parse_kv(text.splitlines()[0], job=True) if rc == 0 and text else {}


def _expand(text: str | None) -> list[str]:
    import hostlist

    if not text or text in ("(null)", "None"):
        return []
    return hostlist.expand_hostlist(text)


def exclusion_plan(fields: dict, bad: list[str], partition_nodes: list[str]) -> tuple[str | None, str]:
    """(the new ExcNodeList, why) or (None, why not): the required nodes (--nodelist) may not
    be excluded, and enough nodes must be left for the job's minimum node count."""
    import hostlist

    required = set(_expand(fields.get("ReqNodeList")))
    clash = sorted(required & set(bad))
    if clash:
        return None, (f"{', '.join(clash)} is among the job's required nodes (--nodelist): "
                      "cannot exclude it")
    excluded = list(dict.fromkeys(_expand(fields.get("ExcNodeList")) + bad))
    need = int((fields.get("NumNodes") or "1").split("-")[0] or 1)
    left = [n for n in partition_nodes if n not in excluded] if partition_nodes else None
    if left is not None and len(left) < need:
        return None, (f"only {len(left)} node(s) of the partition would be left without "
                      f"{', '.join(excluded)}, the job needs {need}")
    return hostlist.collect_hostlist(excluded), f"ExcNodeList={hostlist.collect_hostlist(excluded)}"


def requeue_excluding(job_id: str, bad: list[str]) -> tuple[bool, list[str]]:
    """Requeue the job with ``bad`` added to its ExcNodeList (see the module docstring)."""
    said = []
    fields = _job_fields(job_id)
    part = fields.get("Partition", "").split(",")[0]
    rc, ptext = _scontrol(["show", "partition", "-o", part]) if part else (1, "")
    pnodes = []
    if rc == 0 and ptext:
        from hpcjobs.slurm import parse_kv

        pnodes = _expand(parse_kv(ptext.splitlines()[0]).get("Nodes"))
    new, why = exclusion_plan(fields, bad, pnodes)
    if new is None:
        return False, [why]
    # Slurm kills the old run with SIGTERM (then SIGKILL after KillWait) as soon as the job is
    # requeued; ignored here and in the scontrol children (SIG_IGN survives exec).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    steps = []
    if fields.get("Requeue") == "0":
        steps.append(["update", f"jobid={job_id}", "Requeue=1"])
    steps += [["requeuehold", job_id], ["update", f"jobid={job_id}", f"ExcNodeList={new}"],
              ["release", job_id]]
    for args in steps:
        rc, text = _scontrol(args)
        said.append(f"scontrol {' '.join(args)}: {'ok' if rc == 0 else text}")
        if rc != 0:
            if args[0] == "update" and "ExcNodeList" in args[-1]:
                _scontrol(["release", job_id])  # never leave it held
            return False, said
    return True, said


# --- entry point ----------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcjobs.runners.preflight decide")
    p.add_argument("--dir", required=True)
    p.add_argument("--step-out", required=True)
    p.add_argument("--step-rc", type=int, default=0)
    p.add_argument("--record", default="", help="the run record's directory, if any")
    p.add_argument("--on-bad-node", choices=("fail", "exclude"), default="fail")
    p.add_argument("--fabric-check", choices=("fail", "warn"), default="fail")
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--t0", type=float, default=None, help="when the preflight began (epoch s)")
    a = p.parse_args(argv)
    env = os.environ
    nodes = _expand(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST"))
    o = evaluate(read_reports(a.step_out), nodes, a.fabric_check, a.step_rc)
    attempt = int(env.get("SLURM_RESTART_COUNT") or 0)
    wall = time.time() - a.t0 if a.t0 else None
    action, said, code = "passed", [], 0
    if not o.ok:
        bad = o.excludable
        if a.on_bad_node == "exclude" and bad and attempt < a.retries:
            job = env.get("SLURM_JOB_ID", "")
            done, said = requeue_excluding(job, bad)
            action, code = (f"requeued without {', '.join(bad)}", REQUEUED_EXIT) if done else \
                ("failed (requeue refused)", PREFLIGHT_EXIT)
        elif a.on_bad_node == "exclude" and bad:
            action, code = f"failed (exclude: {a.retries} requeue(s) used)", PREFLIGHT_EXIT
        elif a.on_bad_node == "exclude":
            action, code = "failed (not one node's fault: excluding would not help)", PREFLIGHT_EXIT
        else:
            action, code = "failed", PREFLIGHT_EXIT
    entry = history_entry(o, attempt, action, wall)
    try:
        where = record(a.record or None, a.dir, entry)
    except OSError as e:
        where = f"not recorded ({e.strerror})"
    text = lines(o, wall)
    text += [f"hpcjobs: preflight: {s}" for s in said]
    if not o.ok:
        text.append(f"hpcjobs: preflight: {action} (attempt {attempt}, --on-bad-node="
                    f"{a.on_bad_node}); history: {where}")
    stream = sys.stdout if o.ok else sys.stderr
    stream.write("\n".join(text) + "\n")
    stream.flush()
    return code
