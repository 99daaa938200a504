"""``hpcjobs.heartbeat(step=...)``: the program tells the hang sentinel that it is making progress.

(The module is not called ``heartbeat``: ``import hpcjobs.heartbeat`` would then bind the
package's name to the module, not the function, as for ``finish`` in shutdown.py.)

A job submitted with ``--hang-timeout`` exports ``HPCJOBS_HEARTBEAT_DIR``; each call then keeps
one small file per rank there, ``rank-<RANK>``, holding the step, a call count and the time::

    import hpcjobs
    for step in range(steps):
        train_step()
        hpcjobs.heartbeat(step=step)

The sentinel (hpcjobs/runners/sentinel.py) reads the files' contents, not their mtimes: on NFS
another node may see a cached mtime for up to a minute (acregmax), but a fresh open()
revalidates (close-to-open), so a changed content is seen at the next poll. Without the variable
(no sentinel, or a program run outside hpcjobs) a call does nothing.

Cost (docs/benchmarks.md): writes are rate-limited to one per ``HPCJOBS_HEARTBEAT_INTERVAL``
seconds (default 1), so a call is a clock read and a comparison; the write itself (a temporary
file renamed over the old one, so the reader never sees half a line) happens at most once a
second. It imports only os and time, and never raises: a full disk must not stop training.
"""

from __future__ import annotations

import os
import time

__all__ = ["heartbeat"]

DEFAULT_INTERVAL = 1.0

# [path or None, interval, next write (monotonic), calls, warned]; filled by the first call.
_state: list | None = None


def _rank(env: os._Environ | dict) -> str:
    for name in ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        value = env.get(name, "")
        if value.isdigit():
            return value
    return f"pid{os.getpid()}"


def _init() -> list:
    global _state
    env = os.environ
    directory = env.get("HPCJOBS_HEARTBEAT_DIR") or None
    try:
        interval = float(env.get("HPCJOBS_HEARTBEAT_INTERVAL") or DEFAULT_INTERVAL)
    except ValueError:
        interval = DEFAULT_INTERVAL
    path = os.path.join(directory, f"rank-{_rank(env)}") if directory else None
    _state = [path, max(0.0, interval), 0.0, 0, False]
    return _state


def heartbeat(step: int | str | None = None) -> None:
    """Record progress for the hang sentinel: at most one small write per interval.

    ``step`` (any value; shown in the sentinel's report) says how far the program got. Call it
    from the loop that makes progress, on every rank; calling it more often costs nothing.
    """
    s = _state or _init()
    path = s[0]
    if path is None:
        return
    s[3] += 1
    now = time.monotonic()
    if now < s[2]:
        return
    s[2] = now + s[1]
    label = "-" if step is None else "_".join(str(step).split()) or "-"
    line = f"{label} {s[3]} {time.time():.3f} {os.getpid()}\n".encode()
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        if not s[4]:  # say it once; keep trying at the interval
            s[4] = True
            os.write(2, f"hpcjobs.heartbeat: cannot write {path}: {e.strerror}\n".encode())
