"""Watching jobs without loading slurmctld: one Slurm call per poll for every job watched, at
an interval that grows while nothing changes.

``hpcjobs wait``, ``submit --wait``, ``logs --follow`` and ``status`` all read job states
through :func:`lookup`: one ``squeue -t all`` for all the jobs asked (jobs that ended within
MinJobAge included, with exit codes), then one ``sacct`` for the ones Slurm no longer holds
(where accounting exists), then the run record's final state. An array's parent id stands for
all of its tasks: one status with the tasks in ``tasks`` (:func:`combine`).

:func:`watch` polls at 1 s, then 1.5x longer after every poll that saw no change, up to 30 s,
and back to 1 s after a change (a job started, ended, changed reason or node). After k quiet
polls the interval is about half the time since the last change, so the end of a job is seen
at most ~half the time it has been in its state plus 1 s late, and never more than 30 s late:
a job that runs 1 s is seen to end within ~1-2 s of its end, one pending for an hour costs
two RPCs per 30 s. Measured: docs/benchmarks.md, "Watching jobs: load on slurmctld".

Pure but for :func:`lookup` (Slurm, records) and the clock, which the tests replace.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from hpcjobs import runs, slurm
from hpcjobs.errors import BadInput
from hpcjobs.slurm import JobStatus, format_duration

FIRST = 1.0  # seconds between the first polls and after every change
FACTOR = 1.5  # growth per poll without a change
CAP = 30.0  # the longest interval: how late a job's end is seen at worst

JOB_ID = re.compile(r"^\d+(_\d+)?$")
# States in which a job (or task) holds nodes.
ACTIVE = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "SIGNALING", "STAGE_OUT",
          "RESIZING", "STOPPED"}


def check_ids(job_ids: list[str]) -> list[str]:
    """Job ids as given, once each; a value that is not one is bad input (nothing done)."""
    bad = [j for j in job_ids if not JOB_ID.match(j)]
    if bad:
        raise BadInput("JOBID", f"{bad[0]!r} is not a job id",
                       "give the number sbatch printed, e.g. 1234 (an array task: 1234_7)")
    if not job_ids:
        raise BadInput("JOBID", "no job id given", "e.g. hpcjobs wait 1234")
    return list(dict.fromkeys(job_ids))


# --- what Slurm (or the record) says about each job ------------------------------------------

def lookup(job_ids: list[str], *, records: bool = True) -> dict[str, JobStatus]:
    """The status of each id asked, from one squeue (then one sacct for the rest).

    A job Slurm no longer holds and accounting does not know comes from its run record's
    final state; with no record either it is UNKNOWN with source "none" (:func:`unknown`).
    """
    found: dict[str, JobStatus] = {}
    for st in slurm.squeue_jobs(job_ids):
        found.setdefault(st.job_id, st)
    missing = [j for j in job_ids if not _tasks_of(j, found)]
    if missing:
        for st in slurm.sacct_jobs(missing):
            found.setdefault(st.job_id, st)
    out = {}
    for jid in job_ids:
        st = resolve(jid, found)
        if st.state == "UNKNOWN" and records:
            st = from_record(jid) or st
        out[jid] = st
    return out


def _tasks_of(jid: str, found: dict[str, JobStatus]) -> list[JobStatus]:
    if jid in found:
        return [found[jid]]
    return [s for k, s in found.items() if k.startswith(jid + "_")] if "_" not in jid else []


def resolve(jid: str, found: dict[str, JobStatus]) -> JobStatus:
    """One status for ``jid`` among what Slurm listed: the job, the task, or the array."""
    tasks = _tasks_of(jid, found)
    if not tasks:
        return JobStatus(job_id=jid, state="UNKNOWN", source="none")
    if len(tasks) == 1 and tasks[0].job_id == jid:
        return tasks[0]
    return combine(jid, tasks)


def from_record(jid: str) -> JobStatus | None:
    """The final state the record keeps (written when a watcher saw the end), or an
    UNKNOWN status saying Slurm forgot the job, for a recorded job; None without a record."""
    run = runs.find(jid)
    if run is None:
        return None
    final = run.meta().get("final")
    if final:
        st = JobStatus.from_dict({**final, "source": "record"})
        if "_" in jid and st.job_id != jid:  # one task of a recorded array
            st = next((t for t in st.tasks if t.job_id == jid), None)
            if st is None:
                return None
            st = replace(st, source="record")
        return st
    return JobStatus(job_id=jid, state="UNKNOWN", source="record",
                     reason="Slurm no longer holds it and no accounting knows it")


def unknown(st: JobStatus) -> bool:
    """Nobody knows this job: not in the queue, not recorded, not in accounting."""
    return st.state == "UNKNOWN" and st.source == "none"


def no_such_job(job_ids: list[str]) -> BadInput:
    where = "not in accounting" if slurm.accounting_enabled() else \
        "and this cluster keeps no accounting"
    ids = ", ".join(job_ids)
    return BadInput("JOBID", f"{ids}: no such job (not in the queue, not recorded, {where})",
                    "check the id (hpcjobs status lists the jobs hpcjobs submitted)")


def task_index(job_id: str) -> int:
    """Sort key of an array task id: "12_3" -> 3, "12_[4-7]" -> 4."""
    m = re.search(r"_\[?(\d+)", job_id)
    return int(m.group(1)) if m else -1


def combine(job_id: str, tasks: list[JobStatus]) -> JobStatus:
    """One status for a job array: running while any task is, done when every task is,
    COMPLETED only if every task completed (else the first task that did not, with its exit
    code). The tasks are kept, in index order."""
    tasks = sorted(tasks, key=lambda t: task_index(t.job_id))
    if not tasks:
        return JobStatus(job_id, "UNKNOWN", source="none")
    first = tasks[0]
    secs = [t.seconds for t in tasks if t.seconds is not None]
    common = dict(name=first.name, partition=first.partition, user=first.user,
                  source=first.source, restarts=max(t.restarts for t in tasks),
                  elapsed=format_duration(max(secs)) if secs else "", tasks=tasks)
    live = [t for t in tasks if not t.done]
    if live:
        active = [t for t in live if t.state in ACTIVE]
        pick = active[0] if active else live[0]
        return JobStatus(job_id, pick.state, reason=pick.reason if not active else "",
                         nodes=_union(t.nodes for t in active), **common)
    bad = [t for t in tasks if t.state != "COMPLETED"]
    pick = bad[0] if bad else tasks[-1]
    return JobStatus(job_id, pick.state, reason=pick.reason, exit_code=pick.exit_code,
                     signal=pick.signal, nodes=_union(t.nodes for t in tasks), **common)


def _union(nodelists) -> str:
    """The nodes of many tasks as one Slurm host list ("node[1-3]"), by python-hostlist."""
    lists = [n for n in nodelists if n]
    if not lists:
        return ""
    import hostlist

    try:
        return hostlist.collect_hostlist([h for n in lists for h in hostlist.expand_hostlist(n)])
    except hostlist.BadHostlist:
        return ",".join(dict.fromkeys(lists))


def task_summary(st: JobStatus) -> str:
    """ "4 tasks: 2 COMPLETED, 1 RUNNING, 1 PENDING" for an array; "" for a plain job."""
    if not st.tasks:
        return ""
    counts = Counter(t.state for t in st.tasks)
    n = len(st.tasks)
    return f"{n} task{'s' * (n != 1)}: " + ", ".join(f"{c} {s}" for s, c in counts.most_common())


def describe(st: JobStatus) -> str:
    """A job's state in words: "PENDING (Resources)", "RUNNING on node[1-3]",
    "FAILED, exit code 3", with an array's task counts."""
    text = st.state
    if st.state == "UNKNOWN" and st.reason:
        text += f" ({st.reason})"
    elif st.done:
        if st.exit_code is not None:
            text += f", exit code {st.exit_code}"
            if st.signal:
                text += f" (signal {st.signal})"
        if st.reason and st.reason not in ("NonZeroExitCode",):
            text += f", reason {st.reason}"
    elif st.state in ACTIVE and st.nodes:
        text += f" on {st.nodes}"
    elif st.reason:
        text += f" ({st.reason})"
    if st.restarts:
        text += f", restarted {st.restarts}x"
    summary = task_summary(st)
    return f"{text} [{summary}]" if summary else text


