"""``hpcjobs why JOBID``: why did this job end the way it did? One cause, its evidence, the fix.

Reads Slurm's state and exit code and the job's own output, and names the cause: time limit,
preempted / requeued, node failure, out of memory (host or CUDA), NCCL timeout, NCCL over TCP
sockets (``NET/Socket``), the master port already in use (``EADDRINUSE``), a missing module or
command, an abort in a C++ destructor at exit (std::terminate), a dependency that can never be
met, or a plain non-zero exit. Each finding carries the line that proves it (file:line, or
Slurm's own fields) and what to do; every fix names hpcjobs' own options.

A multi-rank step that failed is blamed on its first failing task, not on the peers srun then
killed: srun's "node3: task 2: Exited with exit code 1" names the rank, its node and its own exit
code, and that rank's traceback is found by its label (torch's "[rank2]: ", srun --label's
"2: ") or, unlabelled, as the only traceback of the run. A pending job is explained from Slurm's
reason (:data:`PENDING_REASONS`, from squeue(1)'s JOB REASON CODES and job_reason_codes.html).
A requeued job's output holds every run (--open-mode=append): only the last run is classified
(the job scripts print a line where each restart begins); earlier runs are remarks.

Works without accounting: the state comes from ``scontrol`` while Slurm still holds the job
(MinJobAge), then from the run record (``meta.json`` "final", written by ``hpcjobs wait`` and
``status``), then from ``sacct`` where accounting exists; the output file from the run record
or Slurm's StdOut. With Slurm unreachable it still reads the record and the log.

The rules are plain data (:data:`RULES`) and :func:`classify` is pure, so the unit tests run it
over recorded logs (tests/fixtures/triage/) and the integration tests over real failed jobs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import pairwise
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Read at most this much of the end of an output file (a log of many GB ends with the cause).
TAIL_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Rule:
    key: str
    cause: str
    pattern: str  # regular expression, searched line by line
    fix: str


# In order of precedence: a rank that ran out of memory makes the others time out in NCCL and
# srun report the step as failed, so the root cause comes first.
RULES: tuple[Rule, ...] = (
    # The preflight's own line (hpcjobs/runners/preflight_policy.py LINE): it names the node, the
    # check, the evidence and the fix, and it comes before the program ran: the root cause.
    Rule("preflight", "a node failed the preflight before the program started",
         r"^hpcjobs: preflight: \S+ failed \S+: ",
         "fix what the check names on that node, or submit with --on-bad-node exclude (the job "
         "then requeues without the bad node)"),
    Rule("cred_revoked", "the restarted job was refused its job credential",
         r"Job credential revoked",
         "a requeued job was released within a second of its requeue (e.g. scontrol update "
         "StartTime=now at once), before the nodes let go of the old run: let Slurm's requeue "
         "delay pass, or wait a few seconds before releasing it; resubmit this one"),
    Rule("oom_cuda", "out of memory on the GPU (CUDA)",
         r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|"
         r"cudaErrorMemoryAllocation|CUDA error: out of memory|Cuda failure 'out of memory'",
         "lower the micro-batch size or sequence length, use activation checkpointing, or shard "
         "more (ZeRO-3 / more GPUs); `hpcjobs plan` checks the memory before the job queues"),
    Rule("oom_host", "out of memory on the host (RAM)",
         r"oom-kill event|Out [Oo]f [Mm]emory|oom_kill|cgroup out-of-memory|"
         r"\bMemoryError\b|std::bad_alloc|Cannot allocate memory|OUT_OF_MEMORY",
         "ask for more memory (--mem SIZE per node, 0 for all of it, or --mem-per-gpu SIZE), "
         "run fewer tasks per node (--ntasks-per-node), or load less at once (smaller batches, "
         "memory-mapped data, CPU offload off)"),
    Rule("oom_killed", "a task was killed by SIGKILL, as the kernel's out-of-memory killer does",
         r"task \d+: Killed$|^Killed$",
         "if the node ran out of memory (`dmesg` / the node's syslog say \"Out of memory: Killed "
         "process\"), ask for more memory (--mem or --mem-per-gpu) or load less at once; else "
         "find who sent SIGKILL"),
    Rule("missing_module", "a module or command is missing on the nodes",
         r"ModuleNotFoundError: No module named|ImportError: |: command not found|"
         r"error while loading shared libraries|execve\(\): .*No such file or directory",
         "install it into the Python the job uses (hpcjobs submit --python PATH; check with "
         "`srun -N1 PYTHON -c 'import NAME'`) or load its environment module in the job"),
    Rule("port_in_use", "the rendezvous (master) port is already in use",
         r"EADDRINUSE|[Aa]ddress already in use|MASTER_PORT: port \d+ is already in use",
         "another job or step on the first node holds MASTER_PORT: let hpcjobs.launch derive it "
         "(it is unique per job and step) or set one: --env MASTER_PORT=<a free port below "
         "32768>"),
    Rule("node_fail", "a node failed during the job",
         r"DUE TO NODE FAILURE|Node failure on|NODE_FAIL|DUE TO JOB NOT RUNNING",
         "resubmit with --requeue (Slurm restarts the job when nodes are back) and checkpoint "
         "with hpcjobs.preempted(), or leave the node out (--exclude NODE); check the node: "
         "`scontrol show node NODE`, `hpcjobs doctor`"),
    Rule("warning_unhandled", "the time-limit warning signal ended a program that does not "
         "handle it", r"task \d+: (User defined signal [12]|Hangup|Urgent I/O condition)$",
         "call hpcjobs.preempted() early in the program (it installs the handler; checkpoint and "
         "exit when it turns true) and submit with --requeue"),
    # The hang sentinel's own lines (hpcjobs/runners/sentinel.py): the cause and the fix are
    # those lines' words, with the ranks' file:line from their stacks (_hung).
    Rule("hung", "the job hung: the sentinel found no progress and cancelled the step",
         r"^hpcjobs: sentinel: hung: ",
         "read every rank's stacks (the sentinel's stacks.txt in the run record)"),
    Rule("nccl_timeout", "an NCCL collective timed out",
         r"Watchdog caught collective operation timeout|ProcessGroupNCCL.*[Tt]imeout|"
         r"NCCL.*[Tt]imed? ?out|DistBackendError.*[Tt]imeout|ncclRemoteError|"
         r"NCCL communicator was aborted",
         "a rank stopped or is stuck: look for the first error of any rank above this line; "
         "check the fabric with `hpcjobs doctor` and rerun with --nccl-debug "
         "(NCCL_DEBUG=INFO, INIT,NET); raise the process-group timeout only for slow steps"),
    Rule("time_limit", "the time limit was reached",
         r"DUE TO TIME LIMIT",
         "ask for more time (--time), or checkpoint on the warning signal with "
         "hpcjobs.preempted() and submit with --requeue so the job continues after a restart"),
    Rule("preempted", "the job was preempted",
         r"DUE TO PREEMPTION",
         "checkpoint on the warning signal (hpcjobs.preempted()) and submit with --requeue"),
    Rule("requeued", "the job was requeued (it restarted from the top with the same id)",
         r"DUE TO JOB REQUEUE|hpcjobs: requeueing job",
         "nothing to fix if it resumed from a checkpoint; otherwise checkpoint on "
         "hpcjobs.preempted() so a restart continues instead of starting over"),
    Rule("not_requeueable", "the warning signal came but the job could not be requeued",
         r"is not requeueable|Requested operation is presently disabled",
         "submit with --requeue so the job restarts after the warning signal"),
    # libstdc++'s std::terminate with no exception in flight: a C++ object owning a still
    # running thread was destroyed, typically torch's gloo at interpreter exit after the work
    # was done (hpcjobs/shutdown.py). Under srun that one abort fails the step.
    Rule("abort_at_exit", "a task aborted in a C++ destructor (std::terminate, SIGABRT), "
         "typically at interpreter exit after its work was done",
         r"terminate called without an active exception",
         "end the program with hpcjobs.finish(code): it destroys the process group and leaves "
         "with os._exit, so no C++ static destructor runs (or call "
         "torch.distributed.destroy_process_group() and os._exit yourself)"),
    Rule("nccl_socket", "communication went over TCP sockets, not RDMA (NCCL NET/Socket)",
         r"via NET/Socket|NET/IB : No device found|NCCL_IB_DISABLE.*=.*1|"
         r"NCCL will run over TCP sockets",
         "expected only without InfiniBand/RoCE; on the cluster check the port and GPUDirect "
         "with `hpcjobs doctor` (ibstat, nvidia-peermem) and unset stale NCCL_IB_* variables"),
)
RULE = {r.key: r for r in RULES}
# Findings that explain an end; the others are remarks on a job that ended for another reason.
CAUSES = ("preflight", "cred_revoked", "oom_cuda", "oom_host", "hung", "missing_module",
          "port_in_use", "node_fail", "warning_unhandled", "nccl_timeout", "time_limit",
          "preempted", "oom_killed", "abort_at_exit")
# srun's own lines once it tears a step down: a task "Killed" after these was killed by srun
# (--kill-on-bad-exit, a cancel), not by the kernel. srun's "Terminating StepId=5.0" reads
# "srun: launch/slurm: _step_signal: Terminating ..." on 22.05 (the launch plugin's prefix) and
# "srun: Terminating ..." on 24.11 (srun/launch.c, no plugin).
_TEARDOWN = re.compile(r"_step_signal: Terminating|^(?: *\d+: )?srun: Terminating StepId=|"
                       r"forcing job termination|Job step aborted|CANCELLED AT|Force Terminated")
# Slurm states that are a cause by themselves.
STATE_CAUSE = {"TIMEOUT": "time_limit", "NODE_FAIL": "node_fail", "OUT_OF_MEMORY": "oom_host",
               "PREEMPTED": "preempted", "BOOT_FAIL": "node_fail"}
_ERRORISH = re.compile(r"Traceback|Error|error:|ERROR|FAILED|[Ee]xception|exit code [1-9]|"
                       r"exited with exit code")


@dataclass
class Finding:
    key: str
    cause: str
    evidence: str
    fix: str
    # None: the job's last run (Slurm's state is its). K: how the K-th run of a requeued job
    # ended, a remark ("run 1 of 2 ended: ..."), with that run's own key.
    run: int | None = None


@dataclass
class TaskFailure:
    """The first task of a step that failed by itself (before srun tore the step down), or the
    node that failed under the job: what ``--retry`` leaves out, and whose traceback to read.

    ``ranks`` are the tasks srun named in that line (SLURM_PROCID, the rank), ``nodes`` their
    node(s); ``exit_code`` is the task's own, ``signal`` srun's word for a signal that ended it
    ("Segmentation fault", "Killed", "Aborted", "Out Of Memory"). ``traceback`` is that rank's
    last traceback when it could be told apart, ``attributed`` says how.
    """

    ranks: list[int] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    exit_code: int | None = None
    signal: str = ""
    evidence: str = ""  # file:line: srun's line
    node_failure: bool = False
    exception: str = ""  # the traceback's last line ("KeyError: 'batch_size'")
    exception_at: str = ""  # file:line of it
    traceback: list[str] = field(default_factory=list)
    attributed: str = ""

    @property
    def rank(self) -> int | None:
        return self.ranks[0] if self.ranks else None

    @property
    def node(self) -> str | None:
        return self.nodes[0] if len(self.nodes) == 1 else None

    def who(self) -> str:
        """ "rank 2 on node3", "ranks 0-1 on node[1-2]", "node node3"."""
        where = ",".join(self.nodes)
        if not self.ranks:
            return f"node {where}"
        r = "rank" if len(self.ranks) == 1 else "ranks"
        return f"{r} {_ranges(self.ranks)}" + (f" on {where}" if where else "")

    def how(self) -> str:
        if self.node_failure:
            return "the node failed"
        if self.exit_code is not None:
            return f"exited with code {self.exit_code}"
        return f"ended by a signal ({self.signal})" if self.signal else "failed"

    def to_dict(self) -> dict:
        return {"rank": self.rank, "node": self.node, "ranks": self.ranks, "nodes": self.nodes,
                "exit_code": self.exit_code, "signal": self.signal or None,
                "node_failure": self.node_failure, "evidence": self.evidence,
                "exception": self.exception or None, "exception_at": self.exception_at or None,
                "traceback": self.traceback, "attributed": self.attributed or None}


@dataclass
class Facts:
    """What is known about one job: Slurm's word (or the record's) and its output."""

    job_id: str
    state: str = "UNKNOWN"
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""
    restarts: int = 0
    elapsed: str = ""
    nodes: str = ""
    source: str = ""  # squeue | scontrol | sacct | record | none
    log_path: str = ""
    log: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    transport: str = ""  # what the preflight saw the backend use (run record), if it ran
    preflight: list[dict] = field(default_factory=list)  # its last attempt's bad nodes (record)
    # ``scontrol show job`` while Slurm holds the job: Dependency, TimeLimit, StartTime, memory.
    details: dict[str, str] = field(default_factory=dict)
    # The jobs of its --after, as Slurm or the record knows them: id -> "FAILED, exit code 3".
    dependencies: dict[str, str] = field(default_factory=dict)

    def slurm_line(self) -> str:
        ec = "" if self.exit_code is None else f" ExitCode={self.exit_code}:{self.signal or 0}"
        parts = [f"JobState={self.state}{ec}"]
        if self.reason:
            parts.append(f"Reason={self.reason}")
        dep = self.details.get("Dependency", "")
        if dep and dep != "(null)":
            parts.append(f"Dependency={dep}")
        if self.restarts:
            parts.append(f"Restarts={self.restarts}")
        if self.elapsed:
            parts.append(f"RunTime={self.elapsed}")
        return f"Slurm ({self.source or 'no source'}): " + " ".join(parts)


@dataclass
class Verdict:
    job_id: str
    state: str
    findings: list[Finding]
    log_path: str = ""
    notes: list[str] = field(default_factory=list)
    failure: TaskFailure | None = None  # the first failing rank/node (None: none found)
    runs: int = 1  # runs of the job in its output (a requeued job appends); the last is judged
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""

    @property
    def primary(self) -> Finding:
        return self.findings[0]

    def to_dict(self) -> dict:
        return {"job_id": self.job_id, "state": self.state, "log": self.log_path,
                "cause": self.primary.key, "findings": [asdict(f) for f in self.findings],
                "failure": self.failure.to_dict() if self.failure else None,
                "exit_code": self.exit_code, "signal": self.signal, "reason": self.reason,
                "runs": self.runs, "notes": self.notes}

    def text(self) -> str:
        lines = [f"job {self.job_id}: {self.state}" + (f"  (output: {self.log_path})"
                                                        if self.log_path else "")]
        for i, f in enumerate(self.findings):
            lines.append(("cause:    " if i == 0 else "also:     ") + f.cause)
            lines.append(f"evidence: {f.evidence}")
            lines.append(f"fix:      {f.fix}")
            if i == 0 and self.failure:
                lines.append(f"failed:   {self.failure.who()}: {self.failure.how()} "
                             f"({self.failure.evidence})")
                if self.failure.traceback:
                    lines.append(f"traceback of {self.failure.who()} "
                                 f"({self.failure.attributed}):")
                    lines += [f"    {t}" for t in self.failure.traceback]
        lines += [f"note:     {n}" for n in self.notes]
        return "\n".join(lines)


def _first(log: list[str], pattern: str, name: str, start: int = 0,
           end: int | None = None) -> str | None:
    """file:line: text of the first line of ``log[start:end]`` matching ``pattern``."""
    rx = re.compile(pattern)
    for i in range(start, len(log) if end is None else end):
        if rx.search(log[i]):
            return f"{name}:{i + 1}: {log[i].strip()[:400]}"
    return None


def _hits(log: list[str], name: str, start: int, end: int) -> dict[str, str]:
    hits = {r.key: ev for r in RULES if (ev := _first(log, r.pattern, name, start, end))}
    if "oom_killed" in hits:
        killed = int(hits["oom_killed"].split(":")[1])
        down = next((i for i in range(start, end) if _TEARDOWN.search(log[i])), None)
        if down is not None and down + 1 < killed:
            del hits["oom_killed"]
    return hits


def classify(facts: Facts) -> list[Finding]:
    """The findings for a job, the cause first. Pure: no Slurm, no files.

    A requeued job's output holds each run in turn: the cause comes from the last run only
    (Slurm's state is the last run's); each earlier run's own end is a remark."""
    name = _name(facts)
    runs = runs_of(facts)
    start, end = runs[-1]
    findings = _classify_run(facts, name, start, end)
    # A requeued job waiting to run again: every run in the file is an earlier one.
    waiting = facts.state in _NOT_STARTED and any(ln.strip() for ln in facts.log)
    earlier = runs if waiting else runs[:-1]
    if earlier:
        n = len(earlier) + 1
        shown = earlier[-3:]  # the last three earlier runs; older ones counted
        for k, (s, e) in enumerate(shown, n - len(shown)):
            f = _earlier_run(facts, name, s, e)
            findings.append(Finding(f.key, f"run {k} of {n} ended: {f.cause}", f.evidence,
                                    f.fix, run=k))
        if len(earlier) > len(shown):
            facts.notes.append(f"{len(earlier) - len(shown)} older runs are in the output too")
        facts.notes.append(f"the output holds {len(runs)} run{'s' * (len(runs) != 1)} of this "
                           "job (requeued: the file is appended to)" + ("" if waiting else
                                                f"; the cause is the last run's, from line "
                                                f"{start + 1}"))
    return findings


