"""The public Python API is what docs/api.md says: one list (hpcjobs.__all__), each name the
documented function or class, also after the modules of the same neighbourhood were imported."""

from __future__ import annotations

import re
import subprocess
import sys

import hpcjobs
from hpcjobs import api
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "api.md").read_text()
PROGRAM_SIDE = {"preempted": "hpcjobs.preempt", "finish": "hpcjobs.shutdown",
                "heartbeat": "hpcjobs.progress"}


def documented() -> set[str]:
    """Function names of the table (`name(` at a row's start), the classes of its "Classes:"
    line and the program-side functions the page names as `hpcjobs.NAME(`."""
    table = set()
    for cell in re.findall(r"^\| (`\w+\(.*?) \|", DOC, re.M):  # a row's first cell
        table |= set(re.findall(r"`(\w+)\(", cell))
    classes = re.search(r"^Classes: (.*?)\. These names", DOC, re.M | re.S)
    assert classes, "docs/api.md lost its 'Classes: ...' sentence"
    names = table | set(re.findall(r"`(\w+)`", classes.group(1)))
    return names | set(re.findall(r"`hpcjobs\.(\w+)\(", DOC)) & set(PROGRAM_SIDE)


def test_the_public_list_is_the_documented_one():
    assert set(hpcjobs.__all__) == documented()
    assert set(api.__all__) == documented() - set(PROGRAM_SIDE)


def test_every_name_is_the_documented_object():
    import importlib

    for name in hpcjobs.__all__:
        value = getattr(hpcjobs, name)
        owner = PROGRAM_SIDE.get(name)
        expected = getattr(importlib.import_module(owner), name) if owner else getattr(api, name)
        assert value is expected, name
        assert callable(value), name


def test_names_are_functions_even_after_the_modules_they_share_a_word_with():
    # A submodule named like a public function would shadow it (import hpcjobs.render used to).
    code = ("import hpcjobs.rendering, hpcjobs.planner, hpcjobs.prepared, hpcjobs.progress, "
            "hpcjobs.shutdown, hpcjobs.preempt\n"
            "from hpcjobs import render, plan, prepare, queue, heartbeat, finish, preempted\n"
            "import types\n"
            "bad = [f.__name__ for f in (render, plan, prepare, queue, heartbeat, finish, preempted)"
            " if isinstance(f, types.ModuleType)]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout.strip()
    assert out == "[]"


def test_the_api_example_of_the_docs_names_real_functions():
    first = re.search(r"^from hpcjobs import (.+)$", DOC, re.M).group(1)
    for name in (n.strip() for n in first.split(",")):
        assert name in hpcjobs.__all__, name


def test_no_module_of_the_package_is_named_like_a_public_name():
    # `from hpcjobs import NAME` must give the function: a module hpcjobs/NAME.py would compete
    # with it (the lazy table answers first; code that meant the module gets the function).
    modules = {p.stem for p in (ROOT / "hpcjobs").glob("*.py")} | {
        p.name for p in (ROOT / "hpcjobs").iterdir() if (p / "__init__.py").exists()}
    assert not modules & set(hpcjobs.__all__), modules & set(hpcjobs.__all__)
