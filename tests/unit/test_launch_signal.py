"""The job's warning signal (issue 11.19): ignored for programs that do not ask for it, left at
its default for a program whose framework installs its own handler (Lightning's auto-requeue)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from hpcjobs.cluster import builtin
from hpcjobs.errors import BadInput
from hpcjobs.launch import environment, signals
from hpcjobs.spec import JobSpec, validate
from tests.conftest import FIXTURES, ROOT


@pytest.fixture
def env(tmp_path):
    """Task 1 of a 3-node step on pve2 (built-in profile), native IB fixture, isolated dirs."""
    return {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "1", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
            "SLURM_NODEID": "1", "SLURM_NTASKS": "3", "SLURM_NNODES": "3",
            "SLURM_TASKS_PER_NODE": "1(x3)", "SLURM_JOB_NODELIST": "pve[1-3]", "SLURMD_NODENAME": "pve2",
            "HPCJOBS_SYSFS_ROOT": str(FIXTURES / "sysfs" / "ib-active"),
            "HPCJOBS_SANDBOX_STATE": str(tmp_path / "none"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path), "PATH": os.environ["PATH"],
            "PYTHONPATH": str(ROOT)}

# What the program reports: its disposition of SIGUSR1, and whether Lightning would install its
# handler (lightning/pytorch/trainer/connectors/signal_connector.py, _has_already_handler:
# `signal.getsignal(signum) not in (None, signal.SIG_DFL)` means "the program has one: leave it").
PROBE = ("import signal; h = signal.getsignal(signal.SIGUSR1); "
         "print(h.name if isinstance(h, signal.Handlers) else h, h in (None, signal.SIG_DFL))")


def run_probe(env: dict, parent_ignores: bool = False) -> list[str]:
    """The launcher exec's PROBE; optionally started with SIGUSR1 already ignored (as a parent
    shell or an older launcher might leave it)."""
    pre = (lambda: signal.signal(signal.SIGUSR1, signal.SIG_IGN)) if parent_ignores else None
    p = subprocess.run([sys.executable, "-m", "hpcjobs.launch", "--", sys.executable, "-c", PROBE],
                       env=env, capture_output=True, text=True, timeout=60, preexec_fn=pre)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def test_hpcjobs_handler_starts_the_program_with_the_signal_ignored(env):
    env["HPCJOBS_SIGNAL"] = "USR1"
    assert run_probe(env) == ["SIG_IGN", "False"]  # not killed by it; Lightning would not install
    env["HPCJOBS_SIGNAL_HANDLER"] = "hpcjobs"
    assert run_probe(env) == ["SIG_IGN", "False"]


def test_program_handler_leaves_it_at_its_default_for_lightning(env):
    env.update(HPCJOBS_SIGNAL="USR1", HPCJOBS_SIGNAL_HANDLER="program")
    assert run_probe(env) == ["SIG_DFL", "True"]
    # Even when whatever started the launcher had it ignored: the program must see the default.
    assert run_probe(env, parent_ignores=True) == ["SIG_DFL", "True"]


def test_no_warning_signal_changes_nothing(env):
    """A plain srun (no HPCJOBS_SIGNAL): the disposition is whatever srun gave."""
    assert run_probe(env) == ["SIG_DFL", "True"]
    assert run_probe(env, parent_ignores=True) == ["SIG_IGN", "False"]


def test_explain_says_who_handles_it(env):
    env.update(HPCJOBS_SIGNAL="USR1", HPCJOBS_SIGNAL_HANDLER="program")
    text = environment.explain(environment.build(env))
    assert "# HPCJOBS_SIGNAL=USR1 passed through" in text
    assert "SIGUSR1 left at its default disposition (HPCJOBS_SIGNAL_HANDLER=program)" in text
    env["HPCJOBS_SIGNAL_HANDLER"] = "hpcjobs"
    assert "SIGUSR1 ignored when the program starts" in environment.explain(environment.build(env))


@pytest.mark.parametrize("key,value", [("HPCJOBS_SIGNAL_HANDLER", "lightning"),
                                       ("HPCJOBS_SIGNAL", "KILL"), ("HPCJOBS_SIGNAL", "_DFL"),
                                       ("HPCJOBS_SIGNAL", "NOPE")])
def test_bad_values_exit_2_naming_the_variable(env, key, value):
    env.update(HPCJOBS_SIGNAL="USR2")
    env[key] = value
    with pytest.raises(BadInput) as e:
        signals.warning_signal(env)
    assert e.value.field == key
    p = subprocess.run([sys.executable, "-m", "hpcjobs.launch", "--", "true"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.startswith(f"hpcjobs.launch: {key}: ")
    assert p.stderr.count("\n") == 1


def test_spec_field_is_validated():
    assert validate(JobSpec(kind="train", signal_handler="program"), builtin()).signal_handler == "program"
    with pytest.raises(BadInput) as e:
        validate(JobSpec(kind="train", signal_handler="lightning"), builtin())
    assert e.value.field == "--signal-handler"


def test_rendered_script_does_not_requeue_for_a_program_that_does():
    """The batch script exports the choice for the launcher and, with `program`, skips its own
    `scontrol requeue` after the warning (the program's handler requeued the job already)."""
    def render(*opts):
        p = subprocess.run([sys.executable, "-m", "hpcjobs", "render", "train", "--requeue", *opts,
                            "--", "examples/train_lightning.py"], capture_output=True, text=True,
                           cwd=ROOT, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout

    default = render()
    assert "export HPCJOBS_SIGNAL_HANDLER=hpcjobs\n" in default
    program = render("--signal", "USR1", "--signal-handler", "program")
    assert "export HPCJOBS_SIGNAL_HANDLER=program\n" in program and "#SBATCH --signal=B:USR1@" in program
    finish = program[program.index("hpcjobs_finish() {"):]
    assert finish.index('"$HPCJOBS_SIGNAL_HANDLER" = program') < finish.index("scontrol requeue")
