"""The import graph of hpcjobs: arrows point down the layers and never form a cycle.

Read from the source (every ``import`` of an hpcjobs module, at module level or inside a
function; imports under ``if TYPE_CHECKING:`` are annotations only and do not count). The layers
are docs/architecture.md's; a module may import its own layer (without a cycle) and those below.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Lowest first. A module not matched here fails the test: place a new module in a layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("hpcjobs", "hpcjobs.errors", "hpcjobs.outcome", "hpcjobs.option", "hpcjobs.lazy",
              "hpcjobs.data")),
    ("records and facts", ("hpcjobs.cluster", "hpcjobs.models", "hpcjobs.runs", "hpcjobs.slurm",
                           "hpcjobs.shutdown", "hpcjobs.preempt", "hpcjobs.progress")),
    ("job side", ("hpcjobs.launch", "hpcjobs.runners", "hpcjobs.bench")),
    ("the request", ("hpcjobs.spec", "hpcjobs.sbatch_options", "hpcjobs.slurmconf")),
    ("planner", ("hpcjobs.planner",)),
    ("kinds", ("hpcjobs.kinds",)),
    ("prepare and render", ("hpcjobs.prepared", "hpcjobs.rendering")),
    ("services", ("hpcjobs.watch", "hpcjobs.doctor", "hpcjobs.sandbox", "hpcjobs.report",
                  "hpcjobs.arrays", "hpcjobs.chains")),
    ("api", ("hpcjobs.api", "hpcjobs.triage", "hpcjobs.retry")),
    ("cli", ("hpcjobs.cli", "hpcjobs.__main__")),
]
# What runs on every compute node may import only these layers (and no framework at top level).
JOB_SIDE_MAY_IMPORT = ("base", "records and facts", "job side")


@cache
def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted((ROOT / "hpcjobs").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = ast.parse(path.read_text(), str(path))
    return out


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


@cache
def imports(name: str) -> frozenset[str]:
    """The hpcjobs modules ``name`` imports (a package's own submodules from its __init__ aside)."""
    known = modules()
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for n in node.orelse:
                visit(n)
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "hpcjobs")
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module and \
                node.module.split(".")[0] == "hpcjobs":
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.add(full if full in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(modules()[name])
    is_package = (ROOT / Path(*name.split(".")) / "__init__.py").exists()
    return frozenset(m for m in out if m != name and not (is_package and m.startswith(name + ".")))


def layer_of(name: str) -> int:
    best, index = "", None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > len(best):
                best, index = p, i
    assert index is not None, f"{name} is in no layer: add it to LAYERS (and docs/architecture.md)"
    return index


@pytest.mark.parametrize("name", sorted(modules()))
def test_imports_point_down_the_layers(name):
    mine = layer_of(name)
    up = sorted(m for m in imports(name) if layer_of(m) > mine)
    assert not up, (f"{name} ({LAYERS[mine][0]}) imports {', '.join(up)} from a higher layer "
                    f"({', '.join(LAYERS[layer_of(m)][0] for m in up)})")


def test_the_job_side_imports_nothing_of_the_login_node_side():
    allowed = {i for i, (label, _) in enumerate(LAYERS) if label in JOB_SIDE_MAY_IMPORT}
    bad = {}
    for name in modules():
        if LAYERS[layer_of(name)][0] != "job side":
            continue
        wrong = sorted(m for m in imports(name) if layer_of(m) not in allowed)
        if wrong:
            bad[name] = wrong
    assert not bad, f"node-side modules import login-node modules: {bad}"


def test_no_import_cycle():
    graph = {name: sorted(imports(name)) for name in modules()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in graph.get(n, ()):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if m in graph and not state.get(m):
                walk(m)
        stack.pop()
        state[n] = 2

    for name in graph:
        if not state.get(name):
            walk(name)


def test_only_the_cli_imports_click_and_only_rendering_imports_jinja2():
    for name, tree in modules().items():
        used = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for a in node.names}
        used |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and not node.level}
        if "click" in used:
            assert name.startswith("hpcjobs.cli"), f"{name} imports click"
        if "jinja2" in used:
            assert name == "hpcjobs.rendering", f"{name} imports jinja2"
