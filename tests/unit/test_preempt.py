"""hpcjobs.preempted(): the handler for the job's warning signal, in real processes that get
real signals (each test runs a small program, so no handler leaks into pytest itself).

The whole path on Slurm (batch shell trap -> srun -> launcher exec -> program -> checkpoint ->
scontrol requeue -> resume) is tests/integration/test_requeue.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, unchecked


def run(code: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full, timeout=timeout)


def test_flag_turns_true_when_the_default_signal_arrives():
    r = run("""
        import os, signal, sys, hpcjobs
        stop = hpcjobs.preempted()
        print(stop(), bool(stop), stop.name)
        os.kill(os.getpid(), signal.SIGUSR2)
        print(stop(), bool(stop), stop.count, stop.received_at is not None)
        print("torch" in sys.modules, "numpy" in sys.modules, "click" in sys.modules)
    """, env={"HPCJOBS_SIGNAL": None})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == ["False False USR2", "True True 1 True", "False False False"]


@pytest.mark.parametrize("value,sig", [("USR1", "SIGUSR1"), ("SIGTERM", "SIGTERM"), ("10", "SIGUSR1"),
                                       ("hup", "SIGHUP")])
def test_the_signal_comes_from_hpcjobs_signal(value, sig):
    r = run(f"""
        import os, signal, hpcjobs
        stop = hpcjobs.preempted()
        os.kill(os.getpid(), signal.{sig})
        print(stop(), stop.name)
    """, env={"HPCJOBS_SIGNAL": value})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", sig[3:]]


def test_calling_it_again_returns_the_same_flag_and_one_handler():
    r = run("""
        import os, signal, hpcjobs
        from hpcjobs import preempt
        a = hpcjobs.preempted(); b = hpcjobs.preempted(); c = preempt.preempted("USR2")
        os.kill(os.getpid(), signal.SIGUSR2)
        print(a is b is c, a.count)
    """)
    assert r.stdout.split() == ["True", "1"], r.stderr


def test_a_handler_the_program_had_is_still_called():
    r = run("""
        import os, signal, hpcjobs
        seen = []
        signal.signal(signal.SIGUSR2, lambda s, f: seen.append(s))
        stop = hpcjobs.preempted()
        os.kill(os.getpid(), signal.SIGUSR2)
        print(stop(), seen == [signal.SIGUSR2])
    """)
    assert r.stdout.split() == ["True", "True"], r.stderr


def test_sigint_as_warning_signal_does_not_raise_keyboardinterrupt():
    r = run("""
        import os, signal, hpcjobs
        stop = hpcjobs.preempted("INT")
        os.kill(os.getpid(), signal.SIGINT)
        print("still running", stop())
    """)
    assert r.returncode == 0 and r.stdout.split() == ["still", "running", "True"], r.stderr


def test_wait_returns_when_the_signal_arrives_from_outside():
    """Another process sends the signal while the program sleeps in wait()."""
    r = run("""
        import os, subprocess, sys, hpcjobs
        stop = hpcjobs.preempted()
        subprocess.Popen(["sh", "-c", f"sleep 0.3; kill -USR2 {os.getpid()}"])
        print(stop.wait(timeout=20), stop.wait(timeout=0))
    """)
    assert r.stdout.split() == ["True", "True"], r.stderr


def test_wait_times_out_false():
    r = run("import hpcjobs; print(hpcjobs.preempted().wait(timeout=0.1))")
    assert r.stdout.split() == ["False"], r.stderr


def test_first_call_from_another_thread_is_a_clear_error():
    r = run("""
        import threading, hpcjobs
        out = []
        def body():
            try:
                hpcjobs.preempted()
            except RuntimeError as e:
                out.append(str(e))
        t = threading.Thread(target=body); t.start(); t.join()
        print(out[0])
    """)
    assert "call it once from the main thread" in r.stdout, r.stdout + r.stderr


def test_a_bad_signal_name_is_a_clear_error():
    r = run("""
        import hpcjobs
        try:
            hpcjobs.preempted()
        except ValueError as e:
            print(e)
    """, env={"HPCJOBS_SIGNAL": "NOPE"})
    assert "HPCJOBS_SIGNAL='NOPE' is not a signal name" in r.stdout, r.stdout + r.stderr


def test_the_program_sees_the_signal_through_the_batch_shells_forwarding(tmp_path):
    """The template's own trap and forwarding, run by bash without Slurm: a background
    'step' (the program itself here, in place of srun) gets the signal the batch shell got,
    checkpoints, exits 0, and hpcjobs_finish says it would requeue (HPCJOBS_REQUEUE=0: it
    only reports)."""
    from hpcjobs.rendering import materialize
    from hpcjobs.spec import JobSpec

    script = materialize(unchecked(JobSpec(kind="mpi", program=["x"]))).script
    start = script.index("# --- run a job step")
    funcs = script[start:script.index("hpcjobs_step --mpi")]
    ready = tmp_path / "ready"
    prog = ("import hpcjobs, time\nstop = hpcjobs.preempted()\nprint('ready', flush=True)\n"
            f"open({str(ready)!r}, 'w').close()\n"
            "while not stop(): time.sleep(0.05)\nprint('checkpointed', flush=True)\n")
    # The step runs here instead of on Slurm's nodes: an `srun` that execs its command.
    (tmp_path / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    (tmp_path / "srun").chmod(0o755)
    shell = ("export HPCJOBS_SIGNAL=USR2 HPCJOBS_REQUEUE=0 SLURM_JOB_ID=7\n" + funcs
             + f"(while [ ! -e {ready} ]; do sleep 0.05; done; kill -USR2 $$) &\nhpcjobs_step {sys.executable} -c \"$PROG\"\n"
             + "hpcjobs_finish $?\n")
    p = subprocess.Popen(["bash", "-c", shell], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True,
                         env={**os.environ, "PROG": prog, "PYTHONPATH": str(ROOT),
                              "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the program too: it would wait for the signal forever
        out, err = p.communicate()
        pytest.fail(f"the program never saw the signal:\n{out}\n{err}")
    assert p.returncode == 0, err
    assert out.split() == ["ready", "checkpointed"]
    assert "SIGUSR2: time limit or preemption near; forwarding to the job step" in err
    assert "is not requeueable" in err
