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

The logical array's id is its first chunk's job id; the run record keeps the chunk table
(meta ``array``) and links every chunk's id to the record. ``status``, ``wait``, ``cancel`` and
``logs`` take the logical id and ``ID_INDEX`` with the logical index; :class:`LogicalArray`
maps between the two (one squeue for all chunks).
"""

from __future__ import annotations

import bisect
import re
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
    """How a logical array is submitted: its chunks, the throttle, how it holds."""

    text: str  # the logical --array as given
    throttle: int | None
    chunks: list[Chunk]
    limits: ArrayLimits = field(default_factory=ArrayLimits)

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

    def spec_of(self, chunk: Chunk) -> str:
        return chunk.spec + (f"%{self.throttle}" if self.throttle else "")

    def locate(self, index: int) -> tuple[Chunk, int] | None:
        """(chunk, Slurm task id) of a logical index; None when the array has no such index."""
        starts = [c.offset for c in self.chunks]
        k = bisect.bisect_right(starts, index) - 1
        # Chunks are cut in index order, so only the chunk starting at or before it can hold it.
        for c in self.chunks[max(0, k - 1):k + 1][::-1]:
            t = c.task_of(index)
            if t is not None:
                return c, t
        return None

    def logical_id(self, real: str) -> str:
        """"CHUNK_TASK" (or "CHUNK_[a-b]") as the logical "FIRST_INDEX"; other ids unchanged."""
        base, _, task = real.partition("_")
        chunk = next((c for c in self.chunks if c.job_id == base), None)
        if chunk is None or not task:
            return real
        first = self.chunks[0].job_id
        if task.isdigit():
            return f"{first}_{chunk.logical(int(task))}"
        inner = task.strip("[]")
        try:
            ids = parse_array(inner).indices
        except BadInput:
            return real
        return f"{first}_[{format_indices(chunk.logical(t) for t in ids)}]"

    def describe(self) -> str:
        """One line for the submitter: how many Slurm arrays, why, and how the throttle holds."""
        why = f"MaxArraySize {self.limits.max_array_size}"
        if self.limits.max_array_tasks < self.limits.max_array_size:
            why += f", max_array_tasks {self.limits.max_array_tasks}"
        n = len(self.chunks)
        text = (f"array {self.text}: {self.count} tasks as {n} Slurm array{'s' * (n != 1)} "
                f"({why}): {', '.join(self.job_ids)}")
        if self.chained:
            text += f"; run one after another (afterany), each %{self.throttle}, so at most " \
                    f"{self.throttle} run at once"
        return text + f"; logical id {self.chunks[0].job_id}, HPCJOBS_ARRAY_INDEX in each task"

    def to_dict(self) -> dict:
        return {"text": self.text, "throttle": self.throttle, "chained": self.chained,
                "count": self.count,
                "limits": {"max_array_size": self.limits.max_array_size,
                           "max_array_tasks": self.limits.max_array_tasks},
                "chunks": [c.to_dict() for c in self.chunks]}

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        lim = d.get("limits") or {}
        return cls(d["text"], d.get("throttle"), [Chunk.from_dict(c) for c in d["chunks"]],
                   ArrayLimits(lim.get("max_array_size", 1001), lim.get("max_array_tasks", 1001)))


def plan(text: str, limits: ArrayLimits) -> Plan | None:
    """The chunks for ``--array TEXT`` under ``limits``; None when Slurm takes it as it is."""
    array = parse_array(text)
    if fits(array, limits):
        return None
    chunks = split(array.indices, limits.max_array_size, limits.max_array_tasks)
    return Plan(text, array.throttle, chunks, limits)


def export_of(chunk: Chunk | None) -> list[str]:
    """The --export items that tell a chunk its offset and stride (an unsplit array: 0 and 1,
    so that values inherited from the submitting shell, e.g. a task that submits, never count)."""
    offset, stride = (chunk.offset, chunk.stride) if chunk else (0, 1)
    return [f"HPCJOBS_ARRAY_OFFSET={offset}", f"HPCJOBS_ARRAY_STRIDE={stride}"]


def submit(script: str, p: Plan, *, export: list[str], dependency: str | None,
           cwd: str | None = None) -> list[str]:
    """sbatch each chunk (``--array``, ``--export`` and ``--dependency`` on the command line
    override the script's #SBATCH lines; the script's own --after dependency is kept in each).
    All or nothing: when Slurm refuses one chunk, the chunks already queued are cancelled
    (last first, so that none starts on its predecessor's end) and Slurm's error is raised.
    Returns the job ids; the plan's chunks get them."""
    ids: list[str] = []
    try:
        for k, c in enumerate(p.chunks):
            args = [f"--array={p.spec_of(c)}", "--export=" + ",".join(["ALL", *export, *export_of(c)])]
            deps = [dependency] if dependency else []
            if p.chained and ids:
                deps.append(f"afterany:{ids[-1]}")
            if deps:
                args.append("--dependency=" + ",".join(deps))
            ids.append(slurm.sbatch(script, extra=args, cwd=cwd))
            p.chunks[k] = replace(c, job_id=ids[-1])
    except SlurmError as err:
        _undo(ids)
        if not ids:
            raise
        raise SlurmError(f"{err} (chunk {len(ids) + 1} of {len(p.chunks)} of array {p.text}; "
                         f"the {len(ids)} queued before it were cancelled; a queued array counts "
                         "each of its tasks against MaxSubmitJobs)") from None
    except BaseException:
        _undo(ids)
        raise
    return ids


def _undo(ids: list[str]) -> None:
    """Cancel chunks queued by a submission that failed, last first (none starts on its
    predecessor's cancellation); the submission's own error is the one to report."""
    for jid in reversed(ids):
        try:
            slurm.scancel([jid])
        except SlurmError:
            pass


# --- the logical array in status, wait, cancel, logs -----------------------------------------

_LOGICAL = re.compile(r"^(\d+)(?:_(\d+))?$")


@dataclass
class LogicalArray:
    """A logical id ("FIRST" or "FIRST_INDEX") of a split array, with the Slurm ids to ask."""

    job_id: str
    plan: Plan
    run: runs.Run
    index: int | None = None  # one logical task
    where: tuple[Chunk, int] | None = None

    @property
    def ask(self) -> list[str]:
        if self.where is not None:
            c, t = self.where
            return [f"{c.job_id}_{t}"]
        return self.plan.job_ids

    def fold(self, found: dict[str, JobStatus]) -> JobStatus:
        """The status of the logical array (or task) from the chunks' statuses (squeue's, with
        no record fallback): tasks renamed to their logical ids; a chunk Slurm forgot counts
        with the end a watcher recorded for it (meta ``array_final``)."""
        if self.where is not None:
            real = self.ask[0]
            st = found.get(real) or JobStatus(real, "UNKNOWN", source="none")
            if st.state == "UNKNOWN":
                st = self._recorded_task(real) or st
            return replace(st, job_id=self.job_id)
        tasks: list[JobStatus] = []
        recorded = self.run.meta().get("array_final") or {}
        for c in self.plan.chunks:
            st = found.get(c.job_id)
            if st is None or st.state == "UNKNOWN":
                kept = recorded.get(c.job_id)
                if not kept:
                    continue
                st = JobStatus.from_dict(kept)
            for t in (st.tasks or [st]):
                tasks.append(replace(t, job_id=self.plan.logical_id(t.job_id)))
        if not tasks:
            final = self.run.meta().get("final")
            if final:
                return JobStatus.from_dict({**final, "source": "record"})
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
               if c.job_id not in kept and c.job_id in found and found[c.job_id].done
               and found[c.job_id].source != "record"}
        if new:
            self.run.update_meta(array_final={**kept, **new})

    def cancel_order(self, found: dict[str, JobStatus]) -> list[list[str]]:
        """The ids to scancel, in rounds: first the chunks none of whose tasks started (waiting
        for their predecessor), then the others, so that no chunk starts on its predecessor's
        cancellation (scancel cancels the ids of one call in parallel threads)."""
        if self.where is not None:
            return [self.ask]
        waiting, started = [], []
        for c in self.plan.chunks:
            st = found.get(c.job_id)
            if st is None or st.done or st.state == "UNKNOWN":
                continue
            live = [t for t in (st.tasks or [st]) if not t.done]
            (waiting if all(t.state == "PENDING" for t in live) else started).append(c.job_id)
        return [r for r in (waiting, started) if r]

    def outputs(self, out_dir: Path, status: JobStatus | None) -> list[tuple[str, Path, JobStatus | None]]:
        """(logical task id, output file, status) per task, in logical order: the tasks Slurm
        lists and any whose file is there."""
        if self.where is not None:
            c, t = self.where
            return [(self.job_id, out_dir / f"slurm-{c.job_id}_{t}.out", status)]
        by_id = {t.job_id: t for t in (status.tasks if status is not None else ())}
        names: dict[str, Path] = {}
        for c in self.plan.chunks:
            for p in out_dir.glob(f"slurm-{c.job_id}_*.out"):
                task = p.name[len(f"slurm-{c.job_id}_"):-len(".out")]
                if task.isdigit():
                    names[self.plan.logical_id(f"{c.job_id}_{task}")] = p
        for lid in by_id:
            if lid not in names and watch.JOB_ID.match(lid):
                loc = self.plan.locate(watch.task_index(lid))
                if loc:
                    names[lid] = out_dir / f"slurm-{loc[0].job_id}_{loc[1]}.out"
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
        raise BadInput("JOBID", f"array {m.group(1)} ({p.text}) has no index {index}",
                       f"give one of its indices, e.g. {m.group(1)}_{p.chunks[0].logical(p.chunks[0].tasks[0])}")
    return LogicalArray(job_id, p, run, index, where)