def describe_end(st: JobStatus) -> str:
    """The one line that says how a job ended: "job 12 ended FAILED, exit code 3, ran 0:00:04"."""
    if st.state == "UNKNOWN":
        return f"job {st.job_id}: end unknown ({st.reason or 'Slurm no longer knows it'})"
    text = f"job {st.job_id} ended {describe(st)}"
    if st.seconds is not None:
        text += f", ran {format_duration(st.seconds)}"
    return text


# --- polling ---------------------------------------------------------------------------------

@dataclass
class Backoff:
    """The interval between polls: ``first`` after a change, ``factor`` longer after each
    poll without one, never more than ``cap``."""

    first: float = FIRST
    factor: float = FACTOR
    cap: float = CAP
    _next: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._next = self.first

    def after(self, changed: bool) -> float:
        if changed:
            self._next = self.first
        delay = self._next
        self._next = min(self.cap, self._next * self.factor)
        return delay


@dataclass
class Change:
    job_id: str
    old: JobStatus | None  # None at the first poll
    new: JobStatus
    at: float  # seconds since the watch began


@dataclass
class Poll:
    """What one poll saw: every job's latest status, and which of them changed."""

    at: float
    statuses: dict[str, JobStatus]
    changes: list[Change]
    timed_out: bool = False

    @property
    def done(self) -> bool:
        return all(st.done or st.state == "UNKNOWN" for st in self.statuses.values())


