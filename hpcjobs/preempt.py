"""``hpcjobs.preempted()``: the program's side of the warning signal before a time limit.

Every hpcjobs template asks Slurm for a warning signal (``--signal=B:USR2@120`` by default) to
the batch shell, which forwards it to the job step; the launcher ``exec``s the program, so the
program itself receives it. The launcher passes ``HPCJOBS_SIGNAL`` (the signal's name) through.
A program that wants to checkpoint calls, once, early and from its main thread::

    import hpcjobs
    stop = hpcjobs.preempted()      # installs the handler; returns a flag
    for step in ...:
        train_step()
        if stop():                  # the warning signal has arrived
            save_checkpoint()
            break                   # exit 0: the batch script requeues the job (--requeue)

After the step exits, the batch script runs ``scontrol requeue`` (jobs submitted with
``--requeue``); the job restarts from the top with the same job id and the program resumes from
its checkpoint. examples/train_ddp.py does exactly this; docs/reliability.md has the details.

Why a flag and not a callback: a signal handler runs between two bytecodes of the main thread,
possibly inside a collective or a file write. Setting a boolean there is safe; saving a
checkpoint there is not. (It is also why this is a plain attribute and not a threading.Event:
Event.set() takes a lock the interrupted main thread may already hold.)

No torch or other heavy import: this module is loaded by every rank of every job.
"""

from __future__ import annotations

import os
import signal as _signal
import time

__all__ = ["DEFAULT_SIGNAL", "Preempted", "preempted"]

DEFAULT_SIGNAL = "USR2"  # not USR1: some NCCL versions use it themselves

_installed: dict[int, Preempted] = {}


class Preempted:
    """A callable flag: ``flag()`` (or ``bool(flag)``) is True once the signal has arrived.

    ``received_at`` is the time.time() of the first arrival, ``count`` how many arrived.
    A handler that was installed before is still called after ours (chained).
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = _signal.Signals(signum).name.removeprefix("SIG")  # as in HPCJOBS_SIGNAL
        self.count = 0
        self.received_at: float | None = None
        self._previous = None

    def __call__(self) -> bool:
        return self.count > 0

    def __bool__(self) -> bool:
        return self.count > 0

    def wait(self, timeout: float | None = None, poll: float = 0.05) -> bool:
        """Sleep until the signal arrives or ``timeout`` seconds pass; returns the flag."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.count:
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(poll)
        return self.count > 0

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.received_at is None:
            self.received_at = time.time()
        prev = self._previous
        # Chain a handler the program had; not Python's SIGINT default, which would raise
        # KeyboardInterrupt and defeat the point of a graceful stop.
        if callable(prev) and prev is not _signal.default_int_handler:
            prev(signum, frame)

    def __repr__(self) -> str:
        state = f"arrived {self.count}x" if self.count else "not arrived"
        return f"<hpcjobs.Preempted SIG{self.name}: {state}>"


def _signum(value: str | int) -> int:
    """'USR2', 'SIGUSR2', '12' or 12 -> 12; a clear ValueError otherwise."""
    if isinstance(value, int):
        return int(_signal.Signals(value))
    text = str(value).strip().upper()
    if text.isdigit():
        return int(_signal.Signals(int(text)))
    name = text if text.startswith("SIG") else "SIG" + text
    try:
        return int(_signal.Signals[name])
    except KeyError:
        raise ValueError(f"HPCJOBS_SIGNAL={value!r} is not a signal name; use e.g. USR2, USR1 "
                         "or TERM (the --signal of hpcjobs submit)") from None


def preempted(sig: str | int | None = None) -> Preempted:
    """Install a handler for the job's warning signal and return its flag.

    ``sig`` defaults to ``$HPCJOBS_SIGNAL`` (set by the hpcjobs templates and passed through by
    the launcher), else USR2. Calling it again returns the same flag; the handler is installed
    once per signal. The first call must come from the main thread (Python's rule for signal
    handlers).
    """
    signum = _signum(sig if sig is not None else (os.environ.get("HPCJOBS_SIGNAL") or DEFAULT_SIGNAL))
    flag = _installed.get(signum)
    if flag is not None:
        return flag
    flag = Preempted(signum)
    try:
        flag._previous = _signal.signal(signum, flag._handle)
    except ValueError as e:  # not the main thread
        raise RuntimeError(f"hpcjobs.preempted(): {e}; call it once from the main thread "
                           "(later calls from any thread return the same flag)") from None
    _installed[signum] = flag
    return flag
