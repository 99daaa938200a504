"""Job arrays larger than Slurm allows, as one logical array.

slurmctld refuses an array whose task ids reach MaxArraySize (default 1001: ids 0-1000) or that
has more than ``max_array_tasks`` tasks ("Invalid job array specification"; job_mgr.c
_valid_array_inx), and an ``--array`` text over 4096 bytes. ``--array 0-99999%10`` is split here
into as many Slurm arrays ("chunks") as needed. Each chunk's task ids start at 0 and the chunk
is told its index ``offset`` and ``stride`` (``HPCJOBS_ARRAY_OFFSET``/``_STRIDE`` through
``sbatch --export``), so every task computes its logical index in the batch script:
``HPCJOBS_ARRAY_INDEX = offset + stride x SLURM_ARRAY_TASK_ID`` (Slurm's own variable is left as
it set it). A stride other than 1 packs an evenly spaced spec (``0-99999:1000``) into one chunk
instead of one chunk per task.

The throttle (``%K``) holds across the chunks by chaining them: chunk k+1 depends on
``afterany:chunk k`` and each chunk carries ``%K``, so at most K tasks of the whole logical
array run at any time, whatever the tasks' durations. Dividing K among chunks that run at once
would leave the share of a chunk that finished early idle for the rest of the run and cannot
divide a K smaller than the number of chunks; chaining costs only the tail of each chunk (fewer
than K run while its last tasks finish) and one scheduling cycle per boundary. Without a
throttle the chunks are independent and run as the cluster allows.

slurmctld counts every task of a queued array against MaxJobCount (default 10,000, for all
users) and the user's MaxSubmitJobs, so at most :func:`queue_limit` tasks are queued at once:
the first ``window`` chunks at submission, each further one by a small **feeder job** that
runs when an earlier chunk ended (``python -m hpcjobs.arrays RECORD K``: no client needed).

The logical array's id is its first chunk's job id; the run record keeps the chunk table
(meta ``array``; ``array/`` for what the feeders queued) and links every chunk's id to it. ``status``, ``wait``, ``cancel`` and
``logs`` take the logical id and ``ID_INDEX`` with the logical index; :class:`LogicalArray`
maps between the two (one squeue for all chunks).
"""

from __future__ import annotations

import bisect
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from hpcjobs import runs, slurm, watch
from hpcjobs.errors import BadInput, SlurmError
from hpcjobs.slurm import ArrayLimits, JobStatus
from hpcjobs.spec import ArraySpec, parse_array


def format_indices(ids) -> str:
    """Sorted distinct task ids as a Slurm array spec: runs of equal steps become
    ``A-B`` or ``A-B:STEP`` (0,1,2,3,10 -> "0-3,10"; 0,5,10 -> "0-10:5"; 0,5 -> "0,5")."""
    ids = list(ids)
    out, i, n = [], 0, len(ids)
    while i < n:
        a = ids[i]
        if i + 1 < n:
            step = ids[i + 1] - a
            j = i + 1
            while j + 1 < n and ids[j + 1] - ids[j] == step:
                j += 1
            if step == 1 or j - i >= 2:
                out.append(f"{a}-{ids[j]}" + (f":{step}" if step != 1 else ""))
                i = j + 1
                continue
        out.append(str(a))
        i += 1
    return ",".join(out)


@dataclass(frozen=True)
class Chunk:
    """One Slurm array of a logical array: task ``t`` is logical index ``offset + stride * t``."""

    offset: int
    stride: int
    tasks: tuple[int, ...]  # Slurm's task ids, sorted (all below MaxArraySize)
    job_id: str | None = None  # once submitted

    @property
    def spec(self) -> str:
        return format_indices(self.tasks)

    @property
    def count(self) -> int:
        return len(self.tasks)

    def logical(self, task: int) -> int:
        return self.offset + self.stride * task

    def task_of(self, index: int) -> int | None:
        """The Slurm task id of a logical index, None when this chunk does not hold it."""
        t, rest = divmod(index - self.offset, self.stride)
        if rest or t < 0:
            return None
        k = bisect.bisect_left(self.tasks, t)
        return t if k < len(self.tasks) and self.tasks[k] == t else None

    def to_dict(self) -> dict:
        return {"job_id": self.job_id, "offset": self.offset, "stride": self.stride,
                "spec": self.spec, "count": self.count,
                "first": self.logical(self.tasks[0]), "last": self.logical(self.tasks[-1])}

    @classmethod
    def from_dict(cls, d: dict) -> Chunk:
        return cls(d["offset"], d["stride"], parse_array(d["spec"]).indices, d.get("job_id"))


