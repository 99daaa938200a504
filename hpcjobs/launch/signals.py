"""The job's warning signal: how the program starts with it, decided by who handles it.

The batch templates ask Slurm for a warning signal before the time limit (``HPCJOBS_SIGNAL``,
default USR2), trap it in the batch shell and forward it to every task of the running step.
``HPCJOBS_SIGNAL_HANDLER`` says who acts on it:

- ``hpcjobs`` (the default): the program starts with the signal *ignored* (the disposition
  survives exec), so a program that never asked for it is not killed by it minutes before its
  time is up; ``hpcjobs.preempted()``, or any handler the program installs, replaces the ignore.
  After the step ends the batch script requeues the job (``--requeue``).
- ``program``: the program starts with the signal at its *default* disposition, because its
  framework installs its own handler only then: PyTorch Lightning's SLURM auto-requeue checks
  ``signal.getsignal(sig) in (None, SIG_DFL)`` before it installs the handler that saves
  ``hpc_ckpt_N.ckpt`` and runs ``scontrol requeue`` itself. The batch script then forwards the
  signal but does not requeue a second time.

Only the C module ``_signal`` is used: ``import signal`` pulls in enum, functools and collections
(~5 ms by ``-X importtime``) on every task of every templated job.
"""

import _signal

from hpcjobs.errors import BadInput

HANDLERS = ("hpcjobs", "program")
DEFAULT_HANDLER = "hpcjobs"


def warning_signal(env: dict) -> tuple[int, str, str] | None:
    """(signal number, ``hpcjobs`` or ``program``, why) from HPCJOBS_SIGNAL and
    HPCJOBS_SIGNAL_HANDLER; None when there is no warning signal (a plain srun)."""
    name = env.get("HPCJOBS_SIGNAL", "")
    handler = env.get("HPCJOBS_SIGNAL_HANDLER", "") or DEFAULT_HANDLER
    if handler not in HANDLERS:
        raise BadInput("HPCJOBS_SIGNAL_HANDLER", f"is {handler!r}",
                       "use hpcjobs (hpcjobs.preempted() and the batch script's requeue) or program "
                       "(the program's own handler, e.g. Lightning's auto-requeue)")
    if not name:
        return None
    short = name.upper().removeprefix("SIG")
    num = getattr(_signal, "SIG" + short, None) if short.isalnum() else None
    if not isinstance(num, int) or not 0 < num < _signal.NSIG or num in (_signal.SIGKILL, _signal.SIGSTOP):
        raise BadInput("HPCJOBS_SIGNAL", f"is {name!r}, not a signal a program can handle",
                       "use e.g. USR1 or USR2")
    if handler == "program":
        why = (f"SIG{short} left at its default disposition (HPCJOBS_SIGNAL_HANDLER=program): the "
               "program installs its own handler (Lightning's SLURM auto-requeue does so only at the "
               "default), checkpoints and requeues the job itself; the batch script does not requeue")
    else:
        why = (f"SIG{short} ignored when the program starts (HPCJOBS_SIGNAL_HANDLER=hpcjobs): a program "
               "that does not ask for the warning is not killed by it; hpcjobs.preempted() or any "
               "handler it installs replaces the ignore; the batch script requeues after the step")
    return num, handler, why


def apply(warning: tuple[int, str, str] | None) -> None:
    """Set the disposition the program starts with (kept across exec: ignored or default)."""
    if warning is not None:
        num, handler, _ = warning
        _signal.signal(num, _signal.SIG_DFL if handler == "program" else _signal.SIG_IGN)
