"""The public Python API: what the CLI does, callable from a script.

    from hpcjobs import JobSpec, submit, wait
    sub = submit(JobSpec(kind="mpi", nodes=3, program=["python3", "examples/mpi_allreduce.py"]))
    final = wait(sub.job_id)

Data flows one way: profile + spec -> prepare (validate, kind checks, plan, once: a
:class:`Prepared`) -> render -> record -> Slurm. Errors are :mod:`hpcjobs.errors` classes carrying the CLI's exit codes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Callable

from hpcjobs import prepared, runs, slurm
from hpcjobs.cluster import Cluster, load_cluster
from hpcjobs.errors import BadInput, JobFailed
from hpcjobs.prepared import Prepared
from hpcjobs.rendering import Rendered, materialize
from hpcjobs.runs import Run
from hpcjobs.slurm import JobStatus
from hpcjobs.spec import JobSpec

__all__ = [  # exactly the names of docs/api.md (tests/unit/test_public_api.py)
    "Cancelled", "Cluster", "JobSpec", "JobStatus", "Output", "Prepared", "Run", "Submission",
    "attempts", "cancel", "describe", "describe_end", "load_cluster", "logs", "outputs", "plan",
    "prepare", "queue", "read_output", "render", "status", "submit", "task_summary", "unknown",
    "wait", "wait_all", "watch_jobs",
]


@dataclass
class Submission:
    job_id: str | None  # None for a dry run
    run: Run | None
    rendered: Rendered
    follower: str | None = None  # --retry: the job that decides a retry if this one fails
    array: object | None = None  # an array split into chunks: its hpcjobs.arrays.Plan


def prepare(spec: JobSpec, cluster: Cluster | None = None) -> Prepared:
    """Validate a spec against the cluster and its kind, plan it once; refuse what cannot run.

    The result is what :func:`render` and :func:`submit` take: nothing is checked, defaulted or
    planned again after this.
    """
    return prepared.prepare(spec, cluster or load_cluster())


def plan(spec: JobSpec, cluster: Cluster | None = None):
    """The kind's plan (numbers and verdict) without refusing; None for kinds without one."""
    cluster = cluster or load_cluster()
    s, kind = prepared.complete(spec, cluster)
    return kind.plan(s, cluster)


def render(job: JobSpec | Prepared, cluster: Cluster | None = None, *, direct: bool = False) -> Rendered:
    """The script (and side files) of a job; ``direct``: the generic job_templates/<kind>.sbatch."""
    cluster = cluster or (job.cluster if isinstance(job, Prepared) else load_cluster())
    if direct:
        spec = job.spec if isinstance(job, Prepared) else job
        if not isinstance(job, Prepared):
            prepared.check_direct(spec)  # nothing the generic script would drop
        job = prepared.prepare_direct(spec.kind, cluster, nodes=spec.nodes, time=spec.time,
                                      partition=spec.partition, options=spec.options)
    elif not isinstance(job, Prepared):
        job = prepare(job, cluster)
    return materialize(job)


