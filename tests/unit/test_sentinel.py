"""The hang sentinel's parts without Slurm: the heartbeat, the timeout's parsing and validation,
the progress rule, where each rank stands (from stacks), py-spy on real stopped and sleeping
processes, the flight recorder reader, `hpcjobs why`'s verdict and the rendered script."""

from __future__ import annotations

import importlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from hpcjobs.cluster import builtin, parse_profile
from hpcjobs.errors import BadInput
from hpcjobs.rendering import direct_script, materialize
from hpcjobs.runners import hangreport, sentinel, stacks
from hpcjobs.spec import JobSpec, validate
from hpcjobs.triage import explain_lines
from tests.conftest import ROOT, unchecked

# --- hpcjobs.heartbeat -------------------------------------------------------------------------


def _fresh_heartbeat(monkeypatch, **env):
    hb = importlib.import_module("hpcjobs.progress")  # the module; the package's name is the function

    for k in ("HPCJOBS_HEARTBEAT_DIR", "HPCJOBS_HEARTBEAT_INTERVAL", "RANK", "SLURM_PROCID"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(hb, "_state", None)
    return hb


def test_heartbeat_without_a_sentinel_does_nothing(monkeypatch, tmp_path):
    hb = _fresh_heartbeat(monkeypatch)
    hb.heartbeat(step=3)
    assert hb._state[0] is None


def test_heartbeat_writes_one_line_per_rank_and_is_rate_limited(monkeypatch, tmp_path):
    hb = _fresh_heartbeat(monkeypatch, HPCJOBS_HEARTBEAT_DIR=str(tmp_path), RANK="2",
                          HPCJOBS_HEARTBEAT_INTERVAL="30")
    hb.heartbeat(step=7)
    first = (tmp_path / "rank-2").read_text()
    step, calls, stamp, pid = first.split()
    assert (step, calls, int(pid)) == ("7", "1", os.getpid())
    assert abs(float(stamp) - time.time()) < 5
    for i in range(1000):
        hb.heartbeat(step=8 + i)
    assert (tmp_path / "rank-2").read_text() == first  # within the interval: no write
    assert os.listdir(tmp_path) == ["rank-2"]  # no temporary file left
    monkeypatch.setattr(hb, "_state", [str(tmp_path / "rank-2"), 0.0, 0.0, 5, False])
    hb.heartbeat(step="epoch 2")
    assert (tmp_path / "rank-2").read_text().split()[:2] == ["epoch_2", "6"]


def test_heartbeat_never_raises(monkeypatch, tmp_path, capfd):
    hb = _fresh_heartbeat(monkeypatch, HPCJOBS_HEARTBEAT_DIR=str(tmp_path / "gone"))
    hb.heartbeat(step=1)
    hb._state[2] = 0.0
    hb.heartbeat(step=2)
    err = capfd.readouterr().err
    assert err.count("hpcjobs.heartbeat: cannot write") == 1


def test_the_package_name_stays_the_function_after_the_module_is_imported(tmp_path):
    code = ("import hpcjobs.progress, hpcjobs; hpcjobs.heartbeat(step=4); "
            "from hpcjobs import heartbeat; heartbeat(step=5)")
    env = {**os.environ, "HPCJOBS_HEARTBEAT_DIR": str(tmp_path), "RANK": "1"}
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)
    assert (tmp_path / "rank-1").read_text().startswith("4 1 ")  # the second call: rate-limited


def test_heartbeat_imports_nothing_heavy(tmp_path):
    code = ("import sys, hpcjobs; hpcjobs.heartbeat(step=1); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('hpcjobs') or m in "
            "('torch', 'click', 'jinja2', 'subprocess', 'json', 'numpy'))))")
    env = {**os.environ, "HPCJOBS_HEARTBEAT_DIR": str(tmp_path), "RANK": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True).stdout.split()
    assert out == ["hpcjobs", "hpcjobs.lazy", "hpcjobs.progress"]
    assert (tmp_path / "rank-0").exists()


# --- the timeout --------------------------------------------------------------------------------

@pytest.mark.parametrize("text,seconds", [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200),
                                          ("1h30m", 5400), ("0", 0), ("off", 0), (None, 0),
                                          (600, 600), ("1.5m", 90)])
def test_durations(text, seconds):
    assert sentinel.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5s", "ten", "10x", "m", "-30", "30 m 2"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        sentinel.parse_duration(text)


