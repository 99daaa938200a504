"""The preflight on the real sandbox, with a node broken for real in its own namespace.

- ``fail``: mpi4py hidden on node2 (an empty directory bind-mounted over its package, inside
  node2's slurmd mount namespace only): the job ends before the program with exit 78, its
  output and record name node2, the check and the fix, and `hpcjobs why` says so.
- ``exclude``: node2's temporary directory full (a 64 KiB tmpfs over the job's TMPDIR, filled,
  in node2's namespace only): the job requeues itself with node2 in its ExcNodeList and runs its
  program to completion on node1 and node3 on the second try; the history says which node,
  which check and when.

Every fault is undone in ``finally`` (umount inside the namespace), even when the test fails.
Each test takes a short window of node2 (a few seconds for the first, about a minute for the
second); other jobs on node2 meanwhile see only what this test mounted over its own paths
(mpi4py for the first).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import hpcjobs, scontrol_job
# Waits for the end, releasing Slurm's requeue delay a few seconds after the requeue.
from tests.integration.test_requeue import follow_to_the_end


def slurmd_pid(node: str) -> int:
    from hpcjobs.sandbox.layout import layout

    daemons = json.loads(layout().daemons.read_text())["daemons"]
    return next(d["pid"] for d in daemons if d["name"] == f"slurmd-{node}")


def in_ns(pid: int, *cmd: str) -> subprocess.CompletedProcess:
    """A command inside a slurmd's mount namespace (what that node's jobs see)."""
    return subprocess.run(["nsenter", "-t", str(pid), "-m", *cmd], capture_output=True, text=True)


def wait_idle(nodes: int, timeout: float = 120) -> None:
    """Every node free: the exclude test needs all three in its first try, and a fault should
    last only while the test's job runs. Skip rather than guess."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["sinfo", "-h", "-o", "%t %D"], capture_output=True, text=True).stdout
        # idle, not mix: a job without --mem gets a node's whole memory, so a node that runs
        # anything else cannot take it (seen: -N 2-3 got two nodes while a third was "mix").
        idle = sum(int(n) for s, n in (ln.split() for ln in out.splitlines()) if s == "idle")
        if idle >= nodes:
            return
        time.sleep(1)
    pytest.skip(f"the sandbox's {nodes} nodes were not free within {timeout:.0f} s")


def test_fail_names_the_node_the_check_and_the_fix(sandbox, runs_env):
    sandbox.need(3)
    pytest.importorskip("mpi4py")
    import mpi4py

    pkg = os.path.dirname(mpi4py.__file__)
    empty = Path(runs_env["HPCJOBS_RUNS_DIR"]).parent / "empty"
    empty.mkdir()
    wait_idle(3)  # the mount lasts only while this job runs, not while it queues
    pid = slurmd_pid("node2")
    r = in_ns(pid, "mount", "--bind", str(empty), pkg)
    assert r.returncode == 0, r.stderr
    try:
        sub = hpcjobs("submit", "mpi", "--nodes", "3", "--preflight", "--wait", "--json", "--",
                      "python3", "examples/mpi_allreduce.py", env=runs_env, timeout=120)
    finally:
        r = in_ns(pid, "umount", pkg)
        assert r.returncode == 0, f"could not undo the mount over {pkg} on node2: {r.stderr}"
    assert sub.returncode == 1, sub.stdout + sub.stderr
    job_id = json.loads(sub.stdout.splitlines()[0])["job_id"]
    f = scontrol_job(job_id)
    assert f["JobState"] == "FAILED" and f["ExitCode"] == "78:0", f
    out = Path(f["StdOut"].replace("%j", job_id)).read_text(errors="replace")
    assert re.search(r"^hpcjobs: preflight: 3 node\(s\) checked .*node2 FAIL", out, re.M), out
    assert "hpcjobs: preflight: node2 failed import: import mpi4py.MPI: ImportError: mpi4py is " \
           "an empty namespace package" in out
    assert "allreduce sum" not in out  # the program never started

    why = hpcjobs("why", job_id, "--json", env=runs_env)
    v = json.loads(why.stdout)
    assert v["cause"] == "preflight", v
    top = v["findings"][0]
    assert top["cause"].startswith("node2 failed the preflight check 'import'"), top
    assert "install mpi4py" in top["fix"]
    run = Path(json.loads(sub.stdout.splitlines()[0])["run_dir"])
    hist = json.loads((run / "meta.json").read_text())["preflight"]
    assert [(b["node"], b["check"]) for b in hist[-1]["bad"]] == [("node2", "import")]
    assert hist[-1]["action"] == "failed"