def submit(job: JobSpec | Prepared, cluster: Cluster | None = None, *, dry_run: bool = False,
           retry_of: str | None = None) -> Submission:
    """Render, record and submit a job (a spec, or what :func:`prepare` returned).

    Nothing is written unless sbatch accepts the job. An array larger than Slurm's limits
    (MaxArraySize, max_array_tasks, read from ``scontrol show config``) goes in as several
    Slurm arrays under one logical id (hpcjobs/arrays.py). With ``spec.retry`` the job is
    submitted held, its follower queued (hpcjobs/chains.py), then released. ``retry_of``: the
    first job of the retry chain this submission continues (hpcjobs.retry passes it).
    """
    if not isinstance(job, Prepared):
        job = prepare(job, cluster)
    cluster = job.cluster
    run_path = runs.new_run_path(job.kind.name)
    given_output_dir = job.spec.output_dir
    if given_output_dir is None:
        job = replace(job, spec=replace(job.spec, output_dir=str(run_path)))
    s = job.spec
    rendered = materialize(job, run_dir=str(run_path))
    if dry_run:
        return Submission(None, None, rendered)
    if given_output_dir is not None and not os.path.isdir(s.output_dir):
        # Slurm does not create it: the job would run and its output would be lost.
        raise BadInput("--output-dir", f"{s.output_dir} is not a directory",
                       "create it first (mkdir -p) or leave --output-dir out")
    prepared.check_with_slurm(job)  # what only the live Slurm knows (render/--dry-run: the profile)
    meta = {
        "kind": s.kind, "cluster": cluster.name, "cluster_source": cluster.source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cwd": os.getcwd(),
        "user": _user(),
        **runs.git_state(s.program, s.chdir),
    }
    # The plan as submitted: `hpcjobs report` sets the job's peak memory against it.
    plan_file = {"plan.json": json.dumps(job.plan.to_dict(), indent=2) + "\n"} if job.plan else {}
    run = runs.create(run_path, rendered.script, s.to_dict(), {**rendered.files, **plan_file}, meta)
    from hpcjobs import arrays

    split = None
    try:
        if s.array:
            split = arrays.plan(s.array, slurm.array_limits())
        if split is not None:
            ids = arrays.submit(run, split, arrays.Submit(
                str(run.script), list(s.env_pass), _dependency(s), s.chdir, sys.executable,
                s.partition, s.account, s.qos))
            job_id = ids[0]
        else:
            # An array's tasks are told offset 0, stride 1 (arrays.export_of): values the
            # submitting shell inherited from a task of another array must not count.
            items = [*s.env_pass, *(arrays.export_of(None) if s.array else [])]
            extra = [f"--export=ALL,{','.join(items)}"] if items else []
            job_id = slurm.sbatch(str(run.script), extra=extra + (["--hold"] if s.retry else []),
                                  cwd=s.chdir)
            ids = [job_id]
    except BaseException:
        runs.discard(run)
        raise
    run.update_meta(job_id=job_id, submitted=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    **({"array": split.to_dict()} if split else {}))
    for jid in ids:
        runs.link_job(run, jid)
    follower = None
    if s.retry:
        from hpcjobs import chains

        try:
            follower = chains.start(run, job_id, s, retry_of=retry_of, cwd=s.chdir)
        except BaseException:
            slurm.scancel([job_id])  # held: it never ran
            runs.discard(run)
            raise
    return Submission(job_id, run, rendered, follower, split)


def _dependency(s: JobSpec) -> str | None:
    from hpcjobs.spec import dependency

    return dependency(s)


def attempts(job_id: str) -> list:
    """The attempts of the retry chain ``job_id`` heads (``submit --retry``), from its record
    (no Slurm call): [hpcjobs.chains.Attempt], [] for any other job. Each ended attempt has
    how it ended, the cause, the decision and what changed; the last one's state is
    ``status(job_id)``'s."""
    from hpcjobs import chains

    run = runs.find(job_id) if "_" not in job_id else None
    return chains.chain_of(run) if run is not None and run.job_id == job_id else []


def _views(job_ids: list[str]) -> dict:
    """{id: its logical view} for the ids that stand for several Slurm jobs: a split array
    (hpcjobs.arrays.LogicalArray) or a retry chain (hpcjobs.chains.Chain)."""
    from hpcjobs import arrays, chains

    out = {}
    recorded = runs.recorded_ids()
    for jid in job_ids:
        if jid.split("_")[0] not in recorded:
            continue
        run = runs.find(jid)
        v = arrays.view(run, jid) or chains.view(run, jid)
        if v is not None:
            out[jid] = v
    return out