def test_hang_timeout_is_validated_and_the_profile_may_set_one():
    cluster = builtin()
    assert validate(JobSpec(kind="train", hang_timeout="30m"), cluster).hang_timeout == 1800
    assert validate(JobSpec(kind="train"), cluster).hang_timeout == 0
    with pytest.raises(BadInput) as e:
        validate(JobSpec(kind="train", hang_timeout="3s"), cluster)
    assert e.value.field == "--hang-timeout" and "shorter than 10 s" in str(e.value)
    with pytest.raises(BadInput) as e:
        validate(JobSpec(kind="train", time="10", hang_timeout="15m"), cluster)
    assert "never act" in str(e.value)

    import tomllib

    from hpcjobs.cluster import builtin_text

    data = tomllib.loads(builtin_text())
    data["defaults"]["hang_timeout"] = "20m"
    profiled = parse_profile(data, "test")
    assert validate(JobSpec(kind="train"), profiled).hang_timeout == 1200
    assert validate(JobSpec(kind="train", hang_timeout="off"), profiled).hang_timeout == 0
    # A profile default longer than a short job's limit is simply never reached, not an error.
    assert validate(JobSpec(kind="train", time="10"), profiled).hang_timeout == 1200


def test_bad_hang_timeout_on_the_command_line_is_one_line_and_exit_2(isolated):
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "submit", "train", "--hang-timeout",
                        "soon", "--dry-run", "--", "examples/hang_gloo.py"], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert "--hang-timeout" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (isolated / "runs").exists()


# --- the progress rule --------------------------------------------------------------------------

def test_progress_is_any_heartbeat_change_or_output_growth():
    p = sentinel.Progress(20, last=0.0, heartbeats={"rank-0": b"1 1 t p\n"}, sizes={(1, 2): 100})
    assert p.observe(5, {"rank-0": b"1 1 t p\n"}, {(1, 2): 100}) == ""
    assert p.silence(5) == 5
    assert p.observe(6, {"rank-0": b"2 9 t p\n"}, {(1, 2): 100}).startswith("heartbeat rank-0 (2)")
    assert p.silence(10) == 4
    assert p.observe(12, {"rank-0": b"2 9 t p\n", "rank-1": b""}, {(1, 2): 100}) == ""  # half-written
    assert p.observe(13, {"rank-0": b"2 9 t p\n"}, {(1, 2): 180}) == "the job's output grew"
    assert p.observe(40, {"rank-0": b"2 9 t p\n"}, {(1, 2): 180}) == ""
    assert p.silence(40) == 27 and p.last_what == "the job's output grew"


def test_heartbeat_files_are_read_afresh(tmp_path):
    (tmp_path / "rank-0").write_bytes(b"3 3 1.0 9\n")
    (tmp_path / ".rank-0.9.tmp").write_bytes(b"x")
    (tmp_path / "rank-1.9.tmp").write_bytes(b"x")
    assert sentinel.read_heartbeats(str(tmp_path)) == {"rank-0": b"3 3 1.0 9\n"}
    assert sentinel.read_heartbeats(str(tmp_path / "nowhere")) == {}


# --- where each rank stands ---------------------------------------------------------------------

TORCH = "/venv/lib/python3.11/site-packages/torch/distributed"


def frame(name, filename, line, code=""):
    return {"name": name, "filename": filename, "line": line, "code": code}


def rank_in_all_reduce(rank):
    return {"rank": rank, "pid": 100 + rank, "state": "S", "threads": [
        {"os_thread_id": 999, "frames": [frame("run", "/usr/lib/python3.11/threading.py", 1)]},
        {"os_thread_id": 100 + rank, "frames": [
            frame("all_reduce", f"{TORCH}/distributed_c10d.py", 3252, "work.wait()"),
            frame("wrapper", f"{TORCH}/c10d_logger.py", 83, "return func(*args, **kwargs)"),
            frame("train", "/home/u/train.py", 41, "dist.all_reduce(grad)"),
            frame("<module>", "/home/u/train.py", 60, "train()")]}]}


def rank_sleeping(rank, state="S"):
    return {"rank": rank, "pid": 100 + rank, "state": state, "threads": [
        {"os_thread_id": 100 + rank, "frames": [
            frame("load", "/home/u/train.py", 38, "time.sleep(600)"),
            frame("train", "/home/u/train.py", 40, "batch = load()"),
            frame("<module>", "/home/u/train.py", 60, "train()")]}]}


