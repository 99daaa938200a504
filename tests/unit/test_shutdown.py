"""hpcjobs.finish: a distributed program's clean exit (hpcjobs/shutdown.py says why it exists).

Each case runs a real Python process: what matters is the exit status, that output written just
before is not lost, and that no interpreter-exit machinery (atexit, static destructors) runs.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT


def run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env={**os.environ, **env})


def test_exit_code_and_buffered_output_kept_atexit_skipped():
    r = run("""
        import atexit, sys
        import hpcjobs
        atexit.register(lambda: print("atexit ran"))
        sys.stdout.write("last words")  # no newline, no flush: finish flushes
        hpcjobs.finish(7)
    """)
    assert r.returncode == 7, r.stderr
    assert r.stdout == "last words"
    assert "atexit ran" not in r.stdout


def test_none_is_success_and_torch_is_not_imported():
    r = run("""
        import sys
        from hpcjobs.shutdown import finish
        print("torch" in sys.modules)
        finish(None)
    """)
    assert (r.returncode, r.stdout.strip()) == (0, "False"), r.stderr


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_process_group_destroyed_before_exit(tmp_path):
    r = run(f"""
        import torch.distributed as dist
        import hpcjobs
        dist.init_process_group("gloo", init_method="file://{tmp_path}/store", rank=0, world_size=1)
        t = __import__("torch").ones(3)
        dist.all_reduce(t)
        import atexit
        atexit.register(lambda: print("still initialized:", dist.is_initialized()))
        # finish destroys the group; prove it by asking from inside finish's own path
        orig = dist.destroy_process_group
        def spy(*a, **k):
            orig(*a, **k)
            print("destroyed; initialized now:", dist.is_initialized(), flush=True)
        dist.destroy_process_group = spy
        print("sum", t.sum().item())
        hpcjobs.finish(0)
    """)
    assert r.returncode == 0, r.stderr
    assert "sum 3.0" in r.stdout
    assert "destroyed; initialized now: False" in r.stdout
    assert "still initialized" not in r.stdout


def test_from_hpcjobs_import_finish_is_the_function():
    # A submodule named like the function would shadow it after `from hpcjobs import finish`
    # (the import binds the submodule on the package): the function must win.
    r = run("""
        from hpcjobs import finish
        import hpcjobs
        print(callable(finish), type(finish).__name__, hpcjobs.finish is finish)
        finish(0)
    """)
    assert (r.returncode, r.stdout.strip()) == (0, "True function True"), r.stderr


@pytest.mark.parametrize("plain", [False, True])
@pytest.mark.parametrize("code", [0, 3])
def test_exit_aborts_benchmark_counts_failed_runs(tmp_path, plain, code):
    # benchmarks/exit_aborts.py measures the abort rate (docs/reliability.md): its counting
    # and its --plain-exit wrapper, on a program with no torch in it.
    prog = tmp_path / "prog.py"
    prog.write_text(f"def main():\n    return {code}\n\n\nif __name__ == '__main__':\n"
                    "    import hpcjobs\n    hpcjobs.finish(main())\n")
    r = subprocess.run([sys.executable, "benchmarks/exit_aborts.py", "--runs", "2", "--ranks", "2",
                        *(["--plain-exit"] if plain else []), "--", str(prog)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    failed = 2 if code else 0
    assert "2 runs of 2 ranks" in r.stdout and f": {failed} failed (0 with std::terminate)" in r.stdout, r.stdout
    assert r.stdout.count(f"exit codes [{code}, {code}]") == failed, r.stdout