def _lookup(job_ids: list[str], views: dict | None = None,
            raw: dict | None = None) -> dict[str, JobStatus]:
    """hpcjobs.watch.lookup with the logical ids folded in: still one squeue (then one sacct)
    for every Slurm job behind them; a split array's chunks, a retry chain's attempts and
    follower. Plain ids as watch.lookup gives them (the record's end when Slurm forgot).
    ``raw``, when given, receives Slurm's statuses of the jobs behind the logical ids."""
    from hpcjobs import watch

    views = _views(job_ids) if views is None else views
    if not views:
        return watch.lookup(job_ids)
    ask = []
    for jid in job_ids:
        ask += views[jid].ask if jid in views else [jid]
    found = watch.lookup(list(dict.fromkeys(ask)), records=False)
    if raw is not None:
        raw.update(found)
    out = {}
    for jid in job_ids:
        v = views.get(jid)
        if v is None:
            st = found[jid]
            out[jid] = (watch.from_record(jid) or st) if st.state == "UNKNOWN" else st
            continue
        out[jid] = v.fold(found)
        if hasattr(v, "keep"):
            v.keep(found)
    return out


def status(job_ids: list[str] | None = None, *, limit: int = 20, states: list[str] | None = None,
           kind: str | None = None, expand: bool = False) -> list[tuple[JobStatus, Run | None]]:
    """Status of the given jobs, or of the most recent ``limit`` recorded ones (0: all), with
    one squeue for all of them (and one sacct for those Slurm no longer holds).

    An array is one row whose ``tasks`` hold its tasks; ``expand`` gives a row per task.
    ``states`` (names or squeue's short codes: PD, R, CD, F, ...) and ``kind`` filter the rows.
    A job nobody knows (not in the queue, not recorded, not in accounting) comes back with
    state UNKNOWN and source "none". Raises BadInput for a value that is not a job id.
    """
    from hpcjobs import watch

    wanted = _states_filter(states)
    _kind_filter(kind)
    if job_ids:
        ids = watch.check_ids(list(job_ids))
        found = _lookup(ids)
        rows = [(found[j], runs.find(j)) for j in ids]
    else:
        # A retry's own record shows under the chain's first id (its "retry_of").
        recorded = [r for r in runs.all_runs() if r.job_id and not r.meta().get("retry_of")]
        if limit and not (wanted or kind):
            recorded = recorded[-limit:]
        rows, ask = [], []
        for r in recorded:
            final = r.meta().get("final")
            if final:  # ended and seen so by a watcher: no need to ask Slurm
                rows.append((JobStatus.from_dict({**final, "source": "record"}), r))
            else:
                ask.append(r)
        found = _lookup([r.job_id for r in ask]) if ask else {}
        rows += [(found[r.job_id], r) for r in ask]
        rows.sort(key=lambda x: _id_key(x[0].job_id))
    for st, r in rows:
        _keep_final(st, r)
    rows = _filtered(rows, wanted, kind, expand)
    if not job_ids and limit and (wanted or kind):
        rows = rows[-limit:]
    return rows


def queue(user: str | None = None, *, states: list[str] | None = None, kind: str | None = None,
          expand: bool = False) -> list[tuple[JobStatus, Run | None]]:
    """Every job of the user in Slurm's queue (one squeue call), with its record if any; an
    array is one row unless ``expand``. With ``states``, ended jobs Slurm still holds count too."""
    from hpcjobs import watch

    wanted = _states_filter(states)
    _kind_filter(kind)
    listed = slurm.squeue_jobs(user=user or _user(), all_states=bool(wanted))
    # squeue's order, an array at its first task; plain jobs pass straight through (a queue
    # of 10,000 jobs is the case to keep fast).
    order: list[JobStatus | str] = []
    arrays: dict[str, list[JobStatus]] = {}
    for st in listed:
        if "_" not in st.job_id:
            order.append(st)
            continue
        base = st.job_id.split("_", 1)[0]
        if base not in arrays:
            arrays[base] = []
            order.append(base)
        arrays[base].append(st)
    recorded = runs.recorded_ids()
    rows = []
    for item in order:
        st = watch.combine(item, arrays[item]) if isinstance(item, str) else item
        rows.append((st, runs.find(st.job_id) if recorded and st.job_id in recorded else None))
    if recorded and arrays:
        rows = _fold_chunks(rows)
    return _filtered(rows, wanted, kind, expand)


