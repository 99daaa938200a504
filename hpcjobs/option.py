"""One option of a job kind, as the CLI shows it and the spec stores it.

Neutral ground: the kinds (``Kind.options``), the plan's shared options (hpcjobs/planner/options.py)
and the CLI (which turns each into a click option) all use it, and it imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    """A kind-specific option; ``name`` is the long option without dashes (``ds-config``).

    The option's ``default`` is the one source of that default: the CLI shows it, the spec is
    filled with it, and node-side runners that need it receive it from the rendered script.
    """

    name: str
    type: Any = str  # str, int, float, bool (a flag), "path" (must exist)
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] | None = None
    multiple: bool = False

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")
