"""A plain, non-editable `pip install .` into a fresh venv works and finds its templates.

Slow-ish (a venv and an install, ~20 s with pip's cache) but it is the only test of what a
user gets from `pip install`: package data (templates, the built-in profile) and the entry
point, run from a directory that is not the source tree.
"""

import os
import subprocess
import venv

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("pkg")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    build = base / "src"
    # Install from a copy of the tracked files: no build/ or egg-info of the checkout leaks in.
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src, dst = ROOT / rel, build / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(build)],
                       capture_output=True, text=True)
    if r.returncode != 0 and "Could not find a version" in r.stderr:
        pytest.skip("no package index reachable for click/jinja2/python-hostlist")
    assert r.returncode == 0, r.stderr
    return env_dir, base


def run(env_dir, base, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HPCJOBS_", "VIRTUAL_ENV"))}
    env["HPCJOBS_SANDBOX_STATE"] = str(base / "no-sandbox")
    env["XDG_CONFIG_HOME"] = str(base / "config")
    return subprocess.run([str(env_dir / "bin" / "hpcjobs"), *args], capture_output=True, text=True,
                          cwd=base, env=env)


def test_not_editable_and_templates_found(installed):
    env_dir, base = installed
    (base / "t.py").write_text("print(1)\n")
    r = run(env_dir, base, "render", "train", "--", "t.py")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("#!/bin/bash") and "-m hpcjobs.launch" in r.stdout
    loc = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                          "import hpcjobs.rendering as r; print(r._templates_dir())"],
                         capture_output=True, text=True, cwd=base)
    assert str(env_dir) in loc.stdout and str(ROOT) not in loc.stdout, loc.stdout


def test_builtin_profile_and_kinds(installed):
    env_dir, base = installed
    r = run(env_dir, base, "cluster", "show")
    assert r.returncode == 0 and "pve1" in r.stdout and "built-in" in r.stdout, r.stderr
    r = run(env_dir, base, "kinds")
    for kind in ("mpi", "train", "deepspeed", "megatron", "horovod", "vllm", "bench-allreduce"):
        assert kind in r.stdout


def test_no_framework_is_installed(installed):
    env_dir, _ = installed
    r = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                        "import importlib.util as u; print([m for m in ('torch', 'deepspeed', 'mpi4py', "
                        "'horovod', 'ray', 'vllm') if u.find_spec(m)])"], capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