def test_the_straggler_is_named_with_its_line():
    a = hangreport.analyse([rank_in_all_reduce(0), rank_sleeping(1), rank_in_all_reduce(2)], 3)
    assert a["summary"] == "hung: ranks 0,2 in all_reduce (train.py:41), rank 1 in time.sleep (train.py:38)"
    assert a["stragglers"] == [1] and a["missing_ranks"] == []
    assert a["fix"][0].startswith("rank 1 never reached the collective: time.sleep at train.py:38")
    assert "the others wait in all_reduce" in a["fix"][0]


def test_a_stopped_rank_and_a_missing_one():
    a = hangreport.analyse([rank_in_all_reduce(0), rank_sleeping(1, "T"), rank_in_all_reduce(2)], 4)
    assert a["summary"] == ("hung: ranks 0,2 in all_reduce (train.py:41), rank 1 stopped in "
                            "time.sleep (train.py:38), rank 3 not found")
    assert a["stragglers"] == [1] and a["missing_ranks"] == [3]
    assert "stopped (process state T" in a["fix"][0]
    assert any(h.startswith("rank 3: no process found") for h in a["fix"])


def test_all_ranks_in_one_collective_have_no_straggler():
    a = hangreport.analyse([rank_in_all_reduce(r) for r in range(8)])
    assert a["summary"] == "hung: ranks 0-7 in all_reduce (train.py:41)"
    assert a["stragglers"] == [] and "collective itself is stuck" in a["fix"][0]


def test_no_stack_and_c_extension_collectives():
    mpi = {"rank": 1, "pid": 5, "state": "S", "threads": [{"os_thread_id": 5, "frames": [
        frame("<module>", "/home/u/mpi_job.py", 12, "total = comm.allreduce(x, op=MPI.SUM)")]}]}
    w = hangreport.locate(mpi)
    assert (w.call, w.in_collective, w.file, w.line) == ("comm.allreduce", True, "mpi_job.py", 12)
    none = {"rank": 0, "pid": 4, "state": "S", "threads": [], "error": "Permission denied"}
    a = hangreport.analyse([none, mpi])
    assert "rank 0 no stack (Permission denied)" in a["summary"]
    assert any("ptrace" in h for h in a["fix"])


def test_nccl_flight_recorder_names_the_straggler_when_the_stacks_cannot():
    """NCCL returns from all_reduce at once: both ranks wait at a later sync (.item()), and only
    the flight recorder says that rank 1 never enqueued the collective."""
    def rank(r, enqueued):
        return {"rank": r, "pid": r, "state": "S", "threads": [{"os_thread_id": r, "frames": [
            frame("main", "/home/u/train.py", 70, "loss = t[0].item()")]}],
            "nccl": {"pg_status": {"0": {"last_enqueued_collective": enqueued,
                                         "last_completed_collective": 19}}}}
    a = hangreport.analyse([rank(0, 20), rank(1, 19)], 2)
    assert a["stragglers"] == [1]
    assert a["fix"][0].startswith("NCCL flight recorder: rank 1 enqueued collectives up to #19, "
                                  "the others up to #20")


@pytest.mark.parametrize("ranks,text", [([1], "rank 1"), ([0, 2], "ranks 0,2"),
                                        ([0, 1, 2, 3, 5, 7, 8], "ranks 0-3,5,7,8")])
def test_rank_lists(ranks, text):
    assert hangreport.ranks_text(ranks) == text


# --- py-spy on real processes -------------------------------------------------------------------

CHILD = textwrap.dedent("""\
    import os, signal, sys, time
    def wait_here():
        if sys.argv[1] == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(600)
    print("ready", flush=True)
    wait_here()
""")


@pytest.fixture
def children(tmp_path):
    """Two real Python processes with a task's Slurm variables: rank 0 sleeps, rank 1 stopped
    itself (SIGSTOP)."""
    if stacks.py_spy() is None:
        pytest.skip("py-spy is not installed (scripts/install --test)")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    job = f"unit{os.getpid()}"
    procs = []
    for rank, how in ((0, "sleep"), (1, "stop")):
        env = {**os.environ, "SLURM_JOB_ID": job, "SLURM_STEP_ID": "0", "SLURM_PROCID": str(rank),
               "SLURMD_NODENAME": "unitnode"}
        p = subprocess.Popen([sys.executable, str(script), how], env=env, stdout=subprocess.PIPE,
                             text=True)
        assert p.stdout.readline().strip() == "ready"
        procs.append(p)
    deadline = time.monotonic() + 10
    while stacks.status_of(procs[1].pid)[0][:1] != "T" and time.monotonic() < deadline:
        time.sleep(0.05)
    yield job, procs
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()


