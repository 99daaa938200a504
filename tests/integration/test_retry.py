"""Retries that change what they ask for, on the real sandbox with real causes (issue 13,
part 1): a job that runs out of time once and completes with the longer limit; a job whose node
is killed and that completes elsewhere (gated: it stops a node's slurmd); a job that raises an
exception is not retried. Each retry is decided by the follower job on a compute node, with no
client involved: the tests only watch (hpcjobs wait FIRSTID) and read what the jobs printed.

The time-limit test costs about 2.5-3 minutes: Slurm's smallest limit is a minute, and the
controller checks limits every ~30 s, so the program needs more than 90 s to be sure to run
into a 1-minute limit and less than 120 s to fit the doubled one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.conftest import hpcjobs, scontrol_job
from tests.integration.test_faults import _kill, _restart, _wait_for, needs_lifecycle

PROG = """\
import os, socket, subprocess, sys, time
jid = os.environ["SLURM_JOB_ID"]
out = subprocess.run(["scontrol", "show", "job", "-o", jid], capture_output=True, text=True).stdout
limit = next((f.split("=", 1)[1] for f in out.split() if f.startswith("TimeLimit=")), "?")
exc = next((f.split("=", 1)[1] for f in out.split() if f.startswith("ExcNodeList=")), "?")
print(f"job {jid} on {socket.gethostname()}: TimeLimit={limit} ExcNodeList={exc}", flush=True)
if sys.argv[1] == "raise":
    raise ValueError("column 'price' missing from input.csv")
need = float(sys.argv[1])
t0 = time.monotonic()
while time.monotonic() - t0 < need:
    time.sleep(2)
    print(f"job {jid}: {time.monotonic() - t0:.0f} s of {need:.0f}", flush=True)
print(f"job {jid} on {socket.gethostname()}: done after {time.monotonic() - t0:.0f} s", flush=True)
"""


def _submit(runs_env, prog: Path, *args: str, program_args: list[str]) -> dict:
    r = hpcjobs("submit", "mpi", "--nodes", "1", "--no-monitor", "--json", *args, "--",
                sys.executable, str(prog), *program_args, env=runs_env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _chain(run_dir: str) -> list[dict]:
    try:
        return json.loads((Path(run_dir) / "attempts.json").read_text())["attempts"]
    except (OSError, ValueError, KeyError):
        return []


def _output(run_dir: str, job_id: str) -> str:
    p = Path(run_dir) / f"slurm-{job_id}.out"
    return p.read_text(errors="replace") if p.exists() else ""


def test_an_exception_is_not_retried_and_the_record_says_why(sandbox, runs_env, shared_tmp):
    prog = shared_tmp / "prog.py"
    prog.write_text(PROG)
    sub = _submit(runs_env, prog, "--retry", "3", program_args=["raise"])
    first, follower = sub["job_id"], sub["retry_follower"]
    w = hpcjobs("wait", first, env=runs_env, timeout=120)
    assert w.returncode == 1, w.stdout + w.stderr
    assert "retrying the same request would not help" in w.stderr, w.stderr
    (a,) = _chain(sub["run_dir"])  # one attempt only
    assert a["decision"] == "stop" and a["ended"]["state"] == "FAILED" and a["next"] is None
    assert "ValueError: column 'price' missing" in _output(sub["run_dir"], first)
    assert "ValueError" in a["cause_text"] + a["evidence"]
    follow = (Path(sub["run_dir"]) / f"retry-{follower}.out").read_text()
    assert "no retry" in follow  # the follower job said so itself
    st = json.loads(hpcjobs("status", first, "--json", env=runs_env).stdout)[0]
    assert st["state"] == "FAILED" and len(st["attempts"]) == 1


def test_a_timeout_comes_back_with_a_longer_limit_and_completes(sandbox, runs_env, shared_tmp):
    prog = shared_tmp / "prog.py"
    prog.write_text(PROG)
    t0 = time.monotonic()
    sub = _submit(runs_env, prog, "--time", "1", "--retry", "2", program_args=["95"])
    first = sub["job_id"]
    w = hpcjobs("wait", first, env=runs_env, timeout=400)
    took = time.monotonic() - t0
    assert w.returncode == 0, w.stdout + w.stderr
    one, two = _chain(sub["run_dir"])
    assert one["ended"]["state"] == "TIMEOUT" and one["cause"] == "time_limit"
    assert one["decision"] == "retry" and one["changed"] == {"time": ["00:01:00", "00:02:00"]}
    assert one["next"] == two["job_id"] and two["attempt"] == 2
    first_out = _output(sub["run_dir"], first)
    assert "TimeLimit=00:01:00" in first_out and "DUE TO TIME LIMIT" in first_out
    assert "done after" not in first_out
    second = _output(two["run_dir"], two["job_id"])
    assert "TimeLimit=00:02:00" in second, second  # what the job itself saw
    assert re.search(r"done after 9[5-9] s", second), second
    st = json.loads(hpcjobs("status", first, "--json", env=runs_env).stdout)[0]
    assert st["state"] == "COMPLETED" and [a["job_id"] for a in st["attempts"]] == \
        [first, two["job_id"]]
    table = hpcjobs("status", first, env=runs_env).stdout
    assert "--time 00:01:00 -> 00:02:00" in table and "TIMEOUT" in table
    print(f"time limit: 2 attempts, {took:.0f} s from submit to the end")


@needs_lifecycle
def test_a_killed_node_is_excluded_and_the_job_completes_elsewhere(sandbox, runs_env, shared_tmp):
    from hpcjobs.sandbox import netns

    sandbox.need(2)
    prog = shared_tmp / "prog.py"
    prog.write_text(PROG)
    t0 = time.monotonic()
    sub = _submit(runs_env, prog, "--retry", "1", program_args=["30"])
    first = sub["job_id"]
    _wait_for(lambda: "on node" in _output(sub["run_dir"], first), 60, "the job to start")
    victim = scontrol_job(first)["NodeList"]
    assert victim in sandbox.nodes
    restored = False
    try:
        _kill(f"slurmd-{victim}")
        # Slurm declares the node dead (SlurmdTimeout=10 s), the job NODE_FAIL; the follower
        # runs elsewhere and resubmits without the node. Keep it down until that happened.
        _wait_for(lambda: (c := _chain(sub["run_dir"])) and len(c) == 2 and c, 120,
                          "the retry to be submitted")
        _restart(f"slurmd-{victim}", netns.node_ns(int(victim.removeprefix("node"))), victim,
                 ["slurmd", "-D", "-N", victim])
        restored = True
        w = hpcjobs("wait", first, env=runs_env, timeout=180)
        took = time.monotonic() - t0
        assert w.returncode == 0, w.stdout + w.stderr
        one, two = _chain(sub["run_dir"])
        assert one["ended"]["state"] == "NODE_FAIL" and one["cause"] == "node_fail"
        assert one["changed"] == {"exclude": [None, victim]}, one
        second = _output(two["run_dir"], two["job_id"])
        assert f"ExcNodeList={victim}" in second and f"on {victim}" not in second, second
        assert "done after" in second
        print(f"node failure: 2 attempts, {took:.0f} s from submit to the end")
    finally:
        if not restored:
            _restart(f"slurmd-{victim}", netns.node_ns(int(victim.removeprefix("node"))), victim,
                     ["slurmd", "-D", "-N", victim])
        for a in _chain(sub["run_dir"]):
            subprocess.run(["scancel", a["job_id"], *(filter(None, [a.get("follower")]))],
                           capture_output=True)
