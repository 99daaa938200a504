"""Run records: every submission keeps its exact script, spec and metadata.

Layout: ``$HPCJOBS_RUNS_DIR`` (default ``$XDG_DATA_HOME/hpcjobs/runs``, i.e.
``~/.local/share/hpcjobs/runs``) / ``<YYYYmmdd-HHMMSS>-<kind>-<random>/`` holding
``job.sbatch``, ``spec.json``, side files of the kind, ``meta.json`` (job id, time, git state)
and the job's output ``slurm-<jobid>.out``; ``by-id/<jobid>`` links to it.

Atomic: a record is assembled in a hidden temporary directory and renamed into place, so a
reader never sees half of one; files are replaced by rename, never rewritten. Records hold
what the user ran (arguments, environment values), so directories are 0700.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def root() -> Path:
    env = os.environ.get("HPCJOBS_RUNS_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "hpcjobs" / "runs"


def atomic_write(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        # surrogateescape: argv bytes that are not UTF-8 reach the script exactly as given.
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class Run:
    path: Path

    @property
    def script(self) -> Path:
        return self.path / "job.sbatch"

    def meta(self) -> dict:
        try:
            return json.loads((self.path / "meta.json").read_text())
        except (OSError, ValueError):
            return {}

    def spec(self) -> dict:
        return json.loads((self.path / "spec.json").read_text())

    def update_meta(self, **values) -> None:
        meta = self.meta()
        meta.update(values)
        atomic_write(self.path / "meta.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")

    @property
    def job_id(self) -> str | None:
        return self.meta().get("job_id")

    # A retry chain (hpcjobs/chains.py, docs/retry.md) lives in its first record's
    # attempts.json: a file of its own, because the job that decides a retry writes it from a
    # compute node while watchers may be writing meta.json ("final") at the same time.
    def attempts(self) -> dict:
        """The retry chain this record heads ({} for a job submitted without --retry)."""
        try:
            return json.loads((self.path / "attempts.json").read_text())
        except (OSError, ValueError):
            return {}

    def write_attempts(self, data: dict) -> None:
        atomic_write(self.path / "attempts.json", json.dumps(data, indent=2, sort_keys=True) + "\n")


def new_run_path(kind: str) -> Path:
    """The path a new record will get (not created): output paths in the script point here."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # 32 random bits: 50 submissions in the same second collide with odds of ~3e-7.
    return root() / f"{stamp}-{kind}-{secrets.token_hex(4)}"


def create(path: Path, script: str, spec: dict, files: dict[str, str], meta: dict) -> Run:
    """Write a complete record at ``path`` atomically (temp dir + rename)."""
    base = path.parent
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = base / f".tmp-{path.name}"
    tmp.mkdir(mode=0o700)
    try:
        atomic_write(tmp / "job.sbatch", script, 0o700)
        atomic_write(tmp / "spec.json", json.dumps(spec, indent=2, sort_keys=True) + "\n")
        for name, text in files.items():
            atomic_write(tmp / name, text)
        atomic_write(tmp / "meta.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Run(path)


def discard(run: Run) -> None:
    shutil.rmtree(run.path, ignore_errors=True)


def link_job(run: Run, job_id: str) -> None:
    by_id = root() / "by-id"
    by_id.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = by_id / f".{job_id}.{secrets.token_hex(4)}"
    os.symlink(os.path.relpath(run.path, by_id), tmp)
    os.replace(tmp, by_id / job_id)


def find(job_id: str) -> Run | None:
    link = root() / "by-id" / job_id.split("_")[0]
    if link.is_symlink() or link.is_dir():
        p = link.resolve()
        if p.is_dir():
            return Run(p)
    return None


def recorded_ids() -> set[str]:
    """Job ids that have a record (one directory listing, for views of many jobs)."""
    try:
        return {n for n in os.listdir(root() / "by-id") if not n.startswith(".")}
    except OSError:
        return set()


def all_runs() -> list[Run]:
    r = root()
    if not r.is_dir():
        return []
    return [Run(p) for p in sorted(r.iterdir()) if p.is_dir() and not p.name.startswith((".", "by-id"))]


def git_state(program: list[str], cwd: str | None = None) -> dict:
    """Commit and dirty flag of the git repository holding the program, if any."""
    where = cwd or os.getcwd()
    for arg in program:
        p = Path(where, arg)
        if p.suffix in (".py", ".sh") and p.exists():
            where = str(p.resolve().parent)
            break
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return {}
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        top = subprocess.run(["git", "-C", where, "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=10)
        return {"git_commit": commit.stdout.strip(), "git_dirty": bool(dirty.stdout.strip()),
                "git_repo": top.stdout.strip()}
    except (OSError, subprocess.TimeoutExpired):
        return {}