def test_py_spy_reads_a_sleeping_and_a_stopped_rank(children, monkeypatch):
    job, procs = children
    monkeypatch.setenv("SLURMD_NODENAME", "unitnode")
    ranks = stacks.node_ranks(job, {"0"})
    assert [r["rank"] for r in ranks] == [0, 1]
    by = {r["rank"]: r for r in ranks}
    assert by[0]["pyspy"] == "blocking" and by[1]["pyspy"] == "nonblocking"  # stopped: no pause
    assert by[1]["state"] == "T"
    a = hangreport.analyse(ranks, 2)
    assert a["summary"] == ("hung: rank 0 in time.sleep (child.py:5), rank 1 stopped in os.kill "
                            "(child.py:4)")
    assert stacks.status_of(procs[1].pid)[0].startswith("T")  # py-spy left it as it was
    text = hangreport.stacks_text(ranks)
    assert 'File "' in text and "in wait_here" in text and "time.sleep(600)" in text


def test_only_the_named_steps_and_node(children, monkeypatch):
    job, _ = children
    assert stacks.job_tasks(job, {"1"}) == {}
    assert stacks.job_tasks(job, {"0"}, node="elsewhere") == {}  # another node's tasks
    assert sorted(stacks.job_tasks(job, {"0"}, node="unitnode")) == [0, 1]


# --- the NCCL flight recorder's dump ------------------------------------------------------------

def test_flight_record_reader_takes_plain_data_only(tmp_path):
    record = {"version": "2.10", "pg_status": {"0": {"last_enqueued_collective": 42,
                                                     "last_completed_collective": 41}},
              "entries": [{"collective_seq_id": 42, "profiling_name": "nccl:all_reduce",
                           "state": "started", "frames": [{"filename": "/home/u/train.py",
                                                           "line": 41, "name": "train"}]}]}
    good = tmp_path / "nccl_trace_rank_0"
    good.write_bytes(pickle.dumps(record))
    s = stacks.fr_summary(stacks.read_flight_record(str(good)), str(good))
    assert s["last_entries"][0]["at"] == "train.py:41" and s["entries"] == 1
    assert sentinel.fr_completed([{"rank": 0, "nccl": s}]) == {0: 41}
    evil = tmp_path / "evil"
    evil.write_bytes(pickle.dumps(os.system))
    assert stacks.read_flight_record(str(evil)) is None


def test_flight_recorder_paths_from_the_rank_environment():
    env = {"TORCH_FR_BUFFER_SIZE": "2000", "TORCH_NCCL_DEBUG_INFO_PIPE_FILE": "/r/nccl_pipe_rank_",
           "TORCH_FR_DUMP_TEMP_FILE": "/r/nccl_trace_rank_", "RANK": "3"}
    assert stacks.fr_paths({"env": env, "rank": 3}) == ("/r/nccl_pipe_rank_3.pipe", "/r/nccl_trace_rank_3")
    assert stacks.fr_paths({"env": {**env, "TORCH_FR_BUFFER_SIZE": "0"}, "rank": 3}) is None


# --- hpcjobs why ---------------------------------------------------------------------------------

SENTINEL_LOG = """\
step 4: all_reduce sum 6 over 3 ranks
hpcjobs: sentinel: no progress for 20 s (last: heartbeat rank-0 (4)); stacks of 3 rank(s): /runs/r/sentinel/77/run-0/stacks.txt
hpcjobs: sentinel: hung: ranks 0,2 in all_reduce (train.py:41), rank 1 in time.sleep (train.py:38)
hpcjobs: sentinel: fix: rank 1 never reached the collective: time.sleep at train.py:38
hpcjobs: sentinel: fix: if the job is only slow, not hung: call hpcjobs.heartbeat(step=...)
hpcjobs: sentinel: cancelling step 77.0
slurmstepd-node1: error: *** STEP 77.0 ON node1 CANCELLED AT 2026-12-01T22:38:12 ***
srun: Job step aborted: Waiting up to 4 seconds for job step to finish.
srun: error: node2: task 1: Killed
hpcjobs: sentinel: job 77 ends after the hang (submit with --requeue to restart it after one)
"""


