"""Slurm faults, for real: a controller that cannot be reached, a controller that answers late,
a job that fails, a node whose slurmd dies in the middle of a 3-node job, bad specs against the
live queue.

The sandbox is shared while tests run, so the default tests never stop its daemons:

* "controller unreachable" uses a copy of the sandbox's slurm.conf whose SlurmctldHost points
  at a port where nothing listens (SLURM_CONF=copy): sbatch, squeue and scontrol fail with
  Slurm's own "Unable to contact slurm controller (connect failure)".
* "controller answers late" puts a TCP relay in front of the real slurmctld that holds the
  first connections unanswered: the clients fail with Slurm's own "Socket timed out on
  send/recv operation" (MessageTimeout) until the relay starts forwarding.

Stopping the real slurmctld and killing a node's slurmd disturb everyone's jobs: those tests run
in CI (CI=true, where the test run is alone) or with HPCJOBS_SANDBOX_LIFECYCLE=1, like
test_sandbox.py's lifecycle test, and restore the daemons with the sandbox's own code.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hpcjobs import slurm
from hpcjobs.errors import SlurmError
from tests.integration.conftest import hpcjobs

LIFECYCLE = os.environ.get("CI") == "true" or os.environ.get("HPCJOBS_SANDBOX_LIFECYCLE") == "1"
needs_lifecycle = pytest.mark.skipif(
    not LIFECYCLE, reason="stops daemons of the shared sandbox: runs in CI (CI=true) or with "
                          "HPCJOBS_SANDBOX_LIFECYCLE=1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conf_copy(tmp_path: Path, host: str, port: int, message_timeout: int | None = None) -> Path:
    """The sandbox's slurm.conf with the controller moved to host:port."""
    from hpcjobs.sandbox.layout import layout

    src = layout().conf
    text = src.read_text()
    text = re.sub(r"^SlurmctldHost=.*$", f"SlurmctldHost=slurmctl({host})", text, flags=re.M)
    text = re.sub(r"^SlurmctldPort=.*$", f"SlurmctldPort={port}", text, flags=re.M)
    if message_timeout is not None:
        # The client retries a refused connection for about MessageTimeout: keep the test fast.
        text = re.sub(r"^MessageTimeout=.*$", f"MessageTimeout={message_timeout}", text, flags=re.M)
        text = re.sub(r"^TCPTimeout=.*$", "TCPTimeout=1", text, flags=re.M)
    d = tmp_path / f"conf-{port}"
    d.mkdir()
    for other in src.parent.glob("*.conf"):
        if other.name != "slurm.conf":
            (d / other.name).write_text(other.read_text())
    (d / "slurm.conf").write_text(text)
    return d / "slurm.conf"


# --- controller unreachable ---------------------------------------------------------------

def test_controller_unreachable_submit_status_wait_exit_3(sandbox, runs_env, tmp_path):
    dead = conf_copy(tmp_path, "127.0.0.1", free_port(), message_timeout=1)
    env = {**runs_env, "SLURM_CONF": str(dead)}
    # A real job first (with the live controller), so that status/wait/why have a record.
    ok = hpcjobs("submit", "mpi", "--nodes", "1", "--wait", "--json", "--", "sh", "-c", "exit 3",
                 env=runs_env)
    assert ok.returncode == 1, ok.stderr
    job_id = json.loads(ok.stdout.splitlines()[0])["job_id"]

    sub = hpcjobs("submit", "mpi", "--nodes", "1", "--", "true", env=env)
    assert sub.returncode == 3, sub.stdout + sub.stderr
    # Slurm's own words, from the first command that needed the controller: the check of the
    # request against the live partition (scontrol) or, past it, sbatch.
    assert sub.stderr.startswith("hpcjobs: error: ") and \
        "Unable to contact slurm controller" in sub.stderr, sub.stderr
    assert sub.stderr.count("\n") == 1 and "Traceback" not in sub.stderr
    runs = Path(runs_env["HPCJOBS_RUNS_DIR"])
    assert len([p for p in runs.iterdir() if not p.name.startswith(("by-id", "."))]) == 1, \
        "the refused submission left a run record"

    for args in (["status", job_id], ["wait", job_id], ["status", "--queue"], ["cancel", job_id]):
        r = hpcjobs(*args, env=env)
        assert r.returncode == 3, (args, r.stdout + r.stderr)
        assert "Unable to contact slurm controller" in r.stderr and "Traceback" not in r.stderr
        assert r.stderr.count("\n") == 1, r.stderr

    # `why` still explains the job: the run record's final state and its output.
    why = hpcjobs("why", job_id, "--json", env=env)
    assert why.returncode == 0, why.stderr
    v = json.loads(why.stdout)
    assert v["state"] == "FAILED" and v["cause"] == "exit_code"
    assert any("Slurm did not answer" in n for n in v["notes"])