def _fold_chunks(rows):
    """The chunks of a split array as one row under its logical id, its tasks by logical index
    (hpcjobs/arrays.py); other rows as they are. Reads only the records of recorded arrays."""
    from hpcjobs import arrays as split, watch

    out, at = [], {}
    for st, run in rows:
        data = run.meta().get("array") if run is not None and st.tasks else None
        if not data:
            out.append((st, run))
            continue
        p = split.Plan.from_dict(data)
        first = run.job_id
        tasks = [replace(t, job_id=p.logical_id(t.job_id)) for t in st.tasks]
        if first in at:
            i = at[first]
            out[i] = (watch.combine(first, [*out[i][0].tasks, *tasks]), run)
        else:
            at[first] = len(out)
            out.append((watch.combine(first, tasks), run))
    return out


def _id_key(job_id: str) -> tuple[int, int]:
    base, _, task = job_id.partition("_")
    return (int(base) if base.isdigit() else 0, int(task) if task.isdigit() else -1)


def _states_filter(states: list[str] | None) -> set[str]:
    out = set()
    for item in states or ():
        for name in filter(None, (s.strip().upper() for s in item.split(","))):
            name = slurm.STATE_CODES.get(name, name)
            if name not in slurm.STATES:
                raise BadInput("--state", f"{name!r} is not a Slurm job state",
                               "use e.g. PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT "
                               "(or squeue's PD, R, CD, F, CA, TO)")
            out.add(name)
    return out


def _kind_filter(kind: str | None) -> None:
    if kind is None:
        return
    from hpcjobs import kinds

    if kind not in kinds.names():
        raise BadInput("--kind", f"unknown job kind {kind!r}", f"use one of: {', '.join(kinds.names())}")


def _filtered(rows, wanted: set[str], kind: str | None, expand: bool):
    if kind:
        rows = [(st, r) for st, r in rows if r is not None and r.meta().get("kind") == kind]
    if expand:
        rows = [(t, r) for st, r in rows for t in (st.tasks or [st])]
    if wanted:
        rows = [(st, r) for st, r in rows
                if st.state in wanted or any(t.state in wanted for t in st.tasks)]
    return rows


def _keep_final(st: JobStatus, run: Run | None) -> None:
    """Write a job's end into its record once seen (Slurm forgets jobs after MinJobAge, and
    a cluster may have no accounting): a job id, never one task's status, and not twice."""
    if run is not None and st.done and "_" not in st.job_id and st.source != "record" and \
            run.job_id == st.job_id:  # not a chunk of a split array or a later retry
        run.update_meta(final=st.to_dict())


def _user() -> str:
    import getpass

    return getpass.getuser()


def wait(job_id: str, *, poll: float = 1.0, max_poll: float = 30.0, timeout: float | None = None,
         on_update: Callable[[JobStatus, float], None] | None = None, raise_on_failure: bool = False
         ) -> JobStatus:
    """Block until the job (every task of an array) ends; returns its final status, or the
    last one seen when ``timeout`` seconds passed first (then ``.done`` is false).

    One squeue per poll, every ``poll`` s at first and after a change, 1.5x longer after each
    poll without one, at most ``max_poll`` s (hpcjobs.watch). ``on_update(status, seconds)``
    runs after every poll. Raises BadInput for a job nobody knows.
    """
    return wait_all([job_id], poll=poll, max_poll=max_poll, timeout=timeout,
                    on_update=None if on_update is None else (lambda p: on_update(
                        p.statuses[job_id], p.at)),
                    raise_on_failure=raise_on_failure)[job_id]


