"""A retry chain: the attempts of a job submitted with ``--retry N``, and the follower job
that decides each retry (docs/retry.md).

Who drives a retry: a **follower job**, submitted with the attempt and held in Slurm's queue
with ``--dependency=afternotok:ATTEMPT --kill-on-invalid-dep=yes``. Slurm starts it only when
the attempt ended in a failed state (non-zero exit, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY,
CANCELLED) and removes it when the attempt completes. It is one small task (1 CPU, 1 GB, 5
minutes) on whichever node Slurm picks -- never a DOWN one -- and runs ``python -m
hpcjobs.retry``, which reads why the attempt ended (hpcjobs.triage) and resubmits it with the
request adjusted. So a retry needs no client: a user who submitted and logged out still gets
it. The batch script's end hook could not do it: a TIMEOUT, a NODE_FAIL or an out-of-memory kill
of the batch shell end the script before any hook runs; a waiting client would need the user
to stay logged in.

The chain lives in the first attempt's record (``attempts.json``): each attempt's job id, its
record, its follower, and once decided how it ended, the cause, the decision and what changed.
The first job id names the chain: ``status`` shows it with its attempts, ``wait`` waits for the
last attempt, ``cancel`` cancels the live attempt and its follower. Each retry is a new job
with a record of its own (``retry_of`` in its meta).
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from hpcjobs import runs, slurm, watch
from hpcjobs.slurm import JobStatus

# The follower's own request: small, so that it starts wherever a CPU is free.
FOLLOWER_TIME = "5"  # minutes
FOLLOWER_MEM = "1G"


@dataclass
class Attempt:
    """One attempt of a chain, as attempts.json keeps it."""

    attempt: int
    job_id: str
    run_dir: str = ""
    follower: str | None = None  # the job that decides after this attempt; None: no retry left
    submitted: str = ""
    ended: dict = field(default_factory=dict)  # state, exit_code, signal, elapsed, nodes
    cause: str = ""  # hpcjobs why's key (time_limit, node_fail, ...)
    cause_text: str = ""
    decision: str = ""  # "" (not decided) | retry | stop
    message: str = ""  # what was decided, in words
    changed: dict = field(default_factory=dict)  # option -> [old, new]
    next: str | None = None  # the job id of the next attempt

    @classmethod
    def from_dict(cls, d: dict) -> Attempt:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})

    def status(self) -> JobStatus | None:
        """How it ended, as the follower saw it; None before that."""
        if not self.ended:
            return None
        return JobStatus.from_dict({"job_id": self.job_id, "source": "record", **self.ended})


def chain_of(run: runs.Run | None) -> list[Attempt]:
    """The attempts of the chain a record heads; [] for any other record."""
    if run is None:
        return []
    return [Attempt.from_dict(a) for a in run.attempts().get("attempts", [])]


def follower_script(chain_dir: Path, job_id: str, python: str) -> str:
    """The follower's batch script: every value shell-quoted; its request is on sbatch's
    command line (:func:`arm`). ``python``: the interpreter that submitted (it has all of
    hpcjobs; the job's own --python may have only what the program needs). The cluster profile
    is the one the attempt's record names."""
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"# hpcjobs: decides whether job {job_id} is retried (docs/retry.md). Slurm starts this",
        "# job only if that one ends in a failed state (afternotok) and removes it otherwise.",
        f"export HPCJOBS_RUNS_DIR={q(str(runs.root().resolve()))}",
    ]
    lines.append(f"exec {q(python)} -m hpcjobs.retry {q(str(chain_dir))} {q(job_id)}")
    return "\n".join(lines) + "\n"


def arm(chain: runs.Run, attempt_run: runs.Run, job_id: str, spec, *, python: str | None = None,
        cwd: str | None = None) -> str:
    """Queue the follower of attempt ``job_id``; returns its job id."""
    python = python or sys.executable
    script = attempt_run.path / "retry.sbatch"
    runs.atomic_write(script, follower_script(chain.path, job_id, python), 0o700)
    first = chain.job_id or job_id
    args = [f"--job-name=hpcjobs-retry-{first}", "--nodes=1", "--ntasks=1", "--cpus-per-task=1",
            f"--mem={FOLLOWER_MEM}", f"--time={FOLLOWER_TIME}", f"--partition={spec.partition}",
            f"--output={attempt_run.path}/retry-%j.out", "--open-mode=append", "--no-requeue",
            f"--chdir={cwd or os.getcwd()}", f"--dependency=afternotok:{job_id}",
            "--kill-on-invalid-dep=yes"]
    args += [f"--account={spec.account}"] if spec.account else []
    args += [f"--qos={spec.qos}"] if spec.qos else []
    return slurm.sbatch(str(script), extra=args, cwd=cwd)