def fits(array: ArraySpec, limits: ArrayLimits) -> bool:
    """Slurm takes this array as it is."""
    return (not array.indices or array.indices[-1] < limits.max_array_size) and \
        array.count <= limits.max_array_tasks and len(array.text) <= ArrayLimits.SPEC_MAX


def split(indices: tuple[int, ...], max_array_size: int, max_tasks: int,
          spec_max: int = ArrayLimits.SPEC_MAX - 16) -> list[Chunk]:
    """Cut sorted distinct logical indices into chunks Slurm takes: task ids below
    ``max_array_size``, at most ``max_tasks`` per chunk, a spec text within ``spec_max`` bytes
    (room left for ``%K``). Greedy, in index order: each chunk starts at the first index left and
    takes whichever holds more tasks: every index within ``max_array_size`` of it (stride 1), or
    the evenly spaced run that starts there (its stride). Pure."""
    cap = min(max_array_size, max_tasks)
    if cap < 1:
        raise BadInput("--array", "this cluster has job arrays disabled (MaxArraySize=0)",
                       "submit the tasks as separate jobs")
    out: list[Chunk] = []
    i, n = 0, len(indices)
    while i < n:
        a = indices[i]
        j = min(bisect.bisect_right(indices, a + max_array_size - 1, i), i + cap)
        run_end, stride = i + 1, 1
        if i + 1 < n:
            stride = indices[i + 1] - a
            while run_end < n and run_end - i < cap and indices[run_end] - indices[run_end - 1] == stride:
                run_end += 1
        if stride > 1 and run_end - i > j - i:
            chunk = Chunk(a, stride, tuple(range(run_end - i)))
            i = run_end
        else:
            chunk = Chunk(a, 1, tuple(x - a for x in indices[i:j]))
            while len(chunk.spec) > spec_max:  # a scattered list: fewer ids per chunk
                j = i + max(1, (j - i) // 2)
                chunk = Chunk(a, 1, tuple(x - a for x in indices[i:j]))
            i = j
        out.append(chunk)
    return out


@dataclass
class Plan:
    """How a logical array is submitted: its chunks, the throttle, how many chunks are queued
    at once (``window``; 0: all at submission)."""

    text: str  # the logical --array as given
    throttle: int | None
    chunks: list[Chunk]
    limits: ArrayLimits = field(default_factory=ArrayLimits)
    window: int = 0
    queue: int = 0  # at most this many tasks queued at once (queue_limit)

    @property
    def chained(self) -> bool:
        """Chunks run one after another (afterany) so that the throttle holds across them."""
        return self.throttle is not None and len(self.chunks) > 1

    @property
    def job_ids(self) -> list[str]:
        return [c.job_id for c in self.chunks if c.job_id]

    @property
    def count(self) -> int:
        return sum(c.count for c in self.chunks)

    @property
    def first(self) -> str | None:
        return self.chunks[0].job_id

    def spec_of(self, chunk: Chunk) -> str:
        return chunk.spec + (f"%{self.throttle}" if self.throttle else "")

    def locate(self, index: int) -> tuple[int, int] | None:
        """(chunk number, Slurm task id) of a logical index; None when the array has none."""
        starts = [c.offset for c in self.chunks]
        k = bisect.bisect_right(starts, index) - 1
        # Chunks are cut in index order, so only the chunk starting at or before it can hold it.
        for i in (k, k - 1):
            if 0 <= i < len(self.chunks):
                t = self.chunks[i].task_of(index)
                if t is not None:
                    return i, t
        return None

    def logical_id(self, real: str) -> str:
        """"CHUNK_TASK" (or "CHUNK_[a-b]") as the logical "FIRST_INDEX"; other ids unchanged."""
        base, _, task = real.partition("_")
        chunk = next((c for c in self.chunks if c.job_id == base), None)
        if chunk is None or not task:
            return real
        if task.isdigit():
            return f"{self.first}_{chunk.logical(int(task))}"
        try:
            ids = parse_array(task.strip("[]")).indices
        except BadInput:
            return real
        return f"{self.first}_[{format_indices(chunk.logical(t) for t in ids)}]"

    def describe(self) -> str:
        """One line for the submitter: how many Slurm arrays, why, and how the throttle holds."""
        why = f"MaxArraySize {self.limits.max_array_size}"
        if self.limits.max_array_tasks < self.limits.max_array_size:
            why += f", max_array_tasks {self.limits.max_array_tasks}"
        if self.window:
            why += f", at most {self.queue} tasks queued"
        n = len(self.chunks)
        text = f"array {self.text}: {self.count} tasks as {n} Slurm array{'s' * (n != 1)} ({why})"
        if self.window:
            text += f": {', '.join(self.job_ids)} queued now, the others {self.window} at a " \
                    "time by small feeder jobs as earlier ones end"
        else:
            text += f": {', '.join(self.job_ids)}"
        if self.chained:
            text += f"; run one after another (afterany), each %{self.throttle}, so at most " \
                    f"{self.throttle} run at once"
        return text + f"; logical id {self.first}, HPCJOBS_ARRAY_INDEX in each task"

    def to_dict(self) -> dict:
        return {"text": self.text, "throttle": self.throttle, "chained": self.chained,
                "count": self.count, "window": self.window, "queue": self.queue,
                "limits": {"max_array_size": self.limits.max_array_size,
                           "max_array_tasks": self.limits.max_array_tasks},
                "chunks": [c.to_dict() for c in self.chunks]}

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        lim = d.get("limits") or {}
        return cls(d["text"], d.get("throttle"), [Chunk.from_dict(c) for c in d["chunks"]],
                   ArrayLimits(lim.get("max_array_size", 1001), lim.get("max_array_tasks", 1001)),
                   d.get("window", 0), d.get("queue", 0))


# How many tasks a logical array keeps queued at once. slurmctld counts every task of a queued
# array against MaxJobCount (job_mgr.c _create_job_record: "MaxJobCount limit from slurm.conf
# reached", default 10000, shared by every user) and against MaxSubmitJobs of the user's
# association or QOS (acct_policy.c), which only sacctmgr knows. A quarter of MaxJobCount by
# default leaves room for everyone else; a user who knows their MaxSubmitJobs sets this.
QUEUE_ENV = "HPCJOBS_ARRAY_QUEUE"


def queue_limit(limits: ArrayLimits) -> int:
    env = os.environ.get(QUEUE_ENV, "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (limits.max_job_count or 10000) // 4)


def plan(text: str, limits: ArrayLimits, queue: int | None = None) -> Plan | None:
    """The chunks for ``--array TEXT`` under ``limits``; None when Slurm takes it as it is.

    More tasks than ``queue`` (:func:`queue_limit`) are not queued at once: the first
    ``window`` chunks are, and each further chunk is queued by a feeder job when the chunk
    ``window`` places before it ends (chained: two chunks, the running one and the next)."""
    array = parse_array(text)
    q = queue if queue is not None else queue_limit(limits)
    if fits(array, limits) and array.count <= q:
        return None
    per = min(limits.max_array_tasks, max(1, q // 2) if array.throttle else q)
    chunks = split(array.indices, limits.max_array_size, per)
    p = Plan(text, array.throttle, chunks, limits, queue=q)
    if array.count > q and len(chunks) > 1:
        w = 2 if p.chained else max(1, q // max(c.count for c in chunks))
        p.window = w if w < len(chunks) else 0
    return p


def export_of(chunk: Chunk | None) -> list[str]:
    """The --export items that tell a chunk its offset and stride (an unsplit array: 0 and 1,
    so that values inherited from the submitting shell, e.g. a task that submits, never count)."""
    offset, stride = (chunk.offset, chunk.stride) if chunk else (0, 1)
    return [f"HPCJOBS_ARRAY_OFFSET={offset}", f"HPCJOBS_ARRAY_STRIDE={stride}"]


@dataclass
class Submit:
    """What every chunk's sbatch needs (kept in the record for the feeders)."""

    script: str
    export: list[str] = field(default_factory=list)  # --env-pass names
    dependency: str | None = None  # the job's own --after
    cwd: str | None = None
    python: str = sys.executable  # the feeders' interpreter: the submitting one
    partition: str | None = None
    account: str | None = None
    qos: str | None = None


def _sbatch_chunk(p: Plan, k: int, sub: Submit, prev: str | None) -> str:
    c = p.chunks[k]
    args = [f"--array={p.spec_of(c)}", "--export=" + ",".join(["ALL", *sub.export, *export_of(c)])]
    deps = [sub.dependency] if sub.dependency else []
    if p.chained and prev:
        deps.append(f"afterany:{prev}")
    if deps:
        args.append("--dependency=" + ",".join(deps))
    return slurm.sbatch(sub.script, extra=args, cwd=sub.cwd)


# The feeders' own request: small, so that one starts wherever a CPU is free.
FEEDER_TIME = "5"  # minutes
FEEDER_MEM = "1G"


def _feeder(run: runs.Run, p: Plan, k: int, sub: Submit, after: list[str]) -> str:
    """Queue the feeder that submits chunk k + window once chunk k ended (``after``: the job
    ids it waits for, afterany)."""
    script = run.path / "array" / "feed.sbatch"
    if not script.exists():
        q = shlex.quote
        runs.atomic_write(script, "\n".join([
            "#!/bin/bash",
            "# hpcjobs: queues the next chunk of a split array when an earlier one ended",
            "# (docs/arrays.md); its argument is the chunk that ended.",
            f"export HPCJOBS_RUNS_DIR={q(str(runs.root().resolve()))}",
            f'exec {q(sub.python)} -m hpcjobs.arrays {q(str(run.path))} "$1"', ""]), 0o700)
    out = str(run.path / "array").replace("%", "%%")
    args = [f"--job-name=hpcjobs-feed-{p.first}", "--nodes=1", "--ntasks=1", "--cpus-per-task=1",
            f"--mem={FEEDER_MEM}", f"--time={FEEDER_TIME}", f"--output={out}/feed-%j.out",
            "--open-mode=append", "--no-requeue", f"--chdir={sub.cwd or os.getcwd()}",
            "--dependency=" + ",".join(f"afterany:{j}" for j in after)]
    args += [f"--partition={sub.partition}"] if sub.partition else []
    args += [f"--account={sub.account}"] if sub.account else []
    args += [f"--qos={sub.qos}"] if sub.qos else []
    return slurm.parse_sbatch(slurm.run(["sbatch", "--parsable", *args, str(script), str(k)],
                                        cwd=sub.cwd, timeout=120, retries=1,
                                        transient=slurm.UNSENT).stdout)


def submit(run: runs.Run, p: Plan, sub: Submit) -> list[str]:
    """sbatch the chunks to queue now (``--array``, ``--export`` and ``--dependency`` on the
    command line override the script's #SBATCH lines; the job's own --after is kept in each),
    and with a window, the feeders that queue the rest (their state in the record's
    ``array/``). All or nothing: when Slurm refuses one, what was queued is cancelled, last
    first (so that none starts on its predecessor's end), and Slurm's error is raised. Returns
    the chunks' job ids; the plan's chunks get them."""
    ids: list[str] = []
    n_now = p.window or len(p.chunks)
    try:
        for k in range(n_now):
            ids.append(_sbatch_chunk(p, k, sub, ids[-1] if ids else None))
            p.chunks[k] = replace(p.chunks[k], job_id=ids[-1])
        if p.window:
            d = run.path / "array"
            d.mkdir(mode=0o700, exist_ok=True)
            runs.atomic_write(d / "plan.json", json.dumps(p.to_dict(), indent=1) + "\n")
            runs.atomic_write(d / "submit.json", json.dumps(sub.__dict__, indent=1) + "\n")
            for k, jid in enumerate(ids):
                runs.atomic_write(d / f"chunk-{k}", jid + "\n")
            feeders: list[str] = []
            for k in range(n_now):
                if k + p.window < len(p.chunks):
                    after = [ids[k]] + ([feeders[-1]] if p.chained and feeders else [])
                    feeders.append(_feeder(run, p, k, sub, after))
                    ids.append(feeders[-1])  # undone with the chunks if a later step fails
                    runs.atomic_write(d / f"feeder-{k}", feeders[-1] + "\n")
            del ids[n_now:]
    except SlurmError as err:
        _undo(ids)
        if not ids:
            raise
        raise SlurmError(f"{err} (after {len(ids)} of the jobs of array {p.text}, which were "
                         "cancelled; a queued array counts each of its tasks against MaxJobCount "
                         f"and MaxSubmitJobs: set {QUEUE_ENV} lower)") from None
    except BaseException:
        _undo(ids)
        raise
    return ids


def _undo(ids: list[str]) -> None:
    """Cancel what a submission that failed had queued, last first (none starts on its
    predecessor's cancellation); the submission's own error is the one to report."""
    for jid in reversed(ids):
        try:
            slurm.scancel([jid])
        except SlurmError:
            pass


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def feed(run_dir: str, k: int) -> int:
    """What a feeder job runs (``python -m hpcjobs.arrays RECORD K``): chunk K ended, so queue
    chunk K + window (chained on chunk K + window - 1) and its own feeder while chunks remain.
    Writes each id into the record as soon as Slurm gave it; a second run is a no-op; after a
    cancel (the record's ``array/cancel``) it queues nothing and cancels what it just queued."""
    slurm.clean_job_env()
    run = runs.Run(Path(run_dir))
    d = run.path / "array"
    p = Plan.from_dict(json.loads((d / "plan.json").read_text()))
    sub = Submit(**json.loads((d / "submit.json").read_text()))
    j = k + p.window
    if j >= len(p.chunks) or (d / f"chunk-{j}").exists():
        return 0
    if (d / "cancel").exists():
        print(f"hpcjobs: array {p.first} was cancelled: chunk {j + 1} is not queued")
        return 0
    prev = _read(d / f"chunk-{j - 1}") if p.chained else None
    n = len(p.chunks)
    try:
        if p.chained and prev is None:
            raise SlurmError(f"chunk {j} was never queued, so chunk {j + 1} cannot wait for it")
        jid = _sbatch_chunk(p, j, sub, prev)
    except SlurmError as e:
        runs.atomic_write(d / "error", f"chunk {j + 1} of {n}: {e}\n")
        print(f"hpcjobs: array {p.first}: chunk {j + 1} could not be queued: {e}", file=sys.stderr)
        return 3
    runs.atomic_write(d / f"chunk-{j}", jid + "\n")
    runs.link_job(run, jid)
    print(f"hpcjobs: array {p.first}: chunk {j + 1} of {n} queued as job {jid}")
    fid = None
    if j + p.window < n:
        before = _read(d / f"feeder-{j - 1}") if p.chained else None
        try:
            fid = _feeder(run, p, j, sub, [jid] + ([before] if before else []))
        except SlurmError as e:
            runs.atomic_write(d / "error", f"the feeder after chunk {j + 1} of {n} could not "
                              f"queue the rest: {e}\n")
            print(f"hpcjobs: array {p.first}: no feeder after chunk {j + 1}: {e}", file=sys.stderr)
            return 3
        runs.atomic_write(d / f"feeder-{j}", fid + "\n")
    if (d / "cancel").exists():  # cancelled while this ran
        slurm.scancel([x for x in (fid, jid) if x])
    return 0


# --- the logical array in status, wait, cancel, logs -----------------------------------------

_LOGICAL = re.compile(r"^(\d+)(?:_(\d+))?$")


@dataclass
class LogicalArray:
    """A logical id ("FIRST" or "FIRST_INDEX") of a split array, with the Slurm ids to ask."""

    job_id: str
    plan: Plan
    run: runs.Run
    index: int | None = None  # one logical task
    where: tuple[int, int] | None = None  # (chunk number, Slurm task id)

    def __post_init__(self) -> None:
        self._refresh()

    def _refresh(self) -> None:
        """The chunks queued so far and the feeders still to run (the record's ``array/``,
        written by the submitter and the feeders; without it, every chunk was queued at once)."""
        d = self.run.path / "array"
        self.feeders: dict[int, str] = {}
        self.error = None
        if not self.plan.window or not d.is_dir():
            return
        for k, c in enumerate(self.plan.chunks):
            if c.job_id is None:
                jid = _read(d / f"chunk-{k}")
                if jid:
                    self.plan.chunks[k] = replace(c, job_id=jid)
        for k in range(len(self.plan.chunks)):
            fid = _read(d / f"feeder-{k}")
            if fid:
                self.feeders[k] = fid
        self.error = _read(d / "error")

    def _waiting_feeders(self) -> dict[int, str]:
        """{chunk number: the feeder that will queue it} for chunks not queued yet."""
        w = self.plan.window
        return {j: self.feeders[j - w] for j, c in enumerate(self.plan.chunks)
                if c.job_id is None and j - w in self.feeders}

    @property
    def ask(self) -> list[str]:
        if self.where is not None:
            c = self.plan.chunks[self.where[0]]
            return [f"{c.job_id}_{self.where[1]}"] if c.job_id else \
                list(self._waiting_feeders().values())
        return self.plan.job_ids + list(dict.fromkeys(self._waiting_feeders().values()))

    def _unqueued(self, k: int, found: dict[str, JobStatus]) -> tuple[str, str]:
        """(state, reason) of the tasks of chunk k, which no job holds yet: PENDING while a
        feeder is left that will queue it (directly or through the feeders it queues),
        FAILED when one could not queue (the record's error) or none is left."""
        if self.error:
            return "FAILED", f"not queued: {self.error}"
        waiting = self._waiting_feeders()
        # A feeder not asked (queued since the squeue) counts as alive; one asked that Slurm
        # no longer holds, or that ended, does not.
        alive = [f for f in waiting.values() if f not in found or
                 (not found[f].done and found[f].state != "UNKNOWN")]
        if not alive:
            return "FAILED", "not queued: no feeder job is left to queue it (they ended)"
        f = waiting.get(k)
        if f is not None:
            prev = self.plan.chunks[k - self.plan.window].job_id
            return "PENDING", f"queued by hpcjobs when job {prev} ends (feeder job {f})"
        return "PENDING", "queued by hpcjobs when an earlier chunk ends"

    def fold(self, found: dict[str, JobStatus]) -> JobStatus:
        """The status of the logical array (or task) from the chunks' statuses (squeue's, with
        no record fallback): tasks renamed to their logical ids; a chunk Slurm forgot counts
        with the end a watcher recorded for it (meta ``array_final``); a chunk not queued yet
        as PENDING tasks (or FAILED when its feeder could not queue it)."""
        self._refresh()  # after the squeue: a feeder that ended has written what it queued
        if self.where is not None:
            k, t = self.where
            c = self.plan.chunks[k]
            if c.job_id is None:
                state, reason = self._unqueued(k, found)
                return JobStatus(self.job_id, state, reason=reason, source="record")
            real = f"{c.job_id}_{t}"
            st = found.get(real) or JobStatus(real, "UNKNOWN", source="none")
            if st.state == "UNKNOWN":
                st = self._recorded_task(real) or st
            return replace(st, job_id=self.job_id)
        tasks: list[JobStatus] = []
        recorded = self.run.meta().get("array_final") or {}
        first = self.plan.first
        for k, c in enumerate(self.plan.chunks):
            if c.job_id is None:
                state, reason = self._unqueued(k, found)
                tasks += [JobStatus(f"{first}_{c.logical(t)}", state, reason, source="record")
                          for t in c.tasks]
                continue
            st = found.get(c.job_id)
            if st is None or st.state == "UNKNOWN":
                kept = recorded.get(c.job_id)
                if not kept:
                    continue
                st = JobStatus.from_dict(kept)
            for t in (st.tasks or [st]):
                tasks.append(replace(t, job_id=self.plan.logical_id(t.job_id)))
        if not any(t.source != "record" for t in tasks) and not recorded:
            final = self.run.meta().get("final")
            if final:
                return JobStatus.from_dict({**final, "source": "record"})
        if not tasks:
            return JobStatus(self.job_id, "UNKNOWN", source="record",
                             reason="Slurm no longer holds its chunks and no accounting knows them")
        return watch.combine(self.job_id, tasks)

    def _recorded_task(self, real: str) -> JobStatus | None:
        base = real.split("_")[0]
        kept = (self.run.meta().get("array_final") or {}).get(base)
        if not kept:
            return None
        for t in JobStatus.from_dict(kept).tasks:
            if t.job_id == real:
                return replace(t, source="record")
        return None

    def keep(self, found: dict[str, JobStatus]) -> None:
        """Record each chunk's end once seen (Slurm forgets a chunk MinJobAge after its end,
        maybe long before the last chunk ends)."""
        if self.where is not None:
            return
        meta = self.run.meta()
        kept = dict(meta.get("array_final") or {})
        new = {c.job_id: found[c.job_id].to_dict() for c in self.plan.chunks
               if c.job_id and c.job_id not in kept and c.job_id in found and
               found[c.job_id].done and found[c.job_id].source != "record"}
        if new:
            self.run.update_meta(array_final={**kept, **new})

    def cancel_order(self, found: dict[str, JobStatus]) -> list[list[str]]:
        """Mark the array cancelled in its record (a feeder running now queues nothing more, or
        cancels what it just queued), and give the ids to scancel in rounds: the feeders, then
        the chunks none of whose tasks started (waiting for their predecessor), then the others,
        so that nothing starts on the cancellation of what it waits for (scancel cancels the
        ids of one call in parallel threads)."""
        if self.where is not None:
            return [self.ask]
        if self.plan.window:
            runs.atomic_write(self.run.path / "array" / "cancel", "cancelled\n")
        feeders = [f for f in dict.fromkeys(self._waiting_feeders().values())
                   if not (f in found and found[f].done)]
        waiting, started = [], []
        for c in self.plan.chunks:
            st = found.get(c.job_id) if c.job_id else None
            if st is None or st.done or st.state == "UNKNOWN":
                continue
            live = [t for t in (st.tasks or [st]) if not t.done]
            (waiting if all(t.state == "PENDING" for t in live) else started).append(c.job_id)
        return [r for r in (feeders, waiting, started) if r]

    def outputs(self, out_dir: Path, status: JobStatus | None) -> list[tuple[str, Path, JobStatus | None]]:
        """(logical task id, output file, status) per task, in logical order: the tasks that
        ran or run (their file is there, or Slurm lists them as running or ended)."""
        if self.where is not None:
            c = self.plan.chunks[self.where[0]]
            name = f"slurm-{c.job_id}_{self.where[1]}.out" if c.job_id else "(not queued yet)"
            return [(self.job_id, out_dir / name, status)]
        by_id = {t.job_id: t for t in (status.tasks if status is not None else ())}
        names: dict[str, Path] = {}
        for c in self.plan.chunks:
            if not c.job_id:
                continue
            for p in out_dir.glob(f"slurm-{c.job_id}_*.out"):
                task = p.name[len(f"slurm-{c.job_id}_"):-len(".out")]
                if task.isdigit():
                    names[self.plan.logical_id(f"{c.job_id}_{task}")] = p
        for lid, t in by_id.items():
            if lid in names or t.state == "PENDING" or not watch.JOB_ID.match(lid):
                continue
            loc = self.plan.locate(watch.task_index(lid))
            if loc and self.plan.chunks[loc[0]].job_id:
                names[lid] = out_dir / f"slurm-{self.plan.chunks[loc[0]].job_id}_{loc[1]}.out"
        return [(lid, names[lid], by_id.get(lid)) for lid in sorted(names, key=watch.task_index)]


def view(run: runs.Run | None, job_id: str) -> LogicalArray | None:
    """The logical array ``job_id`` names (its first chunk's id, or that id with a logical
    index), or None: a plain job, a chunk asked by its own id, a record without chunks."""
    if run is None:
        return None
    m = _LOGICAL.match(job_id)
    meta = run.meta()
    data = meta.get("array")
    if not m or not data or not data.get("chunks") or m.group(1) != meta.get("job_id"):
        return None
    p = Plan.from_dict(data)
    if m.group(2) is None:
        return LogicalArray(job_id, p, run)
    index = int(m.group(2))
    where = p.locate(index)
    if where is None:
        c0 = p.chunks[0]
        raise BadInput("JOBID", f"array {m.group(1)} ({p.text}) has no index {index}",
                       f"give one of its indices, e.g. {m.group(1)}_{c0.logical(c0.tasks[0])}")
    return LogicalArray(job_id, p, run, index, where)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m hpcjobs.arrays RECORD_DIR CHUNK (run by a feeder job)",
              file=sys.stderr)
        return 2
    return feed(argv[0], int(argv[1]))


if __name__ == "__main__":
    sys.exit(main())
