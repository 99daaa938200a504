"""Where a job's samples are, and what else the receipt needs: state, kind, plan, NCCL's transport.

A job hpcjobs submitted keeps its samples in its run record (``monitor/<job>/``). A direct-use
script (``sbatch job_templates/<kind>.sbatch``) has no record: its samples go to
``hpcjobs-monitor/<job>/`` in the job's working directory, which Slurm reports as WorkDir
while it holds the job (and where slurm-<jobid>.out goes by default); after that, the current
directory is looked at, or ``--dir`` says where.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from hpcjobs import runs, slurm, watch
from hpcjobs.errors import BadInput, SlurmError
from hpcjobs.runs import Run
from hpcjobs.slurm import JobStatus

MONITOR_DIR = "monitor"  # in a run record
DIRECT_DIR = "hpcjobs-monitor"  # in a direct job's working directory (job_templates/_monitor.j2)
NCCL_SCAN_BYTES = 16 * 2**20  # NCCL prints its transports at start-up: the log's head is enough


@dataclass
class Source:
    job_id: str
    directory: Path | None = None
    where: str = ""
    run: Run | None = None
    status: JobStatus | None = None
    looked: list[str] = field(default_factory=list)
    output: Path | None = None  # the job's output file, where known

    @property
    def kind(self) -> str | None:
        return self.run.meta().get("kind") if self.run else None

    def allocated_gpus(self) -> int | None:
        if self.run is None:
            return None
        try:
            spec = self.run.spec()
        except (OSError, ValueError):
            return None
        return (spec.get("gpus_per_node") or 0) * (spec.get("nodes") or 0)

    def recorded_transport(self) -> tuple[list[str], str] | None:
        """What the preflight's all-reduce saw the job's backend use (meta.json "transport")."""
        t = self.run.meta().get("transport") if self.run else None
        if not t:
            return None
        return [x.strip() for x in str(t).split(";") if x.strip()], "the preflight's all-reduce"

    def plan(self) -> dict | None:
        if self.run is None:
            return None
        try:
            return json.loads((self.run.path / "plan.json").read_text())
        except (OSError, ValueError):
            return None


def has_samples(d: Path) -> bool:
    try:
        return d.is_dir() and any(n.endswith(".jsonl") for n in os.listdir(d))
    except OSError:
        return False


def _status(job_id: str) -> JobStatus | None:
    try:
        st = watch.lookup([job_id])[job_id]
    except SlurmError:
        st = watch.from_record(job_id)
    return None if st is None or watch.unknown(st) else st


def _slurm_dirs(job_id: str) -> list[tuple[Path, str]]:
    """WorkDir and the output file's directory of a job Slurm still holds."""
    try:
        proc = slurm.run(["scontrol", "show", "job", "-o", job_id], check=False, retries=1)
    except SlurmError:
        return []
    if proc.returncode != 0:
        return []
    out = []
    for line in proc.stdout.splitlines():
        if not line.startswith("JobId="):
            continue
        kv = slurm.parse_kv(line, job=True)
        if kv.get("WorkDir"):
            out.append((Path(kv["WorkDir"]), "Slurm's WorkDir"))
        if kv.get("StdOut"):
            out.append((Path(kv["StdOut"]).parent, "the job's output directory"))
        break
    return out


def locate(job_id: str, samples_dir: str | None = None) -> Source:
    """Find a job's samples (BadInput, naming where hpcjobs looked, when there are none)."""
    (jid,) = watch.check_ids([job_id])
    src = Source(jid, run=runs.find(jid))
    src.status = _status(jid)
    candidates: list[tuple[Path, str]] = []
    if samples_dir is not None:
        d = Path(samples_dir).expanduser()
        if not d.is_dir():
            raise BadInput("--dir", f"{samples_dir} is not a directory",
                           "give the job's hpcjobs-monitor (or run record monitor) directory")
        candidates += [(d / jid, "--dir"), (d, "--dir")]
    elif src.run is not None:
        candidates.append((src.run.path / MONITOR_DIR / jid, "run record"))
    else:
        candidates += [(d / DIRECT_DIR / jid, why) for d, why in _slurm_dirs(jid)]
        candidates.append((Path.cwd() / DIRECT_DIR / jid, "current directory"))
    for d, why in candidates:
        src.looked.append(str(d))
        if has_samples(d):
            src.directory, src.where = d, why
            break
    src.output = _output(src)
    if src.directory is None:
        _none_found(src)
    return src


