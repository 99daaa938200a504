"""``hpcjobs status|logs|wait|cancel``: watch and control submitted jobs.

Thin over :mod:`hpcjobs.api`: every Slurm call goes through it (one squeue per poll for all
the jobs watched, at a growing interval: hpcjobs.watch). Progress goes to stderr: one live
line on a terminal, one line per state change elsewhere (CI logs, nohup, pipes), so a log
shows when a job started and on which nodes. Ctrl-C stops watching, never the job.
"""

from __future__ import annotations

import json
import sys

import click

from hpcjobs.cli.kit import CONTEXT, guarded

TIMEOUT_EXIT = 124  # like timeout(1)


def _complete_ids(ctx, param, incomplete: str):
    """Shell completion of job ids: the ones hpcjobs recorded (no Slurm call)."""
    from click.shell_completion import CompletionItem

    from hpcjobs import api

    return [CompletionItem(j) for j in api.known_job_ids() if j.startswith(incomplete)]


def _dur(seconds) -> str:
    from hpcjobs import api

    return api.format_duration(seconds)


# --- progress while waiting -------------------------------------------------------------------

class Progress:
    """What a waiting command shows on stderr: a live line on a terminal (redrawn every
    second, no Slurm call), else one line per state change; each job's end as it comes."""

    def __init__(self, tty: bool):
        self.tty = tty
        self.latest: dict = {}
        self.drawn = False
        self.ended: set[str] = set()

    def poll(self, p) -> None:
        from hpcjobs import api

        self.latest = p.statuses
        for c in p.changes:
            if c.new.done or c.new.state == "UNKNOWN":
                self.end(c.new)
            elif not self.tty and c.new.state != "COMPLETING":  # a moment before the end
                text = api.describe(c.new)
                if c.new.reason.startswith("attempt ") and c.new.reason not in text:
                    text += f" ({c.new.reason})"  # a retry chain's next attempt runs
                click.echo(f"job {c.job_id}: {text}  +{_dur(c.at)}", err=True)
        self.tick(p.at)

    def tick(self, at: float) -> None:
        if not self.tty:
            return
        from hpcjobs import api

        live = [st for jid, st in self.latest.items() if jid not in self.ended]
        if not live:
            return
        if len(live) == 1:
            line = f"job {live[0].job_id}: {api.describe(live[0])}"
        else:
            from collections import Counter

            counts = Counter(st.state for st in live)
            line = f"{len(live)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.most_common())
        click.echo(f"\r\033[K{line}  {_dur(at)}", nl=False, err=True)
        self.drawn = True

    def clear(self) -> None:
        if self.drawn:
            click.echo("\r\033[K", nl=False, err=True)
            self.drawn = False

    def end(self, st) -> None:
        from hpcjobs import api

        if st.job_id in self.ended:
            return
        self.ended.add(st.job_id)
        self.clear()
        click.echo(api.describe_end(st), err=st.state != "COMPLETED")
        for line in chain_lines(st.job_id, st):  # a retry chain: each attempt, each decision
            click.echo(line, err=st.state != "COMPLETED")

    def still_running(self, job_ids: list[str], why: str, submitted: bool = False) -> None:
        """What to say when watching stops before the jobs ended (Ctrl-C, --timeout)."""
        from hpcjobs import api

        self.clear()
        left = [j for j in job_ids if j not in self.ended]
        for jid in left:
            st = self.latest.get(jid)
            what = api.describe(st) if st is not None else ("still queued" if submitted else
                                                            "not yet seen")
            click.echo(f"hpcjobs: {why}; job {jid} is {what} and was not cancelled", err=True)
        ids = " ".join(left)
        click.echo(f"  to wait again:  hpcjobs wait {ids}\n  to cancel it:   hpcjobs cancel {ids}",
                   err=True)


def wait_jobs(job_ids: list[str], timeout: float | None = None, submitted: bool = False) -> int:
    """Wait for jobs (one squeue per poll for all); 0 if all COMPLETED, 1 if any did not,
    124 on timeout, 130 on Ctrl-C (the jobs are left alone)."""
    from hpcjobs import api

    progress = Progress(sys.stderr.isatty())
    last = None
    try:
        for p in api.watch_jobs(job_ids, timeout=timeout, on_tick=progress.tick):
            last = p
            progress.poll(p)
    except KeyboardInterrupt:
        progress.still_running(list(job_ids), "stopped watching (Ctrl-C)", submitted)
        return 130
    if last.timed_out:
        progress.still_running(list(job_ids), f"still not ended after {timeout:g} s (--timeout)")
        return TIMEOUT_EXIT
    return 0 if all(st.state == "COMPLETED" for st in last.statuses.values()) else 1


