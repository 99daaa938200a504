"""Leave a distributed Python program without dying in C++ static destructors.

torch 2.13's gloo backend (and so DeepSpeed, Megatron and DDP over gloo) can abort at
interpreter exit, after the program's last line: a worker thread is still joinable when its
owner is destroyed, and libstdc++ calls std::terminate ("terminate called without an active
exception", SIGABRT, exit 134). Under srun one aborted task fails the step and Slurm kills the
others, so a job whose work is finished ends FAILED. Measured on this project's DeepSpeed
example: see docs/reliability.md.

``finish(code)`` takes the one path that avoids it: release the process group while the
interpreter is intact, flush, and leave with ``os._exit`` so no static destructor runs.
It imports nothing heavy: torch is used only if the program already imported it.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import NoReturn


def finish(code: int | None = 0) -> NoReturn:
    """Destroy the default process group (if any), flush stdio and ``os._exit(code)``.

    Call it as the program's last statement, after every rank's work is done (a barrier first
    if ranks must not leave early). ``code`` may be None (treated as 0, like ``sys.exit``).
    """
    dist = sys.modules.get("torch.distributed")
    if dist is not None:
        try:
            if dist.is_available() and dist.is_initialized():
                # Engines (DDP's reducer, DeepSpeed's, Megatron's groups) hold the process group
                # through reference cycles: collect them before the group goes.
                gc.collect()
                dist.destroy_process_group()
        except Exception as exc:  # a failed teardown must not hide the program's own result
            print(f"hpcjobs.finish: destroy_process_group failed: {exc}", file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can be said
            pass
    os._exit(0 if code is None else int(code))