def _key(st: JobStatus | None) -> tuple:
    if st is None:
        return ()
    return (st.state, st.reason, st.nodes, st.restarts, tuple((t.job_id, t.state) for t in st.tasks))


def watch(job_ids: list[str], fetch: Callable[[list[str]], dict[str, JobStatus]] = lookup, *,
          timeout: float | None = None, backoff: Backoff | None = None,
          on_tick: Callable[[float], None] | None = None, tick: float = 1.0,
          clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> Iterator[Poll]:
    """Poll until every job has ended (or ``timeout`` seconds passed): one ``fetch`` call per
    poll for all the jobs still running, at :class:`Backoff` intervals. Yields a :class:`Poll`
    after each call; the last one has ``done`` or ``timed_out`` set.

    ``on_tick(seconds since start)`` runs every ``tick`` seconds while waiting (a live line, a
    file to read): it costs Slurm nothing.
    """
    backoff = backoff or Backoff()
    start = clock()
    last: dict[str, JobStatus] = {}
    watching = list(job_ids)
    while True:
        got = fetch(watching)
        now = clock() - start
        changes = []
        for jid in watching:
            st = got[jid]
            if _key(st) != _key(last.get(jid)):
                changes.append(Change(jid, last.get(jid), st, now))
            last[jid] = st
        # An ended job is not asked about again: the next squeue lists only the others.
        watching = [j for j in watching if not (last[j].done or last[j].state == "UNKNOWN")]
        over = timeout is not None and now >= timeout
        yield Poll(now, dict(last), changes, timed_out=bool(watching) and over)
        if not watching or over:
            return
        delay = backoff.after(bool(changes))
        if timeout is not None:
            delay = min(delay, max(0.0, timeout - (clock() - start)))
        _pause(delay, start, clock, sleep, on_tick, tick)


def _pause(delay: float, start: float, clock, sleep, on_tick, tick: float) -> None:
    end = clock() + delay
    while True:
        left = end - clock()
        if left <= 0:
            return
        sleep(min(left, tick) if on_tick else left)
        if on_tick:
            on_tick(clock() - start)