def wait_all(job_ids: list[str], *, poll: float = 1.0, max_poll: float = 30.0,
             timeout: float | None = None, on_update: Callable | None = None,
             raise_on_failure: bool = False) -> dict[str, JobStatus]:
    """:func:`wait` for many jobs at once: still one squeue per poll for all of them.
    ``on_update(poll)`` gets each :class:`hpcjobs.watch.Poll`."""
    last = None
    for p in watch_jobs(job_ids, timeout=timeout, poll=poll, max_poll=max_poll):
        last = p
        if on_update:
            on_update(p)
    if raise_on_failure:
        bad = [st for st in last.statuses.values() if st.state != "COMPLETED"]
        if bad:
            raise JobFailed("; ".join(describe_end(st) for st in bad))
    return last.statuses


def watch_jobs(job_ids: list[str], *, timeout: float | None = None, poll: float = 1.0,
               max_poll: float = 30.0, on_tick: Callable[[float], None] | None = None,
               tick: float = 1.0):
    """Watch jobs until they end: yields a :class:`hpcjobs.watch.Poll` (every job's status,
    the changes since the last poll) after each squeue, one per poll for all the jobs.

    Raises BadInput before the first poll for values that are not job ids, and after it for
    jobs nobody knows ("no such job"). A job's end is written into its run record.
    ``on_tick(seconds)`` runs every ``tick`` s between polls, at no cost to Slurm.
    """
    from hpcjobs import watch

    ids = watch.check_ids(list(job_ids))
    backoff = watch.Backoff(first=poll, cap=max_poll)
    first = True
    # A retry chain's first id is watched until its last attempt ends (the attempts are read
    # again at every poll: a follower adds them); a split array's id, until all its chunks end.
    for p in watch.watch(ids, fetch=_lookup, timeout=timeout, backoff=backoff, on_tick=on_tick,
                         tick=tick):
        if first:
            lost = [j for j in ids if watch.unknown(p.statuses[j])]
            if lost:
                raise watch.no_such_job(lost)
            first = False
        for c in p.changes:
            _keep_final(c.new, runs.find(c.job_id))
        yield p


def describe_end(st: JobStatus) -> str:
    """One line: "job 12 ended FAILED, exit code 3, ran 0:00:04" (an array with its tasks)."""
    from hpcjobs import watch

    return watch.describe_end(st)


def describe(st: JobStatus) -> str:
    """A job's state in words: "PENDING (Resources)", "RUNNING on node[1-3]", "COMPLETED, exit code 0"."""
    from hpcjobs import watch

    return watch.describe(st)


def task_summary(st: JobStatus) -> str:
    """ "4 tasks: 3 COMPLETED, 1 FAILED" for an array's status; "" for a plain job."""
    from hpcjobs import watch

    return watch.task_summary(st)


def format_duration(seconds: float | None) -> str:
    """The one time format hpcjobs prints: H:MM:SS ("0:00:07", "26:03:04"); "" if unknown."""
    return slurm.format_duration(seconds)


def unknown(st: JobStatus) -> bool:
    """True for a job nobody knows: not in the queue, not recorded, not in accounting
    (hpcjobs.watch.unknown; written out here because status calls it for every row)."""
    return st.state == "UNKNOWN" and st.source == "none"


def no_such_job(job_ids: list[str]) -> BadInput:
    """The error (exit 2) for jobs nobody knows, naming where hpcjobs looked."""
    from hpcjobs import watch

    return watch.no_such_job(job_ids)


def known_job_ids() -> list[str]:
    """Job ids hpcjobs recorded, newest first (one directory listing: shell completion)."""
    return sorted(runs.recorded_ids(), key=lambda j: -int(j) if j.isdigit() else 0)


