"""One node's part of a hang dump: the job's ranks on this node, their Python stacks and (NCCL)
their flight recorders. Run by the sentinel as one task per node of an ``srun --overlap`` step.

The ranks are found in /proc: the processes whose environment names this job and one of the
program's steps (SLURM_JOB_ID, SLURM_STEP_ID, SLURM_PROCID as srun gave them; hpcjobs.launch
execs the program, so the program's process has them). Reading another process's environment
and stack needs the same ptrace rights, which py-spy needs anyway (docs/runtime-checks.md).

py-spy (a maintained tool, PyPI ``py-spy``): ``py-spy dump --json --pid PID`` for each rank, in
parallel. It pauses the process while it reads (ptrace); on a process that is already stopped
(SIGSTOP, state T) that fails with "Failed to suspend process", so stopped processes are read
with ``--nonblocking`` (process_vm_readv, no pause), and so is any process whose blocking read
failed.

NCCL flight recorder: torch's ProcessGroupNCCL watches a named pipe,
``$TORCH_NCCL_DEBUG_INFO_PIPE_FILE<rank>.pipe`` (when the flight recorder is on:
TORCH_FR_BUFFER_SIZE > 0, formerly TORCH_NCCL_TRACE_BUFFER_SIZE); a write to it makes the
process dump its recent collectives to ``$TORCH_FR_DUMP_TEMP_FILE<rank>`` (formerly
TORCH_NCCL_DEBUG_INFO_TEMP_FILE; default /tmp/nccl_trace_rank_).
A FIFO only connects processes of one kernel, so the write happens here, on the rank's node.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time

PYSPY_TIMEOUT = 30.0  # seconds for one py-spy dump
FR_WAIT = 20.0  # seconds for the dumps after the pipe was written (torch 2.11 on 1x H200: 6-8 s, most of it collecting C++ stack traces)
FR_LAST = 5  # entries of each rank's flight recorder kept in the report


def _read(path: str, limit: int = 1 << 20) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return b""


def environ_of(pid: int) -> dict[str, str]:
    out = {}
    for item in _read(f"/proc/{pid}/environ").split(b"\0"):
        k, eq, v = item.partition(b"=")
        if eq:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def status_of(pid: int) -> tuple[str, int]:
    """("S (sleeping)", ppid) from /proc/PID/status."""
    state, ppid = "", 0
    for line in _read(f"/proc/{pid}/status", 4096).decode(errors="replace").splitlines():
        if line.startswith("State:"):
            state = line.split(":", 1)[1].strip()
        elif line.startswith("PPid:"):
            ppid = int(line.split(":", 1)[1])
    return state, ppid


def is_python(pid: int) -> bool:
    try:
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return False
    return exe.startswith(("python", "pypy"))


def job_tasks(job_id: str, steps: set[str], node: str | None = None,
              proc: str = "/proc") -> dict[int, list[dict]]:
    """rank -> the processes of that task on this node (the task's first process first, then its
    descendants), for the given steps of the job. ``node`` (SLURMD_NODENAME) keeps only that
    node's tasks where several nodes share one kernel (the sandbox's nodes do)."""
    found = []
    for name in os.listdir(proc):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        env = environ_of(int(name))
        if env.get("SLURM_JOB_ID") != job_id or env.get("SLURM_STEP_ID") not in steps:
            continue
        if node and env.get("SLURMD_NODENAME", node) != node:
            continue
        rank = env.get("SLURM_PROCID", "")
        if not rank.isdigit():
            continue
        state, ppid = status_of(int(name))
        found.append({"pid": int(name), "ppid": ppid, "rank": int(rank), "state_text": state,
                      "step": f"{job_id}.{env['SLURM_STEP_ID']}", "env": env})
    pids = {p["pid"]: p for p in found}

    def depth(p: dict) -> int:
        d = 0
        while p["ppid"] in pids and pids[p["ppid"]]["rank"] == p["rank"] and d < 64:
            p, d = pids[p["ppid"]], d + 1
        return d

    tasks: dict[int, list[dict]] = {}
    for p in sorted(found, key=lambda p: (depth(p), p["pid"])):
        tasks.setdefault(p["rank"], []).append(p)
    return tasks


def py_spy() -> str | None:
    """py-spy beside this Python (a virtual environment's bin/), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("py-spy")


def _start_dump(exe: str, pid: int, nonblocking: bool) -> subprocess.Popen:
    cmd = [exe, "dump", "--json", "--pid", str(pid)] + (["--nonblocking"] if nonblocking else [])
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish_dump(p: subprocess.Popen) -> tuple[list | None, str]:
    try:
        out, err = p.communicate(timeout=PYSPY_TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return None, f"py-spy took longer than {PYSPY_TIMEOUT:.0f} s"
    if p.returncode == 0:
        try:
            return json.loads(out), ""
        except ValueError:
            return None, "py-spy printed no JSON"
    lines = [ln.strip() for ln in err.splitlines() if ln.strip() and not ln.startswith(" ")]
    why = "; ".join(ln for ln in lines if not ln.startswith("Stack backtrace"))[:300]
    return None, why or f"py-spy exited {p.returncode}"


def dump_stacks(procs: list[dict], exe: str | None) -> None:
    """py-spy every process (in parallel) into its "threads"; a failed blocking read is
    retried without pausing the process."""
    if exe is None:
        for p in procs:
            p["error"] = "py-spy not found: pip install py-spy (the hpcjobs[sentinel] extra)"
        return
    running = []
    for p in procs:
        # T: stopped (SIGSTOP); t: held by a tracer (a debugger): neither can be paused again.
        mode = "nonblocking" if p["state_text"].startswith(("T", "t")) else "blocking"
        running.append((p, mode, _start_dump(exe, p["pid"], mode == "nonblocking")))
    for p, mode, proc in running:
        threads, why = _finish_dump(proc)
        if threads is None and mode == "blocking":
            mode = "nonblocking"
            threads, why2 = _finish_dump(_start_dump(exe, p["pid"], True))
            why = why2 and f"{why}; --nonblocking: {why2}"
        p["pyspy"], p["threads"], p["error"] = mode, threads or [], (why if threads is None else "")
        _add_source(p["threads"], p["pid"])


def _add_source(threads: list, pid: int) -> None:
    """Each frame's source line, read as the process sees the file (its root, its cwd)."""
    cache: dict[str, list[str]] = {}
    for t in threads:
        for f in t.get("frames") or ():
            name = f.get("filename") or ""
            if name not in cache:
                path = name if os.path.isabs(name) else os.path.join(f"/proc/{pid}/cwd", name)
                cache[name] = _read(path, 8 << 20).decode(errors="replace").splitlines()
            line = int(f.get("line") or 0)
            if 0 < line <= len(cache[name]):
                f["code"] = cache[name][line - 1].strip()


# --- NCCL flight recorder ---------------------------------------------------------------------

class _PlainUnpickler(pickle.Unpickler):
    """The flight recorder's dump holds only dicts, lists, strings and numbers: refuse any class."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"flight recorder dump names {module}.{name}")


def read_flight_record(path: str) -> dict | None:
    data = _read(path, 256 << 20)
    if not data:
        return None
    try:
        record = _PlainUnpickler(io.BytesIO(data)).load()
    except Exception:  # a half-written or foreign file: no record
        try:
            record = json.loads(data)
        except ValueError:
            return None
    return record if isinstance(record, dict) else None


def fr_summary(record: dict, path: str) -> dict:
    entries = record.get("entries") or []
    keep = ("collective_seq_id", "p2p_seq_id", "profiling_name", "state", "pg_id", "input_sizes")
    last = [{k: e.get(k) for k in keep} for e in entries[-FR_LAST:]]
    for e, src in zip(last, entries[-FR_LAST:]):
        frames = src.get("frames") or []
        user = next((f for f in frames if "/site-packages/" not in str(f.get("filename", ""))), None)
        if user:
            e["at"] = f"{os.path.basename(str(user.get('filename')))}:{user.get('line')}"
    return {"dump": path, "version": record.get("version"), "pg_status": record.get("pg_status") or {},
            "last_entries": last, "entries": len(entries)}


def fr_paths(p: dict) -> tuple[str, str] | None:
    """(pipe, dump file) of a rank's flight recorder, or None where it has none."""
    env = p["env"]
    size = env.get("TORCH_FR_BUFFER_SIZE") or env.get("TORCH_NCCL_TRACE_BUFFER_SIZE") or "0"
    stem = env.get("TORCH_NCCL_DEBUG_INFO_PIPE_FILE", "")
    if not stem or not size.isdigit() or int(size) <= 0:
        return None
    rank = env.get("RANK", str(p["rank"]))
    dump = (env.get("TORCH_FR_DUMP_TEMP_FILE") or env.get("TORCH_NCCL_DEBUG_INFO_TEMP_FILE")
            or "/tmp/nccl_trace_rank_") + rank
    return stem + rank + ".pipe", dump


def poke_flight_recorders(procs: list[dict]) -> list[tuple[dict, str, float]]:
    """Write to each rank's pipe; returns (proc, dump path, its old mtime) to wait for."""
    import stat

    waiting = []
    for p in procs:
        paths = fr_paths(p)
        if paths is None:
            continue
        pipe, dump = paths
        try:
            if not stat.S_ISFIFO(os.stat(pipe).st_mode):
                continue
            old = os.stat(dump).st_mtime if os.path.exists(dump) else 0.0
            fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO: nobody reads it
            try:
                os.write(fd, b"1\n")
            finally:
                os.close(fd)
        except OSError as e:
            p["nccl"] = {"error": f"{pipe}: {e.strerror}"}
            continue
        waiting.append((p, dump, old))
    return waiting


def collect_flight_records(waiting: list[tuple[dict, str, float]], wait: float = FR_WAIT) -> None:
    deadline = time.monotonic() + wait
    pending = list(waiting)
    while pending:
        for item in list(pending):
            p, dump, old = item
            try:
                fresh = os.stat(dump).st_mtime > old
            except OSError:
                fresh = False
            if fresh:
                time.sleep(0.2)  # the writer may still be writing
                record = read_flight_record(dump)
                if record is not None:
                    p["nccl"] = fr_summary(record, dump)
                    pending.remove(item)
        if time.monotonic() > deadline:
            for p, dump, _ in pending:
                p["nccl"] = {"error": f"no flight recorder dump in {dump} within {wait:.0f} s"}
            break
        time.sleep(0.1)


# --- the node's part ---------------------------------------------------------------------------

def node_ranks(job_id: str, steps: set[str], *, stacks: bool = True,
               exe: str | None = None) -> list[dict]:
    """One record per rank on this node (its stacks and flight recorder); the processes of a
    task that are not Python (a shell that started it) are passed over for its first Python
    descendant."""
    host = socket.gethostname()
    tasks = job_tasks(job_id, steps, os.environ.get("SLURMD_NODENAME"))
    chosen = []
    for _, procs in sorted(tasks.items()):
        py = [p for p in procs if is_python(p["pid"])]
        p = py[0] if py else procs[0]
        if not py:
            cmd = _read(f"/proc/{p['pid']}/cmdline", 200).replace(b"\0", b" ").decode(errors="replace")
            p["error"] = f"no Python process in the task ({cmd.strip()})"
        p["host"] = host
        chosen.append(p)
    waiting = poke_flight_recorders([p for p in chosen if not p.get("error")])
    if stacks:
        dump_stacks([p for p in chosen if not p.get("error")], exe or py_spy())
    collect_flight_records(waiting)
    out = []
    for p in chosen:
        out.append({"rank": p["rank"], "host": p["host"], "pid": p["pid"], "step": p["step"],
                    "state": p["state_text"][:1], "state_text": p["state_text"],
                    "pyspy": p.get("pyspy", ""), "threads": p.get("threads", []),
                    "error": p.get("error", ""), "nccl": p.get("nccl")})
    return out
