"""Everything the doctor's checks read about this machine, through one replaceable :class:`Host`.

A file-system root for ``/sys`` (``HPCJOBS_SYSFS_ROOT=DIR`` reads ``DIR/sys/...``, as
hpcjobs.launch does), a command runner, the host name, the environment and the locked-memory
limit: the unit tests swap them for fixture trees and recorded command outputs and run the same
checks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# The command runner is the job side's, shared with the preflight step (re-exported here).
from hpcjobs.runners.cmd import CmdResult, run_command

Runner = Callable[[Sequence[str], "str | None"], CmdResult]


def sysfs_root() -> Path:
    """``/``, or ``$HPCJOBS_SYSFS_ROOT`` standing in for it: files are read at ``ROOT/sys/...``
    (the convention of hpcjobs.launch.fabric, so one fixture tree serves both)."""
    return Path(os.environ.get("HPCJOBS_SYSFS_ROOT") or "/")


@dataclass
class Host:
    """Everything a check may read about this machine (replaceable in tests)."""

    root: Path  # "/" or a fixture tree; sysfs is read at root/sys
    run: Runner
    hostname: str
    env: Mapping[str, str]
    memlock: tuple[int, int]  # soft, hard in bytes; -1 = unlimited

    @classmethod
    def real(cls) -> Host:
        import resource
        import socket

        soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        inf = resource.RLIM_INFINITY
        return cls(root=sysfs_root(), run=run_command, hostname=socket.gethostname(),
                   env=dict(os.environ),
                   memlock=(-1 if soft == inf else soft, -1 if hard == inf else hard))

    def read(self, rel: str) -> str | None:
        """The stripped text of ``/sys/<rel>`` (under the root), or None when it is not there."""
        try:
            return (self.root / "sys" / rel).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None

    def exists(self, rel: str) -> bool:
        return (self.root / "sys" / rel).exists()

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.root / "sys" / rel))
        except OSError:
            return []