@dataclass
class Cancelled:
    """What ``cancel`` did with one job id."""

    job_id: str
    outcome: str  # cancelled | ended (it had already) | unknown (no such job) | refused (by Slurm)
    status: JobStatus
    message: str = ""  # Slurm's reason when refused

    @property
    def ok(self) -> bool:
        return self.outcome in ("cancelled", "ended")

    def text(self) -> str:
        from hpcjobs import watch

        if self.outcome == "cancelled":
            return f"{self.job_id}: cancelled (was {watch.describe(self.status)})"
        if self.outcome == "ended":
            if self.status.state == "UNKNOWN":
                return f"{self.job_id}: already ended (Slurm no longer holds it); nothing to cancel"
            return f"{self.job_id}: already ended {watch.describe(self.status)}; nothing to cancel"
        if self.outcome == "unknown":
            return str(watch.no_such_job([self.job_id])).removeprefix("JOBID: ")
        return f"{self.job_id}: not cancelled: {self.message}"


def cancel(job_ids: list[str]) -> list[Cancelled]:
    """Cancel the jobs that still pend or run (one squeue to see which, one scancel for them)
    and say per id what happened. scancel itself says nothing for jobs that ended or never
    existed, so the states are read first. Raises BadInput (nothing done) for a value that
    is not a job id, SlurmError when Slurm cannot be reached."""
    from hpcjobs import watch

    ids = watch.check_ids(list(job_ids))
    views = _views(ids)
    raw: dict[str, JobStatus] = {}
    found = _lookup(ids, views, raw)
    result: dict[str, Cancelled] = {}
    live = []
    for jid in ids:
        st = found[jid]
        if watch.unknown(st):
            result[jid] = Cancelled(jid, "unknown", st)
        elif st.done or st.state == "UNKNOWN":
            result[jid] = Cancelled(jid, "ended", st)
        else:
            live.append(jid)
    # A logical id's Slurm jobs go in rounds (a split array's waiting chunks, a chain's
    # follower first), so that none starts when the one before it is cancelled; the plain ids
    # go with the last round, one scancel as before.
    rounds: list[list[str]] = []
    members: dict[str, list[str]] = {}
    for jid in live:
        if jid in views:
            order = views[jid].cancel_order(raw)
            members[jid] = [m for r in order for m in r]
            for i, r in enumerate(order):
                while len(rounds) <= i:
                    rounds.append([])
                rounds[i] += r
    rounds = rounds or [[]]
    rounds[-1] += [j for j in live if j not in views]
    refused: dict[str, str] = {}
    for r in rounds:
        refused.update(slurm.scancel(r))
    for jid in live:
        why = refused.get(jid) or next((refused[m] for m in members.get(jid, ()) if m in refused), None)
        result[jid] = Cancelled(jid, "refused" if why else "cancelled", found[jid], why or "")
    return [result[j] for j in ids]


@dataclass
class Output:
    """One output file: a job's, or one array task's (``job_id`` "12_3")."""

    job_id: str
    path: Path
    status: JobStatus | None = None  # what Slurm (or the record) says of it, when asked
    attempt: int | None = None  # a retry chain's: which attempt (its job id is ``job_id``)