def wait_one(job_id: str) -> int:
    """``submit --wait``."""
    return wait_jobs([job_id], submitted=True)


# --- output files -------------------------------------------------------------------------

class Streams:
    """New bytes of one or more output files, each under a header once there are several
    (``tail -f`` style); reads files only."""

    def __init__(self, files, tail: int | None = None):
        from hpcjobs import api

        self.files = files
        self.pos = {}
        self.current = None
        for f in files:
            if tail is not None:
                self._write(f, api.read_output(f.path, tail_lines=tail))
            self.pos[f.job_id] = (api.output_size(f.path) or 0) if tail is not None else 0

    def add(self, files) -> None:
        """Files that appeared since (an array's later tasks, a retry chain's next attempt)."""
        known = {f.job_id for f in self.files}
        for f in files:
            if f.job_id not in known:
                self.files.append(f)
                self.pos[f.job_id] = 0

    def drain(self, *_ignored) -> None:
        from hpcjobs import api

        for f in self.files:
            data = api.read_output(f.path, self.pos[f.job_id])
            if data:
                self.pos[f.job_id] += len(data)
                self._write(f, data)

    def _write(self, f, data: bytes) -> None:
        if not data:
            return
        if len(self.files) > 1 and self.current != f.job_id:
            click.echo(f"==> {f.job_id}: {f.path} <==")
            self.current = f.job_id
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def follow_job(job_id: str, tail: int | None = None, submitted: bool = False) -> int:
    """Stream the output file(s) while the job runs, then report how it ended. Files are read
    every 0.5 s; Slurm is asked at the watchers' growing interval, one squeue per poll."""
    from hpcjobs import api

    streams = Streams(api.outputs(job_id, with_status=False), tail)
    progress = Progress(False)  # a live line would tear the streamed output
    last = None
    try:
        for p in api.watch_jobs([job_id], on_tick=streams.drain, tick=0.5):
            last = p
            streams.add(api.outputs(job_id, with_status=False))  # files only, no Slurm call
            streams.drain()
            if p.done or p.timed_out:
                import time

                time.sleep(0.5)  # the last lines may land just after Slurm says it ended
                streams.drain()
            progress.poll(p)
    except KeyboardInterrupt:
        progress.still_running([job_id], "stopped following (Ctrl-C)", submitted)
        return 130
    return 0 if last.statuses[job_id].state == "COMPLETED" else 1


def chain_lines(job_id: str, last=None) -> list[str]:
    """A retry chain in words, one line per attempt (`submit --retry`, docs/retry.md); [] for
    any other job. From the record (and ``last``, the chain's status: its last attempt's)."""
    from hpcjobs import api

    chain = api.attempts(job_id)
    if not chain or (len(chain) == 1 and not chain[0].decision):
        return []
    lines = []
    for a in chain:
        end = a.ended.get("state") if a.ended else None
        if end is None and a is chain[-1] and last is not None and last.done:
            end = last.state
        text = f"  attempt {a.attempt}: job {a.job_id}" + (f" ended {end}" if end else "")
        if a.cause_text and a.cause_text not in a.message:
            text += f" ({a.cause_text})"
        if a.message:
            text += f"; {a.message}"
        if a.next:
            text += f" -> job {a.next}"
        lines.append(text)
    return lines


def _with_attempts(rows):
    """Each retry chain's row followed by one row per attempt (the chain's own row has the
    last attempt's state); the attempts' states are those their followers recorded."""
    from hpcjobs import api
    from hpcjobs.slurm import JobStatus

    out = []
    for st, r in rows:
        out.append((st, r))
        chain = api.attempts(st.job_id) if r is not None and "_" not in st.job_id else []
        if len(chain) < 2 and not (chain and chain[0].decision):
            continue
        for i, a in enumerate(chain):
            last = i == len(chain) - 1
            sub = a.status() or (st if last else None) or JobStatus(a.job_id, "UNKNOWN")
            mark = "└" if last else "├"
            out.append((JobStatus(f"{mark} {a.job_id}", sub.state, reason=_attempt_words(a),
                                  exit_code=sub.exit_code, elapsed=sub.elapsed,
                                  nodes=sub.nodes), None))
    return out