# --- a controller that answers late: retried with bounded backoff ---------------------------

class HoldingRelay:
    """TCP relay to the real slurmctld that holds (accepts, never answers) every connection
    made in its first ``hold_s`` seconds, then forwards."""

    def __init__(self, target: tuple[str, int], hold_s: float):
        self.target, self.hold_s = target, hold_s
        self.held: list[socket.socket] = []
        self.forwarded = 0
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.t0 = time.monotonic()
        self._stop = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _pipe(self, a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _loop(self):
        while not self._stop:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            if time.monotonic() - self.t0 < self.hold_s:
                self.held.append(c)
                continue
            self.forwarded += 1
            u = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c), daemon=True).start()

    def close(self):
        self._stop = True
        self.srv.close()
        for c in self.held:
            c.close()


@pytest.fixture
def late_controller(sandbox, tmp_path, monkeypatch):
    from hpcjobs.cluster import load_cluster

    c = load_cluster()
    relay = HoldingRelay((c.slurm.controller_address, 6817), hold_s=2.0)
    monkeypatch.setenv("SLURM_CONF", str(conf_copy(tmp_path, "127.0.0.1", relay.port)))
    yield relay
    relay.close()


def test_socket_timeout_is_retried_until_the_controller_answers(late_controller):
    """squeue's first try is held unanswered and times out ("Socket timed out on send/recv
    operation", after MessageTimeout=5 s; squeue itself does not retry, see the next test);
    hpcjobs waits 0.5 s and tries again, and the relay forwards that one to slurmctld."""
    jobs = slurm.squeue(user="root")
    assert isinstance(jobs, list)
    assert len(late_controller.held) >= 1 and late_controller.forwarded >= 1


def test_without_retries_the_same_condition_is_slurms_own_message(late_controller):
    with pytest.raises(SlurmError) as e:
        slurm.run(["squeue", "--noheader"], retries=0)
    assert "Socket timed out on send/recv operation" in str(e.value)


def test_retries_are_bounded(tmp_path):
    """A command that keeps failing with a transient message is tried 1 + retries times, with
    backoff 0.5, 1, 2 s, then its own last message comes back (a real executable, not a mock)."""
    count = tmp_path / "count"
    cmd = tmp_path / "flaky"
    cmd.write_text(f"#!/bin/sh\necho x >> {count}\n"
                   f"if [ $(wc -l < {count}) -le \"$1\" ]; then\n"
                   "  echo 'squeue: error: Socket timed out on send/recv operation' >&2; exit 1\n"
                   "fi\necho answered\n")
    cmd.chmod(0o755)
    # Fails twice, then answers: retried.
    assert slurm.run([str(cmd), "2"]).stdout == "answered\n"
    assert count.read_text().count("x") == 3
    # Fails forever: 4 tries in all, then Slurm's message.
    count.unlink()
    with pytest.raises(SlurmError, match="Socket timed out"):
        slurm.run([str(cmd), "99"])
    assert count.read_text().count("x") == 4
    # A non-transient error is not retried.
    bad = tmp_path / "bad"
    bad.write_text(f"#!/bin/sh\necho x >> {count}.bad\necho 'sbatch: error: Invalid partition "
                   "name specified' >&2\nexit 1\n")
    bad.chmod(0o755)
    with pytest.raises(SlurmError, match="Invalid partition"):
        slurm.run([str(bad)])
    assert Path(f"{count}.bad").read_text().count("x") == 1


# --- a job that fails -------------------------------------------------------------------------