def _none_found(src: Source) -> None:
    jid = src.job_id
    tasks = []
    if src.run is not None and "_" not in jid:
        base = src.run.path / MONITOR_DIR
        try:
            tasks = sorted((n for n in os.listdir(base) if n.startswith(jid + "_")),
                           key=watch.task_index)
        except OSError:
            tasks = []
    if tasks:
        raise BadInput("JOBID", f"{jid} is a job array; each task has its own receipt",
                       f"name one task, e.g. hpcjobs report {tasks[0]} (tasks: {', '.join(tasks[:8])}"
                       f"{' ...' if len(tasks) > 8 else ''})")
    st = src.status
    if st is not None and st.state == "PENDING":
        raise BadInput("JOBID", f"job {jid} is PENDING: no samples yet",
                       f"hpcjobs report {jid} shows them once it runs")
    if st is None and src.run is None:
        raise BadInput("JOBID", f"no samples of job {jid} and no such job known (not recorded, "
                       f"not in the queue; looked in {', '.join(src.looked)})",
                       f"for a direct job Slurm has forgotten: hpcjobs report {jid} --dir "
                       "WORKDIR/hpcjobs-monitor")
    spec_monitor = True
    if src.run is not None:
        try:
            spec_monitor = src.run.spec().get("monitor", True)
        except (OSError, ValueError):
            pass
    why = ("it ran with --no-monitor" if not spec_monitor else
           "it ran without the monitor (HPCJOBS_MONITOR=0, an older hpcjobs), or has just started")
    raise BadInput("JOBID", f"no samples of job {jid} (looked in {', '.join(src.looked)})",
                   f"{why}; for samples moved elsewhere: hpcjobs report {jid} --dir DIR")


def _output(src: Source) -> Path | None:
    jid = src.job_id
    if src.run is not None:
        try:
            spec = src.run.spec()
        except (OSError, ValueError):
            spec = {}
        out_dir = Path(spec.get("output_dir") or src.run.path)
        return out_dir / f"slurm-{jid}.out"
    if src.status is not None and src.status.stdout:
        base, _, task = jid.partition("_")
        path = src.status.stdout.replace("%j", base).replace("%A", base).replace("%a", task or "")
        return Path(path)
    return None


# "NCCL INFO Channel 00/0 : 0[0] -> 1[0] [send] via NET/IB/0/GDRDMA", "... via P2P/IPC/read",
# "... via SHM/direct/direct"; "NCCL INFO Using network IB" (or Socket).
_VIA = re.compile(r"NCCL INFO .*? via (NET/[A-Za-z]+(?:/\d+)?(?:/GDRDMA)?|P2P/[A-Za-z]+|SHM|NVLS|CollNet)")
_NETWORK = re.compile(r"NCCL INFO Using network (\S+)")


def nccl_transport(path: Path | None) -> tuple[list[str], str]:
    """The transports NCCL logged (with NCCL_DEBUG=INFO, i.e. --nccl-debug), in first-seen
    order, and where they were read; ([], why) when unknown."""
    if path is None:
        return [], "no output file known"
    try:
        with open(path, "rb") as f:
            data = f.read(NCCL_SCAN_BYTES).decode(errors="replace")
    except FileNotFoundError:
        return [], f"no output file {path} (yet)"
    except OSError as e:
        return [], f"output {path} not readable ({e.strerror})"
    seen: dict[str, None] = {}
    for m in _VIA.finditer(data):
        seen.setdefault(m.group(1), None)
    if not seen:
        for m in _NETWORK.finditer(data):
            seen.setdefault(f"NET/{m.group(1)}", None)
    if seen:
        return list(seen), f"the job's log ({path})"
    return [], "not in the job's log (NCCL names it only with NCCL_DEBUG=INFO: --nccl-debug)"