def test_why_says_hung_with_the_lines_and_the_fix():
    f = explain_lines(SENTINEL_LOG.splitlines(), job_id="77", state="FAILED", exit_code=137)
    assert f[0].key == "hung"
    assert f[0].cause == "hung: ranks 0,2 in all_reduce (train.py:41), rank 1 in time.sleep (train.py:38)"
    assert f[0].evidence.startswith("output:3: hpcjobs: sentinel: hung:")
    assert "rank 1 never reached the collective" in f[0].fix
    assert f[0].fix.endswith("every rank's stacks: /runs/r/sentinel/77/run-0/stacks.txt")
    assert "oom_killed" not in [x.key for x in f]  # srun killed the task after the cancel


def test_why_of_a_job_that_hung_once_then_completed():
    log = SENTINEL_LOG.replace("hpcjobs: sentinel: job 77 ends", "hpcjobs: requeueing job 77 after "
                               "a hang (sentinel; step exit 137, restart 0)\nx") + "done\n"
    f = explain_lines(log.splitlines(), job_id="77", state="COMPLETED", exit_code=0, restarts=1)
    assert [x.key for x in f][:1] == ["completed"]
    assert {"requeued", "hung"} <= {x.key for x in f}


# --- the script ----------------------------------------------------------------------------------

def _script(**kw):
    spec = JobSpec(kind="train", nodes=3, program=["examples/hang_gloo.py"], **kw)
    return materialize(unchecked(spec), run_dir="/runs/r").script


def _checks(script: str) -> None:
    r = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-"], input=script, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


def test_rendered_script_starts_the_sentinel_only_with_a_timeout():
    on = _script(hang_timeout="20s")
    _checks(on)
    assert "export HPCJOBS_HANG_TIMEOUT=20\n" in on
    assert "hpcjobs_sentinel_base=/runs/r/sentinel\n" in on
    assert '-m hpcjobs.runners.sentinel watch &' in on
    assert "hpcjobs_at_finish+=(hpcjobs_sentinel_stop)" in on
    assert on.index("hpcjobs_sentinel_stop()") < on.index("hpcjobs_step --kill-on-bad-exit")
    off = _script()
    assert "hpcjobs.runners.sentinel" not in off and "HPCJOBS_HANG_TIMEOUT" not in off


def test_direct_script_sentinel_is_off_unless_the_variable_is_set():
    script = direct_script("train")
    _checks(script)
    assert 'if [ -n "${HPCJOBS_HANG_TIMEOUT:-}" ]' in script
    assert "export HPCJOBS_HANG_TIMEOUT=" not in script


def test_the_hook_requeues_only_a_hung_requeueable_job(tmp_path):
    """The stop function as bash runs it, with scontrol and the watcher replaced by stand-ins."""
    on = _script(hang_timeout="20s", requeue=True)
    hook = on[on.index("    hpcjobs_sentinel_stop() {"):on.index("    hpcjobs_at_finish+=")]
    calls = tmp_path / "calls"
    for hung, restarts, expect in ((False, 0, ""), (True, 0, "requeue 5"), (True, 2, "")):
        d = tmp_path / f"d{hung}{restarts}"
        d.mkdir()
        if hung:
            (d / "hung").write_text("hung: x\n")
        calls.write_text("")
        prog = (f"scontrol() {{ echo \"$1 $2\" >> {calls}; }}\n"
                "hpcjobs_requeueable() { return 0; }\n"
                f"SLURM_JOB_ID=5 SLURM_RESTART_COUNT={restarts} HPCJOBS_SENTINEL_DIR={d}\n"
                f"sleep 30 & hpcjobs_sentinel_pid=$!\n{hook}\n"
                + ("kill $hpcjobs_sentinel_pid\n" if hung else "") + "hpcjobs_sentinel_stop 137\n")
        r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        assert calls.read_text().strip() == expect, r.stderr
        assert (d / "ended").exists() == hung


def test_report_files_are_written_into_the_record(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    cfg = sentinel.Config(20, tmp_path, str(tmp_path / "heartbeat"), "77", "77", 3, 3)
    ranks = [rank_in_all_reduce(0), rank_sleeping(1), rank_in_all_reduce(2)]
    sentinel.write_report(cfg, {"summary": "hung: x", "ranks": ranks}, ranks)
    assert json.loads((tmp_path / "report.json").read_text())["summary"] == "hung: x"
    assert "rank 1 on ?" in (tmp_path / "stacks.txt").read_text()