def test_wait_and_status_report_state_and_exit_code(sandbox, runs_env):
    """(`submit --wait` exiting 1 is tests/integration/test_mpi.py.) `wait` on a job submitted
    without it, and `status --json`, give the state and the program's exit code."""
    sub = hpcjobs("submit", "mpi", "--nodes", "1", "--json", "--", "sh", "-c", "sleep 1; exit 7",
                  env=runs_env)
    assert sub.returncode == 0, sub.stderr
    job_id = json.loads(sub.stdout)["job_id"]
    w = hpcjobs("wait", job_id, env=runs_env)
    assert w.returncode == 1
    assert f"job {job_id} ended FAILED, exit code 7" in w.stderr + w.stdout
    st = json.loads(hpcjobs("status", job_id, "--json", env=runs_env).stdout)
    assert st[0]["state"] == "FAILED" and st[0]["exit_code"] == 7


# --- bad specs never reach the live queue --------------------------------------------------

def test_bad_specs_leave_the_live_queue_untouched(sandbox, runs_env):
    from tests.unit.test_bad_specs import CASES

    mark = f"badspec-{os.getpid()}"
    tried = 0
    for args, _ in CASES:
        if "{tmp}" in " ".join(args) or "--job-name" in args or "submit" not in args:
            continue
        if "node1" in args:  # bad for the built-in profile (pve1..3), a real node of the sandbox
            continue
        i = args.index("submit") + 2
        r = hpcjobs(*args[:i], "--job-name", mark, *args[i:], env=runs_env)
        if r.returncode == 2 and "is not registered" in r.stderr:
            continue
        assert r.returncode == 2, (args, r.stderr)
        tried += 1
    assert tried >= 30
    q = subprocess.run(["squeue", "-h", "-n", mark, "-o", "%i"], capture_output=True, text=True)
    assert q.returncode == 0 and q.stdout.strip() == ""
    runs = Path(runs_env["HPCJOBS_RUNS_DIR"])
    assert not runs.exists() or not any(runs.rglob("*"))


# --- gated: the real controller stopped and started -----------------------------------------

def _daemon(name: str):
    from hpcjobs.sandbox import daemons
    from hpcjobs.sandbox.layout import layout

    recorded, _ = daemons.load(layout())
    return next(d for d in recorded if d.name == name)


def _restart(name: str, ns: str, hostname: str, argv: list[str]) -> None:
    """Start a sandbox daemon again the way `hpcjobs sandbox up` does, and record it."""
    from hpcjobs.sandbox import daemons, netns
    from hpcjobs.sandbox.layout import layout
    from hpcjobs.sandbox.lifecycle import client_env

    lay = layout()
    recorded, extra = daemons.load(lay)
    d = daemons.start_in_namespace(name, netns.ns_path(ns), hostname, lay.hosts, argv,
                                   lay.log / f"{name}.out", client_env(lay))
    daemons.save(lay, [x for x in recorded if x.name != name] + [d], extra)


def _kill(name: str) -> None:
    d = _daemon(name)
    os.kill(d.pid, 9)
    deadline = time.monotonic() + 10
    while d.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not d.alive()


def _wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@needs_lifecycle
def test_real_slurmctld_stopped_then_started(sandbox, runs_env):
    from hpcjobs.sandbox import netns

    _kill("slurmctld")
    try:
        sub = hpcjobs("submit", "mpi", "--nodes", "1", "--", "true", env=runs_env)
        assert sub.returncode == 3, sub.stderr
        assert "Unable to contact slurm controller" in sub.stderr and "Traceback" not in sub.stderr
        st = hpcjobs("status", "--queue", env=runs_env)
        assert st.returncode == 3 and "Unable to contact slurm controller" in st.stderr
    finally:
        _restart("slurmctld", netns.CONTROLLER_NS, "slurmctl", ["slurmctld", "-D"])
    _wait_for(lambda: subprocess.run(["scontrol", "ping"], capture_output=True,
                                     text=True).stdout.count(" is UP"), 30, "slurmctld")
    ok = hpcjobs("submit", "mpi", "--nodes", "1", "--wait", "--", "true", env=runs_env)
    assert ok.returncode == 0, ok.stderr


# --- gated: a node's slurmd killed during a 3-node job --------------------------------------