# States of a job whose (next) run has not started.
_NOT_STARTED = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING")


def _earlier_run(facts: Facts, name: str, start: int, end: int) -> Finding:
    """How one earlier run ended, from its own lines alone (Slurm only knows the last run)."""
    alone = Facts(facts.job_id, log=facts.log, log_path=facts.log_path, source="none")
    found = _classify_run(alone, name, start, end, remarks=False)
    f = found[0]
    if f.key == "exit_code" and "unknown end" in f.cause:
        ev = _first(facts.log, RULE["requeued"].pattern, name, start, end)
        return Finding("requeued", "it was requeued", ev or f"{name}:{start + 1}",
                       RULE["requeued"].fix)
    return f


def _classify_run(facts: Facts, name: str, start: int, end: int,
                  remarks: bool = True) -> list[Finding]:
    log = facts.log
    hits = _hits(log, name, start, end)
    slurm = facts.slurm_line()
    findings: list[Finding] = []

    def add(key: str, evidence: str | None = None, cause: str | None = None, fix: str | None = None):
        if any(f.key == key for f in findings):
            return
        r = RULE.get(key)
        if key == "hung" and cause is None:
            cause, fix = _hung(log[start:end])
        findings.append(Finding(key, cause or r.cause, evidence or hits.get(key) or slurm,
                                fix or r.fix))

    state = facts.state
    if facts.reason.startswith("DependencyNeverSatisfied") and state in ("CANCELLED", "PENDING"):
        add("dependency", slurm, *_dependency(facts))
        return findings
    if state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED"):
        if state == "PENDING" and facts.restarts and facts.reason == "BeginTime":
            add("requeued", slurm, fix="it runs again when Slurm's requeue delay (about 2 "
                "minutes) has passed; to start it now: scontrol update jobid="
                f"{facts.job_id} StartTime=now")
        elif state == "PENDING":
            add("pending", slurm, *_pending(facts))
        else:
            add("running", slurm, cause=f"the job has not ended ({state}"
                + (f", {facts.reason}" if facts.reason else "") + ")",
                fix="`hpcjobs why` explains ended jobs; follow it with `hpcjobs logs -f "
                f"{facts.job_id}` or wait with `hpcjobs wait {facts.job_id}`")
        return findings

    failure = _task_failure(log, name, start, end, _single_task(facts))
    if failure and not failure.node_failure:
        first = _line_of(failure.evidence)
        for key in ("warning_unhandled", "oom_killed"):
            # srun's "task 0: User defined signal 1" after the first failure is another step's
            # end (the monitor's, stopped by USR1), or a task srun killed: not the cause.
            if key in hits and _line_of(hits[key]) > first:
                del hits[key]
    if state in STATE_CAUSE:
        # Slurm's state is the cause; a line of the output that shows it is the better evidence.
        key = STATE_CAUSE[state]
        add(key, hits.get(key) or slurm)
    elif state == "CANCELLED" and "time_limit" in hits:
        add("time_limit")
    elif state == "CANCELLED" and not any(k in hits for k in CAUSES):
        add("cancelled", _first(log, r"CANCELLED AT", name, start, end) or slurm,
            cause="the job was cancelled (scancel)",
            fix="nothing to fix if that was intended; resubmit to run it again")
    elif state == "COMPLETED":
        pass  # what the log shows are remarks on a success, not its cause (below)
    else:
        for key in CAUSES:
            if key in hits:
                add(key)
                break

    if not findings:
        if state == "COMPLETED" and (facts.exit_code in (0, None)):
            add("completed", slurm, cause="the job completed successfully (exit code 0)",
                fix="nothing to fix")
        elif failure and not failure.node_failure:
            add("exit_code", *_failed_rank(facts, failure, name, start, end, slurm))
        elif facts.exit_code or state in ("FAILED", "UNKNOWN", "DEADLINE", "SPECIAL_EXIT"):
            evidence = _last_error(log, name, start, end)
            rc = facts.exit_code
            sig = facts.signal
            what = (f"the program exited with code {rc}" if rc else
                    f"the job ended {state}" if state != "UNKNOWN" else "unknown end")
            if sig:
                what += f" (signal {sig})"
            fix = ("read the output around this line (`hpcjobs logs "
                   f"{facts.job_id}`); rerun the failing command by hand in an allocation "
                   "(`salloc -N1`, then `srun ...`) to reproduce it")
            if rc == 127:
                what, fix = what + ": command not found", RULE["missing_module"].fix
            add("exit_code", evidence or slurm, cause=what, fix=fix)
        else:
            add("exit_code", slurm, cause=f"the job ended {state}", fix="see `hpcjobs logs`")

    _name_the_node(findings, failure)
    _memory_asked(findings, facts)
    if not remarks:
        return findings
    # Remarks that matter whatever the cause. A requeue shows in an earlier run's lines.
    requeued = _first(log, RULE["requeued"].pattern, name)
    if facts.restarts or requeued:
        n = facts.restarts
        add("requeued", requeued or slurm,
            cause=f"the job was requeued {n} time{'s' * (n != 1)} (same job id)" if n else None)
    later = ("node_fail", "time_limit", "preempted", "preflight") if state == "COMPLETED" else ()
    for key in (*later, "hung", "not_requeueable", "nccl_timeout", "nccl_socket"):
        if key in hits:
            add(key)
    _preflight_findings(findings, facts)
    return findings