def _attempt_words(a) -> str:
    """ "attempt 1: time_limit: --time 00:01:00 -> 00:02:00 -> job 12" for the status table."""
    if a.decision == "retry":
        what = ", ".join(f"--{k.replace('_', '-')} {old or '(none)'} -> {new}"
                         for k, (old, new) in a.changed.items()) or "resubmitted as it was"
    elif a.decision == "stop":
        what = "not retried: " + ("the budget is spent" if "budget" in a.message else
                                  "cancelled" if "cancelled" in a.message else
                                  "retrying would not help")
    else:
        what = "deciding" if a.ended else ""
    text = f"attempt {a.attempt}" + (f": {a.cause}" if a.cause else "") + (f": {what}" if what else "")
    return text + (f" -> job {a.next}" if a.next else "")


def _print_task_outputs(job_id: str, files, tail: int | None) -> None:
    from hpcjobs import api

    n = len(files)
    if files and files[0].attempt is not None:
        click.echo(f"job {job_id}: retry chain of {n} attempt{'s' * (n != 1)}")
    else:
        click.echo(f"job {job_id}: array of {n} task{'s' * (n != 1)}")
    for f in files:
        what = api.describe(f.status) if f.status else "state unknown"
        ran = f", ran {_dur(f.status.seconds)}" if f.status and f.status.seconds is not None else ""
        name = f"{f.job_id} (attempt {f.attempt})" if f.attempt is not None else f.job_id
        click.echo(f"==> {name}: {what}{ran} ({f.path}) <==")
        data = api.read_output(f.path, tail_lines=tail)
        if data:
            sys.stdout.buffer.write(data if data.endswith(b"\n") else data + b"\n")
            sys.stdout.flush()
        elif api.output_size(f.path) is None:
            click.echo("(no output yet)")


# --- commands -----------------------------------------------------------------------------

@click.command(context_settings=CONTEXT)
@click.argument("job_ids", nargs=-1, shell_complete=_complete_ids)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--all", "show_all", is_flag=True, help="All recorded jobs, not the last 20.")
@click.option("--queue", "-q", is_flag=True, help="All your jobs in Slurm's queue, recorded or not.")
@click.option("--state", "-t", "states", multiple=True, metavar="STATE[,STATE]",
              help="Only jobs in these states (PENDING, RUNNING, FAILED, ... or PD, R, F).")
@click.option("--kind", metavar="KIND", help="Only jobs of this kind (recorded jobs).")
@click.option("--expand", "-e", is_flag=True, help="One row per array task.")
@guarded
def status(job_ids, as_json, show_all, queue, states, kind, expand):
    """State of jobs (default: the jobs hpcjobs recorded), one squeue for all of them.

    An array is one row (its task counts under REASON) unless --expand. ELAPSED is H:MM:SS;
    EXIT shows only for jobs that ended. Exit 2 for a job id nobody knows.
    """
    from hpcjobs import api

    if queue:
        rows = api.queue(states=list(states), kind=kind, expand=expand)
    else:
        rows = api.status(list(job_ids) or None, limit=0 if show_all else 20,
                          states=list(states), kind=kind, expand=expand)
    lost = [st.job_id for st, _ in rows if api.unknown(st)] if job_ids else []
    if lost:
        rows = [(st, r) for st, r in rows if not api.unknown(st)]
    if as_json:
        click.echo(json.dumps([{**st.to_dict(), "elapsed_seconds": st.seconds,
                                "run_dir": str(r.path) if r else None,
                                "kind": r.meta().get("kind") if r else None,
                                "endpoint": r.meta().get("endpoint") if r else None,
                                "transport": r.meta().get("transport") if r else None,
                                "gpu_util": _gpu_util(st, r),
                                **_logical_json(st, r)}
                               for st, r in rows], indent=2))
    elif rows:
        click.echo(_table(_with_attempts(rows)))
    elif not lost:
        click.echo("no jobs recorded yet (hpcjobs submit ...)" if not (job_ids or queue or states
                                                                       or kind) else "no such jobs")
    if lost:
        raise api.no_such_job(lost)


def _logical_json(st, run) -> dict:
    """A retry chain's attempts and a split array's chunks, for --json (from the record)."""
    if run is None or "_" in st.job_id:
        return {}
    from hpcjobs import api

    out = {}
    chain = api.attempts(st.job_id)
    if chain:
        out["attempts"] = [dict(a.__dict__) for a in chain]
    arr = run.meta().get("array")
    if arr and run.job_id == st.job_id:
        out["array"] = arr
    return out


def _gpu_util(st, run) -> float | None:
    """Mean GPU utilisation so far of a running recorded job, from its monitors' last samples
    (files only, no Slurm call; hpcjobs report, docs/report.md)."""
    if run is None or st.state != "RUNNING":
        return None
    from hpcjobs.report import live_for_run

    live = live_for_run(run, st.job_id)
    return None if live is None else live.util_mean