def start(run: runs.Run, job_id: str, spec, *, retry_of: str | None = None,
          cwd: str | None = None) -> str | None:
    """After a held submission (sbatch --hold) of a job with ``--retry``: record the attempt in
    its chain, queue its follower while retries are left, then release the job. Returns the
    follower's id (None when the budget is spent). On any failure the caller cancels the job."""
    chain = run if retry_of is None else runs.find(retry_of)
    if chain is None:
        from hpcjobs.errors import BadInput

        raise BadInput("retry", f"no record of job {retry_of}, the first of the chain",
                       "resubmit the job with --retry")
    data = chain.attempts() if retry_of else {
        "first": job_id, "budget": spec.retry, "time_factor": spec.retry_time_factor,
        "mem_factor": spec.retry_mem_factor, "attempts": []}
    done = data.get("attempts", [])
    n = len(done) + 1
    follower = arm(chain, run, job_id, spec, cwd=cwd) if n - 1 < data["budget"] else None
    try:
        entry = Attempt(n, job_id, str(run.path), follower, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        if done:
            done[-1]["next"] = job_id
        data["attempts"] = [*done, entry.__dict__]
        chain.write_attempts(data)
        if retry_of:
            run.update_meta(retry_of=retry_of, attempt=n)
        slurm.release([job_id])
    except BaseException:
        if follower:  # before the caller cancels the attempt, which would set it off
            slurm.scancel([follower])
        raise
    return follower


# --- the chain in status, wait, cancel, logs ---------------------------------------------------

@dataclass
class Chain:
    """The first job id of a retry chain, with the Slurm ids to ask about."""

    job_id: str
    run: runs.Run
    attempts: list[Attempt]

    @property
    def last(self) -> Attempt:
        return self.attempts[-1]

    @property
    def ask(self) -> list[str]:
        ids = [a.job_id for a in self.attempts]
        if self.last.follower:
            ids.append(self.last.follower)
        return ids

    def attempt_status(self, a: Attempt, found: dict[str, JobStatus]) -> JobStatus:
        """An attempt's status: Slurm's, else what its follower recorded, else its record's."""
        st = found.get(a.job_id)
        if st is not None and st.state != "UNKNOWN":
            return st
        recorded = a.status()
        if recorded is not None:
            return recorded
        # The head's record "final" is the chain's end, written once a watcher saw the chain
        # end: it is the last attempt's (the first's only while the chain has no other).
        if a is self.last:
            final = self.run.meta().get("final")
            if final:
                return JobStatus.from_dict({**final, "job_id": a.job_id, "source": "record"})
        if a.job_id != self.job_id:
            kept = watch.from_record(a.job_id)
            if kept is not None:
                return kept
        return st or JobStatus(a.job_id, "UNKNOWN", source="none")

    def fold(self, found: dict[str, JobStatus]) -> JobStatus:
        """The chain's status under its first id: the last attempt's, except while a follower
        decides (then PENDING, so that watchers wait on)."""
        last = self.last
        st = self.attempt_status(last, found)
        if not st.done and st.state != "UNKNOWN":
            if len(self.attempts) > 1:  # a watcher shows that the chain moved on
                st = replace(st, reason=f"attempt {last.attempt} is job {last.job_id}"
                             + (f": {st.reason}" if st.reason else ""))
            return replace(st, job_id=self.job_id)
        if st.state == "COMPLETED":
            return replace(st, job_id=self.job_id)
        if last.decision == "stop":
            return replace(st, job_id=self.job_id)
        fst = found.get(last.follower) if last.follower else None
        if fst is not None and not fst.done and fst.state != "UNKNOWN":
            n = len(self.attempts)
            return JobStatus(self.job_id, "PENDING", name=st.name, partition=st.partition,
                             user=st.user, source=st.source, restarts=st.restarts,
                             reason=f"attempt {n} (job {last.job_id}) ended {st.state}: job "
                                    f"{last.follower} decides the retry")
        return replace(st, job_id=self.job_id)

    def cancel_order(self, found: dict[str, JobStatus]) -> list[list[str]]:
        """The follower first (so that cancelling the attempt does not set it off), then the
        live attempt."""
        rounds = []
        f = self.last.follower
        if f and f in found and not found[f].done and found[f].state != "UNKNOWN":
            rounds.append([f])
        st = found.get(self.last.job_id)
        if st is not None and not st.done and st.state != "UNKNOWN":
            rounds.append([self.last.job_id])
        return rounds

    def outputs(self) -> list[tuple[str, Path, int]]:
        """(job id, output file, attempt number) of every attempt, in order."""
        out = []
        for a in self.attempts:
            rec = runs.Run(Path(a.run_dir)) if a.run_dir else self.run
            try:
                out_dir = Path(rec.spec().get("output_dir") or rec.path)
            except (OSError, ValueError):
                out_dir = rec.path
            out.append((a.job_id, out_dir / f"slurm-{a.job_id}.out", a.attempt))
        return out


def view(run: runs.Run | None, job_id: str) -> Chain | None:
    """The chain ``job_id`` heads, or None (any other job, an attempt asked by its own id)."""
    if run is None or "_" in job_id or run.job_id != job_id:
        return None
    chain = chain_of(run)
    return Chain(job_id, run, chain) if chain else None