NODE_PROG = """\
import os, socket, sys, time
restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
print(f"run {restart} on {socket.gethostname()} task {os.environ['SLURM_PROCID']}", flush=True)
if restart == 0:
    time.sleep(float(sys.argv[1]))  # the first run waits to be hit
print(f"done {restart} on {socket.gethostname()}", flush=True)
"""


def _node_state(node: str) -> str:
    return subprocess.run(["sinfo", "-h", "-n", node, "-o", "%T"], capture_output=True,
                          text=True).stdout.strip()


def _marked(mark: str) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        try:
            if mark.encode() in (p / "cmdline").read_bytes() and \
                    (p / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(p.name))
        except (OSError, IndexError):
            continue
    return found


@needs_lifecycle
@pytest.mark.parametrize("requeue", [False, True], ids=["no-requeue", "requeue"])
def test_node_failure_during_a_three_node_job(sandbox, runs_env, shared_tmp, requeue):
    from hpcjobs.sandbox import netns

    sandbox.need(3)
    victim = sandbox.nodes[-1]
    prog = shared_tmp / "node_prog.py"
    prog.write_text(NODE_PROG)
    sleep_s = f"{4000 + os.getpid() % 1000}.{int(requeue)}"  # marks this job's tasks in /proc
    sub = hpcjobs("submit", "mpi", "--nodes", "3", "--json",
                  "--requeue" if requeue else "--no-requeue", "--", sys.executable, str(prog),
                  sleep_s, env=runs_env)
    assert sub.returncode == 0, sub.stderr
    job_id = json.loads(sub.stdout)["job_id"]
    out_file = Path(json.loads(sub.stdout)["run_dir"]) / f"slurm-{job_id}.out"
    restored = False
    try:
        _wait_for(lambda: out_file.exists() and out_file.read_text().count("run 0 on") == 3, 60,
                  "three tasks running")
        _kill(f"slurmd-{victim}")
        # Slurm notices (SlurmdTimeout=10 s): NODE_FAIL, or a requeue with --requeue.
        def ended_or_requeued():
            st = json.loads(hpcjobs("status", job_id, "--json", env=runs_env).stdout)[0]
            return st if (st["state"] == "NODE_FAIL" or st["restarts"] >= 1) else None
        st = _wait_for(ended_or_requeued, 90, "Slurm to notice the dead node")
        if not requeue:
            assert st["state"] == "NODE_FAIL"
        else:
            assert st["restarts"] >= 1 and st["state"] != "NODE_FAIL", st  # PENDING soon
        assert "DOWN" in _node_state(victim).upper() or _node_state(victim).endswith("*")
        _restart(f"slurmd-{victim}", netns.node_ns(int(victim.removeprefix("node"))), victim,
                 ["slurmd", "-D", "-N", victim])
        restored = True
        _wait_for(lambda: _node_state(victim) in ("idle", "mixed", "allocated"), 60,
                  f"{victim} back")
        if requeue:
            # Slurm holds a requeued job ~2 minutes (BeginTime); release it, but not within the
            # second the returned node let go of the old run: its new step would be refused
            # with "Job credential revoked" (seen here; tests/fixtures/triage/).
            time.sleep(3)
            subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"],
                           capture_output=True)
        w = hpcjobs("wait", job_id, env=runs_env, timeout=240)
        out = out_file.read_text()
        if requeue:
            assert w.returncode == 0, w.stdout + w.stderr + out
            assert out.count("run 1 on") == 3 and out.count("done 1 on") == 3, out
        else:
            assert w.returncode == 1 and "NODE_FAIL" in w.stdout + w.stderr
        # Nothing hangs: no task of the first run is left on any node, the dead node's included.
        _wait_for(lambda: not _marked(sleep_s), 60, "the first run's tasks to be gone")
        why = json.loads(hpcjobs("why", job_id, "--json", env=runs_env).stdout)
        keys = [f["key"] for f in why["findings"]]
        if requeue:
            assert keys[0] == "completed" and "requeued" in keys and "node_fail" in keys, why
        else:
            assert keys[0] == "node_fail", why
    finally:
        if not restored:
            _restart(f"slurmd-{victim}", netns.node_ns(int(victim.removeprefix("node"))), victim,
                     ["slurmd", "-D", "-N", victim])
        subprocess.run(["scancel", job_id], capture_output=True)
