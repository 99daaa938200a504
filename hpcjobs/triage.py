"""``hpcjobs why JOBID``: why did this job end the way it did? One cause, its evidence, the fix.

Reads Slurm's state and exit code and the job's own output, and names the cause: time limit,
preempted / requeued, node failure, out of memory (host or CUDA), NCCL timeout, NCCL over TCP
sockets (``NET/Socket``), the master port already in use (``EADDRINUSE``), a missing module or
command, an abort in a C++ destructor at exit (std::terminate), or a plain non-zero exit. Each finding carries the line that proves it (file:line, or
Slurm's own fields) and what to do.

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
         "ask for more memory (sbatch --mem / --mem-per-cpu), run fewer tasks per node, or "
         "load less at once (smaller batches, memory-mapped data, CPU offload off)"),
    Rule("oom_killed", "a task was killed by SIGKILL, as the kernel's out-of-memory killer does",
         r"task \d+: Killed$|^Killed$",
         "if the node ran out of memory (`dmesg` / the node's syslog say \"Out of memory: Killed "
         "process\"), ask for more memory (--mem) or load less at once; else find who sent "
         "SIGKILL"),
    Rule("missing_module", "a module or command is missing on the nodes",
         r"ModuleNotFoundError: No module named|ImportError: |: command not found|"
         r"error while loading shared libraries|execve\(\): .*No such file or directory",
         "install it into the Python the job uses (hpcjobs submit --python PATH; check with "
         "`srun -N1 PYTHON -c 'import NAME'`) or load its environment module in the job"),
    Rule("port_in_use", "the rendezvous (master) port is already in use",
         r"EADDRINUSE|[Aa]ddress already in use|MASTER_PORT: port \d+ is already in use",
         "another job or step on the first node holds MASTER_PORT: let hpcjobs.launch derive it "
         "(it is unique per job and step) or export MASTER_PORT=<a free port below 32768>"),
    Rule("node_fail", "a node failed during the job",
         r"DUE TO NODE FAILURE|Node failure on|NODE_FAIL|DUE TO JOB NOT RUNNING",
         "resubmit with --requeue (Slurm restarts the job when nodes are back) and checkpoint "
         "with hpcjobs.preempted(); check the node: `scontrol show node NAME`, `hpcjobs doctor`"),
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
CAUSES = ("preflight", "cred_revoked", "oom_cuda", "oom_host", "hung", "missing_module", "port_in_use", "node_fail",
          "warning_unhandled", "nccl_timeout", "time_limit", "preempted", "oom_killed",
          "abort_at_exit")
# srun's own lines once it tears a step down: a task "Killed" after these was killed by srun
# (--kill-on-bad-exit, a cancel), not by the kernel.
_TEARDOWN = re.compile(r"_step_signal: Terminating|forcing job termination|Job step aborted|"
                       r"CANCELLED AT|Force Terminated")
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
    source: str = ""  # scontrol | sacct | record | none
    log_path: str = ""
    log: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    transport: str = ""  # what the preflight saw the backend use (run record), if it ran
    preflight: list[dict] = field(default_factory=list)  # its last attempt's bad nodes (record)

    def slurm_line(self) -> str:
        ec = "" if self.exit_code is None else f" ExitCode={self.exit_code}:{self.signal or 0}"
        parts = [f"JobState={self.state}{ec}"]
        if self.reason:
            parts.append(f"Reason={self.reason}")
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

    @property
    def primary(self) -> Finding:
        return self.findings[0]

    def to_dict(self) -> dict:
        return {"job_id": self.job_id, "state": self.state, "log": self.log_path,
                "cause": self.primary.key, "findings": [asdict(f) for f in self.findings],
                "notes": self.notes}

    def text(self) -> str:
        lines = [f"job {self.job_id}: {self.state}" + (f"  (output: {self.log_path})"
                                                        if self.log_path else "")]
        for i, f in enumerate(self.findings):
            lines.append(("cause:    " if i == 0 else "also:     ") + f.cause)
            lines.append(f"evidence: {f.evidence}")
            lines.append(f"fix:      {f.fix}")
        lines += [f"note:     {n}" for n in self.notes]
        return "\n".join(lines)


def _first(log: list[str], pattern: str, name: str) -> str | None:
    rx = re.compile(pattern)
    for i, line in enumerate(log, 1):
        if rx.search(line):
            return f"{name}:{i}: {line.strip()[:400]}"
    return None


def classify(facts: Facts) -> list[Finding]:
    """The findings for a job, the cause first. Pure: no Slurm, no files."""
    name = Path(facts.log_path).name if facts.log_path else "output"
    hits = {r.key: ev for r in RULES if (ev := _first(facts.log, r.pattern, name))}
    if "oom_killed" in hits:
        killed = int(hits["oom_killed"].split(":")[1])
        down = next((i for i, ln in enumerate(facts.log, 1) if _TEARDOWN.search(ln)), None)
        if down is not None and down < killed:
            del hits["oom_killed"]
    slurm = facts.slurm_line()
    findings: list[Finding] = []

    def add(key: str, evidence: str | None = None, cause: str | None = None, fix: str | None = None):
        if any(f.key == key for f in findings):
            return
        r = RULE.get(key)
        if key == "hung" and cause is None:
            cause, fix = _hung(facts.log)
        findings.append(Finding(key, cause or r.cause, evidence or hits.get(key) or slurm,
                                fix or r.fix))

    state = facts.state
    if state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED"):
        if state == "PENDING" and facts.restarts and facts.reason == "BeginTime":
            add("requeued", slurm, fix="it runs again when Slurm's requeue delay (about 2 "
                "minutes) has passed; to start it now: scontrol update jobid="
                f"{facts.job_id} StartTime=now")
        else:
            add("running", slurm, cause=f"the job has not ended ({state}"
                + (f", {facts.reason}" if facts.reason else "") + ")",
                fix="`hpcjobs why` explains ended jobs; follow it with `hpcjobs logs -f "
                f"{facts.job_id}` or wait with `hpcjobs wait {facts.job_id}`")
        return findings

    if state in STATE_CAUSE:
        # Slurm's state is the cause; a line of the output that shows it is the better evidence.
        key = STATE_CAUSE[state]
        add(key, hits.get(key) or slurm)
    elif state == "CANCELLED" and "time_limit" in hits:
        add("time_limit")
    elif state == "CANCELLED" and not any(k in hits for k in CAUSES):
        add("cancelled", _first(facts.log, r"CANCELLED AT", name) or slurm,
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
        elif facts.exit_code or state in ("FAILED", "UNKNOWN", "DEADLINE", "SPECIAL_EXIT"):
            evidence = _last_error(facts.log, name)
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

    # Remarks that matter whatever the cause.
    if facts.restarts or "requeued" in hits:
        n = facts.restarts
        add("requeued", hits.get("requeued") or slurm,
            cause=f"the job was requeued {n} time{'s' * (n != 1)} (same job id)" if n else None)
    remarks = ("node_fail", "time_limit", "preempted", "preflight") if state == "COMPLETED" else ()
    for key in (*remarks, "hung", "not_requeueable", "nccl_timeout", "nccl_socket"):
        if key in hits:
            add(key)
    _preflight_findings(findings, facts)
    return findings


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


_SLURM_OWN = re.compile(r"^(srun|slurmstepd)(-\S+)?: |^hpcjobs: ")


def _last_error(log: list[str], name: str) -> str | None:
    """The program's last line that looks like an error (a traceback's last line says what
    failed); srun's own "task 0: Exited with exit code N" only if the program said nothing."""
    for own in (False, True):
        for i in range(len(log), 0, -1):
            line = log[i - 1]
            if _ERRORISH.search(line) and bool(_SLURM_OWN.search(line)) == own:
                return f"{name}:{i}: {line.strip()[:400]}"
    return None


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
    facts.notes.append(f"output file {path} is missing or unreadable")


def why(job_id: str | None, log_file: str | None = None) -> Verdict:
    facts = gather(job_id, log_file)
    return Verdict(facts.job_id, facts.state, classify(facts), facts.log_path, facts.notes)


def explain_lines(lines: Iterable[str], **facts) -> list[Finding]:
    """classify() over given output lines (a convenience for scripts and tests)."""
    return classify(Facts(log=list(lines), **facts))