def test_exclude_requeues_without_the_bad_node_and_runs_on_the_rest(sandbox, shared_tmp):
    sandbox.need(3)
    pytest.importorskip("torch")
    tmpdir = shared_tmp / "tmp"
    tmpdir.mkdir()
    os.chmod(tmpdir, 0o1777)
    script = hpcjobs("render", "train", "--nodes", "3", "--preflight", "--on-bad-node", "exclude",
                     "--bad-node-retries", "1", "--env", f"TMPDIR={tmpdir}", "--",
                     str(ROOT / "examples" / "train_ddp.py"), "--epochs", "1",
                     "--steps-per-epoch", "5")
    assert script.returncode == 0, script.stderr
    (shared_tmp / "job.sbatch").write_text(script.stdout)
    wait_idle(3)
    pid = slurmd_pid("node2")
    r = in_ns(pid, "mount", "-t", "tmpfs", "-o", "size=64k", "hpcjobs-test-full", str(tmpdir))
    assert r.returncode == 0, r.stderr
    try:
        in_ns(pid, "dd", "if=/dev/zero", f"of={tmpdir}/fill", "bs=4k", "count=64")  # ENOSPC
        # -N 2-3: the first try gets all three nodes, the second the two that are left.
        sub = subprocess.run(["sbatch", "--parsable", "-N", "2-3", "--output",
                              str(shared_tmp / "slurm-%j.out"), "job.sbatch"],
                             capture_output=True, text=True, cwd=shared_tmp)
        assert sub.returncode == 0, sub.stderr
        job_id = sub.stdout.strip().split(";")[0]
        f = follow_to_the_end(job_id, timeout=240)  # releases the requeue delay after 3 s
    finally:
        r = in_ns(pid, "umount", str(tmpdir))
        assert r.returncode == 0, f"could not undo the full tmpfs on node2: {r.stderr}"
    out = (shared_tmp / f"slurm-{job_id}.out").read_text(errors="replace")
    assert f["JobState"] == "COMPLETED" and f["ExitCode"] == "0:0", (f, out)
    assert f["Restarts"] == "1" and f["ExcNodeList"] == "node2", f
    assert "hpcjobs: preflight: node2 failed tmp-space" in out and "No space left" in out, \
        f"node2 was not in the first try (another job took a node after wait_idle?):\n{out}"
    assert "hpcjobs: preflight: requeued without node2" in out, out
    # The second try: the preflight passed on node1 and node3, and the program ran there only.
    second = out.split("hpcjobs: preflight: requeued without node2", 1)[1]
    assert re.search(r"^hpcjobs: preflight: 2 node\(s\) checked .*node1 ok, node3 ok", second, re.M)
    ranks = re.findall(r"^rank (\d) of (\d) local_rank \d on (\S+)", second, re.M)
    assert sorted(h for _, _, h in ranks) == ["node1", "node3"] and {w for _, w, _ in ranks} == {"2"}
    assert "training done: 1 epochs, 5 steps" in second
    hist = json.loads((shared_tmp / f"hpcjobs-preflight-{job_id}" / "preflight.json").read_text())
    assert [h["attempt"] for h in hist] == [0, 1]
    assert [(b["node"], b["check"]) for b in hist[0]["bad"]] == [("node2", "tmp-space")]
    assert hist[0]["action"] == "requeued without node2" and hist[0]["time"]
    assert hist[1]["nodes"] == ["node1", "node3"] and hist[1]["action"] == "passed"
    assert sys.executable  # the job's Python is this one (rendered with --python default)
