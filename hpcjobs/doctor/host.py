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


@dataclass
class CmdResult:
    rc: int
    out: str = ""
    err: str = ""

    @property
    def text(self) -> str:
        return (self.out + self.err).strip()


Runner = Callable[[Sequence[str], "str | None"], CmdResult]


def run_command(argv: Sequence[str], input: str | None = None, timeout: float = 10.0) -> CmdResult:
    """Run one command; a missing program is rc 127 and a hang rc 124, never an exception."""
    import subprocess

    try:
        p = subprocess.run(list(argv), check=False, capture_output=True, text=True, input=input,
                           timeout=timeout)
    except FileNotFoundError:
        return CmdResult(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CmdResult(124, "", f"{argv[0]}: no answer within {timeout:g} s")
    except OSError as e:
        return CmdResult(126, "", f"{argv[0]}: {e.strerror}")
    return CmdResult(p.returncode, p.stdout, p.stderr)


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
