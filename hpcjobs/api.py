"""The public Python API: what the CLI does, callable from a script.

    from hpcjobs import JobSpec, submit, wait
    sub = submit(JobSpec(kind="mpi", nodes=3, program=["python3", "examples/mpi_allreduce.py"]))
    final = wait(sub.job_id)

Data flows one way: profile + spec -> prepare (validate, kind checks, plan, once: a
:class:`Prepared`) -> render -> record -> Slurm. Errors are :mod:`hpcjobs.errors` classes carrying the CLI's exit codes.
"""

from __future__ import annotations

import os
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

__all__ = [
    "Cluster",
    "JobSpec",
    "JobStatus",
    "Prepared",
    "Run",
    "Submission",
    "cancel",
    "load_cluster",
    "logs",
    "plan",
    "prepare",
    "queue",
    "render",
    "status",
    "submit",
    "wait",
]


@dataclass
class Submission:
    job_id: str | None  # None for a dry run
    run: Run | None
    rendered: Rendered


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
        job = prepared.prepare_direct(spec.kind, cluster, nodes=spec.nodes, time=spec.time,
                                      partition=spec.partition, options=spec.options)
    elif not isinstance(job, Prepared):
        job = prepare(job, cluster)
    return materialize(job)


def submit(job: JobSpec | Prepared, cluster: Cluster | None = None, *, dry_run: bool = False) -> Submission:
    """Render, record and submit a job (a spec, or what :func:`prepare` returned).

    Nothing is written unless sbatch accepts the job.
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
    meta = {
        "kind": s.kind, "cluster": cluster.name, "cluster_source": cluster.source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cwd": os.getcwd(),
        "user": _user(),
        **runs.git_state(s.program, s.chdir),
    }
    run = runs.create(run_path, rendered.script, s.to_dict(), rendered.files, meta)
    try:
        extra = [f"--export=ALL,{','.join(s.env_pass)}"] if s.env_pass else []
        job_id = slurm.sbatch(str(run.script), extra=extra, cwd=s.chdir)
    except BaseException:
        runs.discard(run)
        raise
    run.update_meta(job_id=job_id, submitted=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    runs.link_job(run, job_id)
    return Submission(job_id, run, rendered)


def status(job_ids: list[str] | None = None, *, limit: int = 20) -> list[tuple[JobStatus, Run | None]]:
    """Status of the given jobs, or of the most recent recorded ones."""
    if job_ids:
        states = slurm.job_status(job_ids)
        result = []
        for jid, st in states.items():
            run = runs.find(jid)
            if st.state == "UNKNOWN" and run:
                st = _recorded(run, st)
            result.append((st, run))
        return result
    recorded = [r for r in runs.all_runs() if r.job_id][-limit:] if limit else \
        [r for r in runs.all_runs() if r.job_id]
    if not recorded:
        return []
    live = {st.job_id: st for st in slurm.squeue(job_ids=[r.job_id for r in recorded])} \
        if len(recorded) <= 100 else {st.job_id: st for st in slurm.squeue(user=_user())}
    out = []
    missing = []
    for r in recorded:
        st = live.get(r.job_id)
        if st is None:
            final = r.meta().get("final")
            if final:
                st = JobStatus(**{**final, "source": "record"})
            else:
                missing.append(r)
                continue
        out.append((st, r))
    if missing:
        states = slurm.job_status([r.job_id for r in missing])
        for r in missing:
            st = states.get(r.job_id) or JobStatus(r.job_id, "UNKNOWN")
            if st.done:
                r.update_meta(final=st.to_dict())
            out.append((st, r))
    out.sort(key=lambda x: int(x[0].job_id.split("_")[0]) if x[0].job_id.split("_")[0].isdigit() else 0)
    return out


def queue(user: str | None = None) -> list[tuple[JobStatus, Run | None]]:
    """Every job of the user in Slurm's queue (one squeue call), with its record if any."""
    recorded = runs.recorded_ids()
    return [(st, runs.find(st.job_id) if st.job_id.split("_")[0] in recorded else None)
            for st in slurm.squeue(user=user or _user())]


def _user() -> str:
    import getpass

    return getpass.getuser()


def _recorded(run: Run, st: JobStatus) -> JobStatus:
    final = run.meta().get("final")
    return JobStatus(**{**final, "source": "record"}) if final else st


def wait(job_id: str, *, poll: float = 0.25, max_poll: float = 2.0, timeout: float | None = None,
         on_update: Callable[[JobStatus, float], None] | None = None, raise_on_failure: bool = False
         ) -> JobStatus:
    """Block until the job (every task of an array) ends; returns its final status.

    Polls scontrol from 0.25 s up to 2 s (``sbatch --wait`` backs off to 32 s, so a 3 s job
    would return after 10 s).
    """
    start = time.monotonic()
    delay = poll
    run = runs.find(job_id)
    while True:
        states = list(slurm.job_status([job_id]).values())
        st = _combine(job_id, states)
        if st.state == "UNKNOWN" and run:
            st = _recorded(run, st)
        if on_update:
            on_update(st, time.monotonic() - start)
        if st.done or st.state == "UNKNOWN":
            break
        if timeout is not None and time.monotonic() - start > timeout:
            break
        time.sleep(delay)
        delay = min(delay * 1.5, max_poll)
    if run and st.done:
        run.update_meta(final=st.to_dict())
    if raise_on_failure and st.state != "COMPLETED":
        raise JobFailed(describe_end(st))
    return st


def _combine(job_id: str, states: list[JobStatus]) -> JobStatus:
    """One status for an array job: done when every task is; failed if any task failed."""
    if len(states) == 1:
        return states[0]
    if not states:
        return JobStatus(job_id, "UNKNOWN")
    if not all(s.done for s in states):
        running = next(s for s in states if not s.done)
        return JobStatus(job_id, running.state, reason=running.reason, elapsed=running.elapsed,
                         name=running.name, source=running.source)
    bad = [s for s in states if s.state != "COMPLETED"]
    pick = bad[0] if bad else states[0]
    return JobStatus(job_id, pick.state, reason=pick.reason, exit_code=pick.exit_code,
                     signal=pick.signal, elapsed=pick.elapsed, name=pick.name, source=pick.source)


def describe_end(st: JobStatus) -> str:
    text = f"job {st.job_id} ended {st.state}"
    if st.exit_code is not None:
        text += f", exit code {st.exit_code}"
        if st.signal:
            text += f" (signal {st.signal})"
    if st.reason:
        text += f", reason {st.reason}"
    return text


def cancel(job_ids: list[str]) -> None:
    slurm.scancel(job_ids)


def logs(job_id: str) -> Path:
    """Path of the job's standard output file."""
    run = runs.find(job_id)
    if run:
        spec = run.spec()
        out_dir = spec.get("output_dir") or str(run.path)
        base, _, task = job_id.partition("_")
        name = f"slurm-{base}_{task}.out" if task else f"slurm-{base}.out"
        return Path(out_dir, name)
    found, _ = slurm.scontrol_jobs([job_id])
    if found and found[0].stdout:
        return Path(found[0].stdout)
    raise BadInput("JOBID", f"no output file known for job {job_id}",
                   "hpcjobs knows jobs it submitted, and Slurm knows recent ones")
