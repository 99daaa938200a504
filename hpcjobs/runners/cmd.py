"""One command run for a check: a missing program or a hang is a result, never an exception.

Shared by the node checks of ``hpcjobs doctor`` (login or compute node) and the preflight step
(hpcjobs.runners.preflight, on every node of a job), so both read commands the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class CmdResult:
    rc: int
    out: str = ""
    err: str = ""

    @property
    def text(self) -> str:
        return (self.out + self.err).strip()


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


def tail(text: str, n: int = 3) -> list[str]:
    """The last ``n`` non-empty lines of a command's output, as evidence lines."""
    return [ln.strip() for ln in text.splitlines() if ln.strip()][-n:] or ["(no output)"]