def _table(rows) -> str:
    from hpcjobs import api

    dur, summarize = api.format_duration, api.task_summary  # once: 10,000 rows are common
    head = ("JOBID", "KIND", "STATE", "EXIT", "RESTARTS", "ELAPSED", "GPU%", "NODES",
            "REASON/ENDPOINT")
    lines = []
    elapsed: dict[str, str] = {}  # Slurm's text -> ours: a big queue repeats few values
    nothing: dict = {}
    for st, r in rows:
        meta = r.meta() if r is not None else nothing  # most rows of a big queue: no record
        extra = meta.get("endpoint") or "" if meta else ""
        if not extra:
            summary = summarize(st) if st.tasks else ""
            extra = f"{summary}; {st.reason}" if summary and st.reason else summary or st.reason
        if meta and meta.get("transport"):  # what the preflight saw the job's backend really use
            extra = "; ".join(x for x in (extra, f"transport {meta['transport']}") if x)
        ec = "" if st.exit_code is None or not st.done else str(st.exit_code)
        took = elapsed.get(st.elapsed)
        if took is None:
            took = elapsed[st.elapsed] = dur(st.seconds)
        util = _gpu_util(st, r) if r is not None else None
        lines.append((st.job_id, meta.get("kind", "-") if meta else "-", st.state, ec,
                      str(st.restarts), took, "-" if util is None else f"{util:.0f}",
                      st.nodes or "-", extra))
    # Each column as wide as its widest cell (job ids like 12_[0-3] stay aligned); one
    # format template for every row is the cheap way over 10,000 rows.
    widths = [max(len(h), max(map(len, col))) for h, col in zip(head, list(zip(*lines))[:-1])]
    align = "<<<>>>><"  # EXIT, RESTARTS, ELAPSED, GPU% to the right
    template = "  ".join(f"{{:{a}{w}}}" for a, w in zip(align, widths)) + "  {}"
    return "\n".join(template.format(*x).rstrip() for x in (head, *lines))


@click.command(context_settings=CONTEXT)
@click.argument("job_id", shell_complete=_complete_ids)
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the job ends (reads the "
              "files; asks Slurm only whether it ended, at a growing interval).")
@click.option("--tail", "-n", type=click.IntRange(min=0), metavar="N",
              help="Only the last N lines (with --follow: then keep streaming).")
@guarded
def logs(job_id, follow, tail):
    """Print a job's output; for an array (its own id) each task's output under a header
    with the task's state, exit code and run time; JOBID_TASK for one task."""
    from hpcjobs import api
    from hpcjobs.errors import BadInput

    if follow:
        sys.exit(follow_job(job_id, tail))
    files = api.outputs(job_id)
    if len(files) == 1 and files[0].job_id == job_id:
        f = files[0]
        if api.output_size(f.path) is None:
            st = f.status
            when = f"the job is {api.describe(st)}" if st is not None and not st.done else \
                "the job may not have started"
            raise BadInput("JOBID", f"output {f.path} does not exist (yet)",
                           f"{when}; hpcjobs logs --follow {job_id} waits for it")
        data = api.read_output(f.path, tail_lines=tail)
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    _print_task_outputs(job_id, files, tail)


@click.command(context_settings=CONTEXT)
@click.argument("job_ids", nargs=-1, required=True, shell_complete=_complete_ids)
@guarded
def cancel(job_ids):
    """Cancel jobs; says per id what happened (cancelled, already ended, no such job, refused).

    Exit 0 if every job was cancelled or had already ended; 2 for an id that names no job
    (the others are still cancelled) and for a value that is not a job id at all (then
    nothing is cancelled); 3 when Slurm refused (its message, e.g. another user's job).
    """
    from hpcjobs import api

    rc = 0
    for c in api.cancel(list(job_ids)):
        if c.ok:
            click.echo(c.text())
        else:
            click.echo(f"hpcjobs: error: {c.text()}", err=True)
            rc = max(rc, 3 if c.outcome == "refused" else 2)
    sys.exit(rc)


@click.command("wait", context_settings=CONTEXT)
@click.argument("job_ids", nargs=-1, required=True, shell_complete=_complete_ids)
@click.option("--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help=f"Stop waiting after SECONDS (exit {TIMEOUT_EXIT}); the jobs are left alone.")
@guarded
def wait_cmd(job_ids, timeout):
    """Wait for jobs to end, one squeue per poll for all of them (1 s, growing to 30 s while
    nothing changes); exit 0 only if all COMPLETED, 1 if any did not, 2 for a job nobody
    knows (then nothing is waited for).

    Ctrl-C stops waiting, not the jobs.
    """
    sys.exit(wait_jobs(list(job_ids), timeout))