def _line_of(evidence: str) -> int:
    """The line number of "file:line: text" evidence."""
    parts = evidence.split(":", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0


def _name(facts: Facts) -> str:
    return Path(facts.log_path).name if facts.log_path else "output"


def _failed_rank(facts: Facts, f: TaskFailure, name: str, start: int, end: int,
                 slurm: str) -> tuple[str, str, str]:
    """(evidence, cause, fix) for a step whose first failing task srun named: that rank's own
    exit code and error, not the exit code of the peers srun then ended (143: SIGTERM)."""
    own = f.attributed == "srun --label" or f.attributed.startswith("the step's only task")
    err = _last_error(facts.log, name, start, end,
                      f.ranks if f.attributed == "srun --label" else None)
    what = f.exception or (err.split(": ", 1)[-1] if own and err else "")
    cause = f"{f.who()} failed first: {f.how()}"
    if what:
        cause += f" ({what[:200]})"
    rc = facts.exit_code
    if rc is not None and rc > 128 and rc != f.exit_code:
        sig = _SIGNALS.get(rc - 128, f"signal {rc - 128}")
        cause += f"; srun then ended the other ranks ({sig}: the job's exit code {rc})"
    elif rc and rc != f.exit_code:
        cause += f"; the job's exit code is {rc}"
    evidence = f.exception_at or err or f.evidence or slurm
    fix = (f"read the output of {f.who()} (`hpcjobs logs {facts.job_id}`); rerun the failing "
           "command by hand in an allocation (`salloc -N1`, then `srun ...`) to reproduce it")
    if not f.attributed:
        fix += ("; the ranks' lines are not labelled: --env SLURM_LABELIO=1 makes srun begin "
                "each line with its rank")
    if f.exit_code == 127:
        fix = RULE["missing_module"].fix
    return evidence, cause, fix


_SIGNALS = {1: "SIGHUP", 2: "SIGINT", 6: "SIGABRT", 7: "SIGBUS", 9: "SIGKILL", 10: "SIGUSR1",
            11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE", 15: "SIGTERM"}


def _name_the_node(findings: list[Finding], failure: TaskFailure | None) -> None:
    """A node failure's fix names the node that failed (--exclude NODE)."""
    if not failure or not failure.nodes:
        return
    for f in findings:
        if f.key == "node_fail":
            nodes = ",".join(failure.nodes)
            f.fix = f.fix.replace("--exclude NODE", f"--exclude {nodes}").replace(
                "show node NODE", f"show node {nodes}")
            if failure.node_failure and failure.evidence not in f.evidence:
                f.cause = f"a node failed during the job ({nodes})"


def _memory_asked(findings: list[Finding], facts: Facts) -> None:
    """Out-of-memory fixes say what the job had (scontrol's MinMemoryNode/MinMemoryCPU)."""
    d = facts.details
    had = (f"{d['MinMemoryNode']} per node" if d.get("MinMemoryNode") else
           f"{d['MinMemoryCPU']} per CPU" if d.get("MinMemoryCPU") else "")
    if not had:
        return
    for f in findings:
        if f.key in ("oom_host", "oom_killed") and "this job had" not in f.fix:
            f.fix += f" (this job had {had})"


# --- the runs of a requeued job ------------------------------------------------------------

# The line the job scripts print where a restart begins (job_templates/base.sbatch.j2).
_RESTART = re.compile(r"^hpcjobs: job \S+ restart (\d+) ")
# Where Slurm ended a run that comes back (scripts without the restart line): slurmstepd's
# "*** JOB 48 ON node1 CANCELLED AT 2026-11-27T14:36:48 DUE TO JOB REQUEUE ***" (also after a
# node failure or a preemption of a requeueable job); srun's teardown lines still follow it.
_RUN_ENDED = re.compile(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT \S+ DUE TO "
                        r"(?:JOB REQUEUE|NODE FAILURE|PREEMPTION)")
# srun's and slurmstepd's own lines (with srun --label, slurmstepd's carry task 0's label).
_OWN = re.compile(r"^(?: *\d+: )?(?:srun|slurmstepd)(?:-\S+)?: ")
# srun's lines about starting a step: the next run's, not the old run's teardown.
_NEW_STEP = re.compile(r"Task launch for|Application launch failed|queued and waiting|"
                       r"has been allocated")


def split_runs(log: list[str]) -> list[tuple[int, int]]:
    """The runs in one output file as [start, end) line ranges, the last run last.

    By the scripts' restart line where there is one; else after each run that Slurm requeued
    ("... DUE TO JOB REQUEUE ***" and the teardown lines after it). A file without either is
    one run."""
    starts = [i for i, line in enumerate(log) if _RESTART.match(line)]
    if not starts:
        i = 0
        while i < len(log):
            if not _RUN_ENDED.search(log[i]):
                i += 1
                continue
            i += 1
            while i < len(log) and (not log[i].strip() or (
                    _OWN.match(log[i]) and not _NEW_STEP.search(log[i]))):
                i += 1
            if i < len(log):
                starts.append(i)
    bounds = [0, *starts, len(log)]
    runs = [(a, b) for a, b in pairwise(bounds) if b > a]
    return runs or [(0, len(log))]


def runs_of(facts: Facts) -> list[tuple[int, int]]:
    """split_runs, unless Slurm itself says the job never restarted."""
    if facts.source in ("squeue", "scontrol") and not facts.restarts:
        return [(0, len(facts.log))]
    return split_runs(facts.log)


# --- the first failing task ----------------------------------------------------------------

# srun's line for tasks that ended badly, the same in 22.05 (plugins/launch/slurm/launch_slurm.c
# _task_finish) and 24.11 (srun/launch.c): "%s: %s %s: Exited with exit code %d" (hosts, "task"
# or "tasks", the task ids), "%s: %s %s: %s%s" (strsignal and " (core dumped)") and "Out Of
# Memory". Tasks killed after srun began to end the step print it too, or nothing (a cancel).
_TASK_END = re.compile(r"^srun: error: (\S+): tasks? ([0-9,\-]+): (.+?)\s*$")
_NODE_FAILURE = re.compile(r"^srun: error: Node failure on (\S+)")
# srun --label (SLURM_LABELIO=1): "%*d: " before each line (common/write_labelled_message.c).
_LABEL = re.compile(r"^ *(\d+): ")
# torch.distributed's excepthook after init_process_group: "[rank2]: " before each line.
_TORCH_RANK = re.compile(r"^\[rank(\d+)\]: ?")
_TRACEBACK = "Traceback (most recent call last):"
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


def _single_task(facts: Facts) -> bool:
    return facts.details.get("NumTasks") == "1"


def _task_failure(log: list[str], name: str, start: int, end: int,
                  single: bool = False) -> TaskFailure | None:
    """The first task srun reported failed before it tore the step down (so not one it killed),
    else the node that failed; with that rank's traceback where it can be told apart."""
    down = next((i for i in range(start, end) if _TEARDOWN.search(log[i])), end)
    found = None
    for i in range(start, end):
        m = _TASK_END.match(log[i])
        if m and i < down and not m.group(3).startswith("Completed"):
            found = TaskFailure(_task_ids(m.group(2)), _hosts(m.group(1)),
                                evidence=f"{name}:{i + 1}: {log[i].strip()[:400]}")
            what = m.group(3)
            ec = re.match(r"Exited with exit code (\d+)$", what)
            if ec:
                found.exit_code = int(ec.group(1))
            else:
                found.signal = what
            break
    if found is None:
        node = next(((i, m) for i in range(start, end) if (m := _NODE_FAILURE.match(log[i]))),
                    None)
        if node is None:
            return None
        i, m = node
        return TaskFailure([], _hosts(m.group(1)), node_failure=True,
                           evidence=f"{name}:{i + 1}: {log[i].strip()[:400]}")
    _traceback_of(found, log, name, start, end, single)
    return found


def _task_ids(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        if a.isdigit():
            out += list(range(int(a), int(b) + 1)) if b.isdigit() else [int(a)]
    return out


def _hosts(text: str) -> list[str]:
    import hostlist  # python-hostlist: Slurm's syntax and order

    try:
        return hostlist.expand_hostlist(text)
    except hostlist.BadHostlist:
        return [text]


def _ranges(ids: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5"."""
    out, i = [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(out)


def _labelled(log: list[str], start: int, end: int) -> bool:
    """Did srun label this run's lines (--label / SLURM_LABELIO)? Nearly all of the tasks'
    lines then start with "N: "; a program's own "3: ..." now and then is not that."""
    lines = [ln for ln in log[start:end] if ln.strip() and not _OWN.match(ln)
             and not ln.startswith("hpcjobs: ")]
    return len(lines) >= 2 and sum(bool(_LABEL.match(ln)) for ln in lines) >= 0.9 * len(lines)


def _traceback_of(f: TaskFailure, log: list[str], name: str, start: int, end: int,
                  single: bool = False) -> None:
    """That rank's last traceback: its lines by torch's or srun's label; unlabelled, the only
    traceback of the run (several unlabelled ones cannot be told apart: the first is given,
    said so)."""
    rank = f.rank
    if rank is None:
        return
    labelled = _labelled(log, start, end)
    # srun's, slurmstepd's and the batch script's own lines land between a task's lines (each
    # writes the file itself): never part of a traceback.
    lines = [(i, log[i].rstrip("\n")) for i in range(start, end) if not _SLURM_OWN.search(log[i])]
    for how, rx in (("torch's [rankN] prefix", _TORCH_RANK),
                    ("srun --label", _LABEL if labelled else None)):
        if rx is None:
            continue
        mine = []
        for i, text in lines:
            if labelled and rx is _TORCH_RANK:
                m = _LABEL.match(text)
                text = text[m.end():] if m else text
            m = rx.match(text)
            if m and int(m.group(1)) in f.ranks:
                mine.append((i, text[m.end():]))
        blocks = _tracebacks(mine)
        if blocks:
            _take(f, blocks[-1], name, how)
            return
        if mine and rx is _LABEL:
            f.attributed = how  # labelled, but no traceback: its last error line (_failed_rank)
            return
    plain = [] if labelled else [(i, t) for i, t in lines if not _TORCH_RANK.match(t)]
    blocks = _tracebacks(plain)
    if single:  # one task: all of the output is its own
        if blocks:
            _take(f, blocks[-1], name, "the step's only task")
        else:
            f.attributed = "the step's only task"
    elif len(blocks) == 1:
        _take(f, blocks[0], name, "the only traceback in the output")
    elif blocks:
        _take(f, blocks[0], name, f"the first of {len(blocks)} tracebacks in the output; ranks' "
              "lines are not labelled, so which rank printed it is not known")


def _tracebacks(lines: list[tuple[int, str]]) -> list[list[tuple[int, str]]]:
    """Python tracebacks among (line number, text) pairs: "Traceback (most recent call last):",
    the indented frames, the exception line; chained ones ("During handling of the above
    exception ...") are one block."""
    blocks: list[list[tuple[int, str]]] = []
    i, n = 0, len(lines)
    while i < n:
        if lines[i][1].strip() != _TRACEBACK:
            i += 1
            continue
        block = [lines[i]]
        i += 1
        while i < n and lines[i][1][:1] in (" ", "\t"):
            block.append(lines[i])
            i += 1
        if i < n and lines[i][1].strip() and lines[i][1].strip() != _TRACEBACK:
            block.append(lines[i])  # the exception
            i += 1
        ahead = [t for _, t in lines[i:i + 4]]
        if blocks and blocks[-1][-1][0] == "chain":
            blocks[-1].pop()
            blocks[-1] += block
        else:
            blocks.append(block)
        if any(a.startswith(_CHAINED) for a in ahead[:2]):
            blocks[-1].append(("chain", ""))
    return [[(i, t) for i, t in b if i != "chain"] for b in blocks]


def _take(f: TaskFailure, block: list[tuple[int, str]], name: str, how: str) -> None:
    i, last = block[-1]
    if last.strip() != _TRACEBACK and not last.startswith((" ", "\t")):
        f.exception = last.strip()[:400]
        f.exception_at = f"{name}:{i + 1}: {f.exception}"
    f.traceback = [t for _, t in block][-30:]
    f.attributed = how


def first_failure(facts: Facts) -> TaskFailure | None:
    """The first failing rank and node of the job's last run (srun's own lines), with its
    traceback where it can be attributed; or the node that failed; or, for a job stopped by
    the preflight, the first bad node it recorded."""
    start, end = runs_of(facts)[-1]
    found = _task_failure(facts.log, _name(facts), start, end, _single_task(facts))
    if found is None and facts.preflight:
        node = facts.preflight[0].get("node")
        if node:
            found = TaskFailure([], [node], evidence=f"run record (preflight): {node} failed "
                                f"{facts.preflight[0].get('check', '')}".rstrip())
    return found


_PREFLIGHT = re.compile(r"hpcjobs: preflight: (\S+) failed (\S+): (.*?)(?: \| fix: (.*?))?(?: \| seen: .*)?$")


def _preflight_findings(findings: list[Finding], facts: Facts) -> None:
    """The preflight's finding says which node and check; the transport it recorded is the
    truth about NCCL sockets (the launcher's warning line is only its prediction)."""
    for f in findings:
        if f.key != "preflight":
            continue
        bad = facts.preflight[0] if facts.preflight else None  # the record's, whole
        m = _PREFLIGHT.search(f.evidence)
        if bad:
            node, check, summary, fix = bad["node"], bad["check"], bad["summary"], bad.get("fix")
        elif m:
            node, check, summary, fix = m.groups()
        else:
            continue
        f.cause = f"{node} failed the preflight check '{check}': {summary}"
        if fix:
            f.fix = fix.strip() + ("; or submit with --on-bad-node exclude" if "exclude" not in
                                   fix else "")
    t = facts.transport
    if not t:
        return
    for i, f in enumerate(findings):
        if f.key == "nccl_socket":
            if "NET/Socket" in t and "between nodes" in t:
                f.evidence = f"run record (preflight): transport {t}; {f.evidence}"
            else:
                del findings[i]
            break
    else:
        if "NET/Socket" in t and "between nodes" in t:
            r = RULE["nccl_socket"]
            findings.append(Finding("nccl_socket", r.cause, f"run record (preflight): transport "
                                    f"{t}", r.fix))
    facts.notes.append(f"transport recorded by the preflight: {t}")


def _hung(log: list[str]) -> tuple[str | None, str | None]:
    """The sentinel's summary ("hung: ranks 0,2 in all_reduce (train.py:41), ...") and its fix
    lines, with where the stacks are."""
    prefix = "hpcjobs: sentinel: "
    start = next((i for i, ln in enumerate(log) if ln.startswith(prefix + "hung: ")), None)
    if start is None:
        return None, None
    fixes = []
    for line in log[start + 1:start + 20]:
        if line.startswith(prefix + "fix: "):
            fixes.append(line[len(prefix + "fix: "):].strip())
    stacks = next((ln.rsplit(": ", 1)[1].strip() for ln in reversed(log[:start])
                   if ln.startswith(prefix + "no progress for ") and "stacks of" in ln), None)
    if stacks:
        fixes.append(f"every rank's stacks: {stacks}")
    return log[start][len(prefix):].strip(), "; ".join(fixes) or None


_SLURM_OWN = re.compile(r"^(?: *\d+: )?(srun|slurmstepd)(-\S+)?: |^hpcjobs: ")


def _last_error(log: list[str], name: str, start: int = 0, end: int | None = None,
                ranks: list[int] | None = None) -> str | None:
    """The program's last line of ``log[start:end]`` that looks like an error (a traceback's
    last line says what failed); srun's own "task 0: Exited with exit code N" only if the
    program said nothing. With ``ranks``, only lines srun labelled with one of them."""
    end = len(log) if end is None else end
    for own in (False, True):
        for i in range(end, start, -1):
            line = log[i - 1]
            if ranks is not None:
                m = _LABEL.match(line)
                if not m or int(m.group(1)) not in ranks:
                    continue
            if _ERRORISH.search(line) and bool(_SLURM_OWN.search(line)) == own:
                return f"{name}:{i}: {line.strip()[:400]}"
    return None


# --- a job that waits: Slurm's reason, explained ------------------------------------------

# Slurm's reasons for a pending job (squeue(1) JOB REASON CODES, 22.05 and 24.11, and
# job_reason_codes.html, 24.11): what it means and what to do, with hpcjobs' options. The
# families of accounting limits (AssocGrp*, QOSMax*PerUser, Max*PerAccount, ...) are read by
# :func:`explain_reason` from the name's parts.
PENDING_REASONS: dict[str, tuple[str, str]] = {
    "Resources": ("the resources it asks for are in use by other jobs; it starts when they free "
                  "up", "wait (`hpcjobs status JOBID`); to start sooner ask for less: fewer "
                  "--nodes or --gpus-per-node, less --mem, or a shorter --time (the backfill "
                  "scheduler starts short jobs in the gaps)"),
    "Priority": ("jobs of higher priority come first in its partition (or reservation)",
                 "wait; a shorter --time lets the backfill scheduler start it in a gap before "
                 "them (`sprio -j JOBID` shows its priority)"),
    "BeginTime": ("its earliest start time has not come yet (--begin, or the delay Slurm puts "
                  "on a requeued job)", "to start it now: `scontrol update jobid=JOBID "
                  "StartTime=now`"),
    "Dependency": ("it waits for another job to end as its --after asks",
                   "nothing to fix: it starts when that job has ended so (`hpcjobs status "
                   "DEPENDENCY`)"),
    "DependencyNeverSatisfied": ("its --after dependency can never be met (the job it waits "
                                 "for ended the wrong way)",
                                 "cancel it (`hpcjobs cancel JOBID`) and resubmit once the "
                                 "job it depends on has run as needed"),
    "JobHeldUser": ("it is held by its owner (scontrol hold, or submitted held)",
                    "release it: `scontrol release JOBID`"),
    "JobHeldAdmin": ("it is held by an administrator",
                     "ask the administrators why; only they can release it"),
    "JobHoldMaxRequeue": ("it was requeued so often (MAX_BATCH_REQUEUE) that Slurm holds it",
                          "find why its runs failed (`hpcjobs why JOBID` after each), then "
                          "`scontrol release JOBID`"),
    "PartitionTimeLimit": ("its time limit is above its partition's MaxTime: it never starts "
                           "so", "a --time within the partition's MaxTime (`scontrol show "
                           "partition NAME`) or another --partition; for this job: `scontrol "
                           "update jobid=JOBID TimeLimit=HH:MM:SS`"),
    "PartitionNodeLimit": ("its node count is outside its partition's limits, or nodes it "
                           "needs are DOWN or DRAINED", "fewer --nodes (`sinfo -p NAME` shows "
                           "what is up) or another --partition"),
    "PartitionDown": ("its partition is DOWN", "another --partition, or wait for the "
                      "administrators to bring it up (`sinfo -p NAME`)"),
    "PartitionInactive": ("its partition is inactive and starts no jobs",
                          "another --partition, or ask the administrators"),
    "PartitionConfig": ("it breaks a limit of its partition",
                        "compare --time, --nodes and --mem with `scontrol show partition NAME`"),
    "ReqNodeNotAvail": ("a node it asks for is not available (in use, reserved, DOWN, DRAINED or "
                        "not responding: UnavailableNodes names those)",
                        "leave such nodes out (--exclude, or a shorter --nodelist); `sinfo -R` "
                        "says why a node is down"),
    "NodeDown": ("a node it needs is down", "leave it out (--exclude NODE); `sinfo -R` says why"),
    "BadConstraints": ("its --constraint cannot be met by any node",
                       "fix --constraint (`sinfo -o '%N %f'` lists the nodes' features)"),
    "Constraints": ("its --constraint cannot be met now",
                    "fix --constraint (`sinfo -o '%N %f'` lists the nodes' features)"),
    "Reservation": ("it waits for its reservation to become active",
                    "nothing to fix; or resubmit without --reservation"),
    "ReservationInvalid": ("its reservation is not usable by it",
                           "resubmit with a valid --reservation (`scontrol show reservation`)"),
    "ReservationDeleted": ("its reservation was deleted",
                           "resubmit without --reservation or with another one"),
    "Licenses": ("it waits for a license", "wait, or ask for fewer "
                 "(--sbatch-arg=--licenses=NAME:COUNT)"),
    "InvalidAccount": ("its account is not valid", "submit with an --account of yours "
                       "(`sacctmgr show assoc user=$USER format=account`)"),
    "InvalidQOS": ("its QOS is not valid", "submit with a --qos your account may use "
                   "(`sacctmgr show assoc user=$USER format=qos`)"),
    "QOSNotAllowed": ("its QOS may not be used in its partition",
                      "another --qos or --partition"),
    "AccountNotAllowed": ("its account may not be used in its partition",
                          "another --account or --partition"),
    "JobArrayTaskLimit": ("the array's limit on tasks running at once (--array ...%N) is "
                          "reached", "nothing to fix: the next task starts when one ends; "
                          "`scontrol update jobid=JOBID ArrayTaskThrottle=N` changes it"),
    "Cleaning": ("it was requeued and Slurm is still cleaning up its previous run",
                 "wait a few seconds"),
    "Prolog": ("its Prolog is still running", "wait; if it stays so, ask the administrators"),
    "JobLaunchFailure": ("it could not be launched (a file system problem, a program that is "
                         "not there, ...)", "check that --chdir and --output-dir exist on the "
                         "nodes (`scontrol show job JOBID` shows both)"),
    "MaxMemPerLimit": ("it asks for more memory per CPU or per node than allowed",
                       "less --mem or --mem-per-gpu (`scontrol show partition NAME`: "
                       "MaxMemPerNode / MaxMemPerCPU)"),
    "DeadLine": ("it cannot end before its --deadline", "a later --deadline or a shorter --time"),
    "InactiveLimit": ("it reached the system's InactiveLimit", "resubmit it"),
    "SystemFailure": ("Slurm, a file system or the network failed",
                      "ask the administrators; resubmit once it is fixed"),
    "FrontEndDown": ("no front end node is up to run it", "ask the administrators"),
    "SchedDefer": ("the scheduler defers it (SchedulerParameters=defer)", "wait"),
    "WaitingForScheduling": ("the scheduler has not looked at it yet", "wait a few seconds"),
    "None": ("the scheduler has not looked at it yet", "wait a few seconds"),
    "AccountingPolicy": ("an accounting limit holds it (Slurm's fallback reason)",
                         "`scontrol show job JOBID` and `sacctmgr show qos` say which; wait for "
                         "your other jobs, or ask for less"),
    "QOSJobLimit": ("its QOS has reached its maximum job count",
                    "wait for jobs of this QOS to end, or another --qos"),
    "QOSResourceLimit": ("its QOS has reached a resource limit",
                         "wait for jobs of this QOS to end, ask for less, or another --qos"),
    "QOSTimeLimit": ("its QOS has reached its time limit", "a shorter --time or another --qos"),
    "QOSUsageThreshold": ("its QOS's usage threshold is exceeded",
                          "wait, or another --qos"),
    "AssociationJobLimit": ("its association (account and user) has reached its maximum job "
                            "count", "wait for your other jobs to end, or another --account"),
    "AssociationResourceLimit": ("its association has reached a resource limit",
                                 "wait for your other jobs to end, ask for less, or another "
                                 "--account"),
    "AssociationTimeLimit": ("its association has reached its time limit",
                             "a shorter --time, or another --account"),
    "MpiPortsBusy": ("the MPI ports Slurm reserves (MpiParams=ports) are all in use", "wait"),
    "MaxPoweredUpNodes": ("the cluster's limit on powered-up nodes is reached", "wait"),
    "BurstBufferResources": ("its burst buffer pool has too little space", "wait, or ask for less"),
    "BurstBufferStageIn": ("its burst buffer data is being staged in", "wait"),
    "BurstBufferOperation": ("a burst buffer operation failed", "ask the administrators"),
    "FedJobLock": ("the federation's clusters are agreeing who runs it", "wait"),
    # 22.05 only (gone in 24.11): power management and BlueGene's blocks.
    "PowerNotAvail": ("the power it needs is not available (power management)", "wait"),
    "PowerReserved": ("power is reserved for other jobs (power management)", "wait"),
    "BlockFreeAction": ("a BlueGene block is being freed", "wait"),
    "BlockMaxError": ("a BlueGene block has too many cnodes in error", "ask the administrators"),
}

# The resource in an accounting limit's name, and the hpcjobs options that ask for less of it.
_RESOURCE = {"Cpu": ("CPUs", "--cpus-per-task, --ntasks-per-node or --nodes"),
             "CPU": ("CPUs", "--cpus-per-task, --ntasks-per-node or --nodes"),
             "Mem": ("memory", "--mem or --mem-per-gpu"),
             "Memory": ("memory", "--mem or --mem-per-gpu"),
             "Node": ("nodes", "--nodes"),
             "GRES": ("GRES (GPUs and the like)", "--gpus-per-node, --gres or --nodes"),
             "Billing": ("billing units", "--nodes, --gpus-per-node or --time"),
             "BB": ("burst buffer", ""), "Energy": ("energy", ""),
             "License": ("licenses", "--sbatch-arg=--licenses=..."),
             "Jobs": ("jobs", ""), "Job": ("jobs", ""),
             "SubmitJobs": ("queued and running jobs", ""),
             "SubmitJob": ("queued and running jobs", ""),
             "Wall": ("wall time", "--time"), "WallDuration": ("wall time", "--time"),
             "Unknown": ("a trackable resource", "")}
_LIMIT = re.compile(r"^(Assoc|QOS)?(Grp|Max|Min)?([A-Za-z]+?)(RunMinutes|Minutes|RunMins)?"
                    r"(PerJob|PerNode|PerUser|PerAccount)?(Limit|NotSatisfied)?$")


def explain_reason(reason: str) -> tuple[str, str] | None:
    """(what it means, what to do) for Slurm's reason of a pending job; None for a reason this
    table does not know. "ReqNodeNotAvail, UnavailableNodes:node3" is read as ReqNodeNotAvail
    (the rest is Slurm's detail). The accounting limits are read from their names: owner
    (Assoc, QOS, or the QOS's Max*PerAccount/PerUser), Grp (all jobs together) / Max / Min, the
    resource, Minutes or RunMinutes (resource x time), and the scope (PerJob, PerNode, ...)."""
    word = re.split(r"[ ,(]", reason.strip(), maxsplit=1)[0]
    if word in PENDING_REASONS:
        return PENDING_REASONS[word]
    m = _LIMIT.match(word)
    if not m:
        return None
    owner, kind, res, minutes, per = m.group(1), m.group(2), m.group(3), m.group(4), m.group(5)
    if res not in _RESOURCE or kind is None or (owner is None and per not in ("PerAccount",
                                                                              "PerUser")):
        return None
    what, options = _RESOURCE[res]
    who = {"Assoc": "its association's (account and user)"}.get(owner, "its QOS's")
    other = "another --account" if owner == "Assoc" else "another --qos"
    amount = f"{what} x time (minutes)" if minutes else what
    jobs = res in ("Jobs", "Job", "SubmitJobs", "SubmitJob")
    less = ("a shorter --time" + (f" or less: {options}" if options else "") if minutes else
            f"less: {options}" if options else "less")
    if kind == "Min":
        return (f"it asks for less {what} than {who} minimum", f"ask for more ({options or what}), "
                f"or {other}")
    if kind == "Grp" or per in ("PerUser", "PerAccount") or jobs:
        scope = {"PerUser": "per user", "PerAccount": "per account"}.get(
            per, "per user" if owner == "Assoc" and kind == "Max" else "of all its jobs together")
        held = "running or queued jobs" if "Submit" in res else "running jobs"
        if jobs:
            return (f"{who} limit on {what} {scope} is reached",
                    f"it starts when some of the {held} end (`hpcjobs status --queue`); or "
                    f"{other}")
        return (f"{who} limit on {amount} {scope} is reached by {held}",
                f"it starts when some of them end; or ask for {less}, or {other}")
    scope = {"PerJob": " per job", "PerNode": " per node"}.get(per, "")
    return (f"it asks for more {amount}{scope} than {who} limit: it never starts so",
            f"ask for {less}, or {other}")


def _pending(facts: Facts) -> tuple[str, str]:
    """(cause, fix) for a pending job: Slurm's reason in words, and when Slurm expects it to
    start."""
    reason = facts.reason or "None"
    known = explain_reason(reason)
    job = facts.job_id
    if known is None:
        cause = f"the job is pending: Slurm's reason is {reason}"
        fix = ("see Slurm's list of reasons (squeue(1), JOB REASON CODES; "
               "https://slurm.schedmd.com/job_reason_codes.html); `scontrol show job "
               f"{job}` has the details")
    else:
        what, fix = known
        cause = f"the job is pending: {what} (Slurm's reason: {reason})"
    d = facts.details
    start = d.get("StartTime", "")
    if re.match(r"^\d{4}-\d\d-\d\dT", start) and reason.split(",")[0] in (
            "Resources", "Priority", "BeginTime", "Reservation"):
        cause += f"; Slurm expects it to start at {start}"
    if reason.startswith("PartitionTimeLimit") and d.get("TimeLimit"):
        cause += f"; it asks for TimeLimit={d['TimeLimit']} in partition {d.get('Partition', '?')}"
    deps = [j for j in facts.dependencies]
    fix = fix.replace("JOBID", job).replace("DEPENDENCY", deps[0] if deps else "DEPENDENCY")
    if d.get("Partition"):
        fix = fix.replace("partition NAME", f"partition {d['Partition']}").replace(
            "sinfo -p NAME", f"sinfo -p {d['Partition']}")
    if reason.startswith("Dependency") and facts.dependencies:
        cause += "; it waits for " + ", ".join(f"job {j}, which {s}" for j, s in
                                                facts.dependencies.items())
    return cause, fix


# "afterok:12(failed),afterany:13_*(unfulfilled)" (slurmctld job_scheduler.c
# _depend_list2str, 22.05 and 24.11: "?" between OR-ed items, "+MINUTES" after a delay).
_DEP_ITEM = re.compile(r"(after\w*|singleton)(?::(\d+)(?:_(\d+|\*))?)?(?:\+\d+)?\((\w+)\)")


def parse_dependency(text: str) -> list[tuple[str, str, str]]:
    """(type, job id, state) of each item Slurm still shows of a Dependency= field; Slurm
    drops the fulfilled ones."""
    return [(m.group(1), m.group(2) + (f"_{m.group(3)}" if m.group(3) else "")
             if m.group(2) else "", m.group(4)) for m in _DEP_ITEM.finditer(text or "")]


_DEP_WORD = {"afterok": "ended successfully (COMPLETED)", "afterany": "ended",
             "afternotok": "failed", "after": "started", "aftercorr": "ran the same task "
             "successfully", "singleton": "no other job of the same name and user was left"}


def _dependency(facts: Facts) -> tuple[str, str]:
    """(cause, fix) for a job whose --after can never be met (DependencyNeverSatisfied):
    which job, which condition, and how that job ended."""
    items = [i for i in parse_dependency(facts.details.get("Dependency", ""))
             if i[2] == "failed"] or parse_dependency(facts.details.get("Dependency", ""))
    ran = "never ran: " if facts.state == "CANCELLED" else "can never run: "
    if not items:
        cause = f"the job {ran}its dependency can never be satisfied (Slurm's reason: " \
                f"{facts.reason})"
        return cause, ("resubmit it once the job it depended on has ended as needed; "
                       "`scontrol show job` of that job says how it ended")
    parts, fixes = [], []
    for kind, dep, _ in items:
        seen = facts.dependencies.get(dep, "")
        parts.append(f"{kind}:{dep} needs job {dep} to have {_DEP_WORD.get(kind, 'ended')}"
                     + (f", but it {seen}" if seen else ""))
        fixes.append(dep)
    cancelled = "; Slurm cancelled it (kill_invalid_depend / --kill-on-invalid-dep=yes)" \
        if facts.state == "CANCELLED" else ""
    cause = f"the job {ran}its dependency can never be satisfied: " + "; ".join(parts) \
        + cancelled
    dep = fixes[0]
    kind = items[0][0]
    fix = (f"find why job {dep} ended so (`hpcjobs why {dep}`), fix it and run it again, then "
           f"resubmit this job with --after NEWID; to run it whatever job {dep}'s end, "
           f"--after {dep}:any" if kind in ("afterok", "afternotok") else
           f"resubmit this job once job {dep} has ended as needed")
    if facts.state == "PENDING":
        fix = f"cancel it (`hpcjobs cancel {facts.job_id}`): it will never start; then {fix}"
    return cause, fix


# --- gathering the facts ---------------------------------------------------------------------

def read_log(path: str | Path) -> list[str]:
    """Lines of the output file's last TAIL_BYTES (bytes as they are; undecodable replaced).
    Only \\n splits lines, as in the terminal."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - TAIL_BYTES))
        data = f.read()
    text = data.decode("utf-8", "replace")
    if size > TAIL_BYTES:
        text = text.split("\n", 1)[-1]
    return text.split("\n")


# The job id in an output file's name as Slurm's defaults and hpcjobs write it:
# slurm-1234.out, slurm-1234_7.out (also NAME-1234.out from -o %x-%j.out).
_ID_IN_NAME = re.compile(r"(?:^|[-_.])(\d+(?:_\d+)?)\.(?:out|err|log)$")


def gather(job_id: str | None, log_file: str | None = None) -> Facts:
    """The facts about a job: Slurm's word (or the record's) and its output. Without a job
    id, ``log_file`` alone: the id is read from its name (slurm-1234.out) when it has one."""
    from hpcjobs import api
    from hpcjobs.errors import BadInput, HpcjobsError

    if job_id is None:
        if not log_file:
            raise BadInput("JOBID", "no job id given", "give one (hpcjobs why 1234) or an output "
                           "file (hpcjobs why --log slurm-1234.out)")
        m = _ID_IN_NAME.search(Path(log_file).name)
        if m is None:
            facts = Facts(Path(log_file).name, source="none")
            facts.notes.append("no job id given (none in the file name): classified from the "
                               "file alone")
            _read_into(facts, Path(log_file))
            return facts
        job_id = m.group(1)
    if not re.match(r"^\d+(_\d+)?$", job_id):
        raise BadInput("JOBID", f"{job_id!r} is not a job id", "give the number sbatch printed, "
                       "e.g. hpcjobs why 1234 (an array task: 1234_7)")
    facts = Facts(job_id)
    run = None
    try:
        rows = api.status([job_id])
        if rows:
            st, run = rows[0]
            facts.state, facts.exit_code, facts.signal = st.state, st.exit_code, st.signal
            facts.reason, facts.restarts, facts.elapsed = st.reason, st.restarts, st.elapsed
            facts.nodes, facts.source = st.nodes, st.source
            _record_into(facts, run)
    except HpcjobsError as e:  # Slurm unreachable: the record and the log still speak
        from hpcjobs import runs

        facts.notes.append(f"Slurm did not answer: {e}")
        run = runs.find(job_id)
        final = run.meta().get("final") if run else None
        if final:
            facts.state, facts.exit_code = final.get("state", "UNKNOWN"), final.get("exit_code")
            facts.signal, facts.reason = final.get("signal"), final.get("reason", "")
            facts.restarts, facts.source = final.get("restarts", 0), "record"
        _record_into(facts, run)
    if facts.state == "UNKNOWN" and facts.source in ("none", ""):
        facts.notes.append("Slurm no longer holds this job and there is no accounting "
                           "(or no record): classified from the output alone")
    path = Path(log_file) if log_file else None
    if path is None:
        try:
            path = api.logs(job_id)
        except BadInput:
            path = None
    if path is not None:
        _read_into(facts, path)
    _slurm_details(facts)
    if facts.state == "UNKNOWN" and not facts.log and run is None:
        raise BadInput("JOBID", f"nothing is known about job {job_id}: Slurm does not hold it, "
                       "hpcjobs has no record of it and no output file was found",
                       "give its output with --log FILE")
    return facts


def _record_into(facts: Facts, run) -> None:
    """What the preflight recorded: the transport, and the last attempt's bad nodes."""
    meta = run.meta() if run else {}
    facts.transport = meta.get("transport") or ""
    hist = meta.get("preflight") or []
    facts.preflight = list(hist[-1].get("bad") or []) if hist else []


def _slurm_details(facts: Facts) -> None:
    """scontrol's fields of a job Slurm still holds (Dependency, TimeLimit, the expected
    StartTime, NumTasks, memory) and how the jobs of its --after stand."""
    from hpcjobs import api, slurm
    from hpcjobs.errors import HpcjobsError

    if facts.source not in ("squeue", "scontrol"):
        return
    try:
        facts.details = slurm.job_fields(facts.job_id)
    except HpcjobsError as e:  # the state is known already; the details are a bonus
        facts.notes.append(f"scontrol show job {facts.job_id} failed: {e}")
        return
    deps = list(dict.fromkeys(d.split("_*")[0] for _, d, _ in
                              parse_dependency(facts.details.get("Dependency", "")) if d))
    if not deps:
        return
    try:
        for st, _run in api.status(deps):
            facts.dependencies[st.job_id] = _how_it_stands(st)
    except HpcjobsError:
        pass


def _how_it_stands(st) -> str:
    if st.state == "UNKNOWN":
        return "is no longer known to Slurm"
    if st.done:
        return f"ended {st.state}" + (f", exit code {st.exit_code}" if st.exit_code else "")
    return f"is {st.state}"


def _read_into(facts: Facts, path: Path) -> None:
    """The output file's lines into ``facts``; another user's file is said in one line."""
    from hpcjobs.errors import BadInput

    try:
        facts.log = read_log(path)
        facts.log_path = str(path)
        return
    except PermissionError:
        raise BadInput("JOBID", f"cannot read {path}: permission denied",
                       "it is another user's job: ask its owner, or give a copy with --log FILE"
                       ) from None
    except OSError:  # not there (yet), a directory
        pass
    if facts.state == "PENDING" or (facts.state == "CANCELLED" and not _ran(facts)):
        facts.notes.append(f"no output file ({path}): the job has not started")
        return
    facts.notes.append(f"output file {path} is missing or unreadable")


def _ran(facts: Facts) -> bool:
    from hpcjobs.slurm import parse_duration

    return bool(parse_duration(facts.elapsed or "0:00")) or facts.restarts > 0


def why(job_id: str | None, log_file: str | None = None) -> Verdict:
    facts = gather(job_id, log_file)
    findings = classify(facts)
    return Verdict(facts.job_id, facts.state, findings, facts.log_path, facts.notes,
                   failure=first_failure(facts), runs=len(runs_of(facts)),
                   exit_code=facts.exit_code, signal=facts.signal, reason=facts.reason)


def explain_lines(lines: Iterable[str], **facts) -> list[Finding]:
    """classify() over given output lines (a convenience for scripts and tests)."""
    return classify(Facts(log=list(lines), **facts))