def outputs(job_id: str, *, with_status: bool = True) -> list[Output]:
    """The output file of a job or array task, or one per task of an array (task order).

    From the run record (its output directory) for jobs hpcjobs submitted, else from Slurm's
    StdOut while it holds the job. Raises BadInput when none is known.
    """
    from hpcjobs import watch
    from hpcjobs.errors import SlurmError

    (jid,) = watch.check_ids([job_id])
    views = _views([jid])
    st = _lookup([jid], views)[jid] if with_status else None
    tasks = st.tasks if st is not None else []
    run = runs.find(jid)
    if jid in views:
        v = views[jid]
        if hasattr(v, "attempts"):  # a retry chain: each attempt's output, in order
            return [Output(j, p, st if j == v.last.job_id else a.status(), n)
                    for (j, p, n), a in zip(v.outputs(), v.attempts)]
        out_dir = Path(run.spec().get("output_dir") or str(run.path))
        return [Output(j, p, t) for j, p, t in v.outputs(out_dir, st)]
    if run is not None:
        spec = run.spec()
        out_dir = Path(spec.get("output_dir") or str(run.path))
        base, _, task = jid.partition("_")
        if task or not (spec.get("array") or tasks):
            name = f"slurm-{base}_{task}.out" if task else f"slurm-{base}.out"
            return [Output(jid, out_dir / name, st)]
        by_task = {t.job_id: t for t in tasks}
        # Tasks Slurm lists, and any whose file is there (Slurm may have forgotten them).
        names = set(by_task) | {p.name[len("slurm-"):-len(".out")]
                                for p in out_dir.glob(f"slurm-{base}_*.out")}
        names = [n for n in names if watch.JOB_ID.match(n)]
        return [Output(n, out_dir / f"slurm-{n}.out", by_task.get(n))
                for n in sorted(names, key=watch.task_index)]
    try:
        found, _ = slurm.scontrol_jobs([jid.split("_")[0] if not tasks else jid])
    except SlurmError:
        found = []
    by_task = {t.job_id: t for t in tasks}
    files = [Output(f.job_id, Path(f.stdout), by_task.get(f.job_id, st if f.job_id == jid else None))
             for f in found if f.stdout and watch.JOB_ID.match(f.job_id)
             and (f.job_id == jid or f.job_id.startswith(jid + "_"))]
    if files:
        return sorted(files, key=lambda o: watch.task_index(o.job_id))
    if st is not None and watch.unknown(st):
        raise watch.no_such_job([jid])
    raise BadInput("JOBID", f"no output file known for job {jid}",
                   "hpcjobs knows the jobs it submitted, and Slurm the recent ones")


def logs(job_id: str) -> Path:
    """Path of the standard output file of a job or of one array task ("12_3"); for an
    array's own id, see :func:`outputs`."""
    files = outputs(job_id, with_status=False)
    if files and files[-1].attempt is not None:  # a retry chain: its last attempt's
        return files[-1].path
    if len(files) != 1 or files[0].job_id != job_id:
        raise BadInput("JOBID", f"{job_id} is a job array of {len(files)} tasks",
                       f"name one task (e.g. {files[0].job_id if files else job_id + '_0'}), "
                       "or use hpcjobs logs, which shows each task's output")
    return files[0].path


def read_output(path: Path, start: int = 0, *, tail_lines: int | None = None) -> bytes:
    """Bytes of an output file from ``start`` (or its last ``tail_lines`` lines); b"" while it
    does not exist. A file the user may not read is bad input, said in one line."""
    try:
        with open(path, "rb") as f:
            if tail_lines is None:
                f.seek(start)
                return f.read()
            return _tail(f, tail_lines)
    except FileNotFoundError:
        return b""
    except PermissionError:
        raise _not_yours(path) from None


def output_size(path: Path) -> int | None:
    """Size of an output file in bytes; None while it does not exist (BadInput as above)."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None
    except PermissionError:
        raise _not_yours(path) from None


def _not_yours(path: Path) -> BadInput:
    owner = ""
    for p in (path, *path.parents):
        try:
            import pwd

            uid = os.stat(p).st_uid
            if uid != os.getuid():
                owner = pwd.getpwuid(uid).pw_name
                break
        except (OSError, KeyError):
            continue
    whose = f" (it belongs to {owner})" if owner else ""
    return BadInput("JOBID", f"cannot read {path}: permission denied{whose}",
                    "it is another user's job: ask its owner for the output, or read it as that user")


def _tail(f, lines: int) -> bytes:
    """The last ``lines`` lines of a binary file, read backwards in blocks."""
    if lines <= 0:
        return b""
    f.seek(0, 2)
    end = f.tell()
    pos, data = end, b""
    while pos > 0 and data.count(b"\n") <= lines:
        step = min(65536, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":  # the file ends with a newline
        return b"\n".join(parts[-lines - 1:])
    return b"\n".join(parts[-lines:])
