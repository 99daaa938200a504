"""The one way hpcjobs defers an import: a "module:attribute" string, resolved on first use.

Used by the package's public names (hpcjobs/__init__.py: ``python -m hpcjobs.launch`` imports
the package on every task, so the API must not load with it), the kinds registry
(hpcjobs/kinds/__init__.py: a kind's module, and what it imports, load only when that kind is
used) and the CLI's command table (hpcjobs/cli/__init__.py: ``hpcjobs --help`` must not import
the library).
"""

from __future__ import annotations

import importlib


def load(target: str):
    """The object named by ``"package.module:attribute"`` (imported now, cached by Python)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
