"""Invalid specs through the real CLI: one line on stderr naming the field and the fix, exit
code 2, Slurm never called, no run record and no stray file.

A tripwire directory first on PATH holds `sbatch`, `srun`, `squeue`, `scontrol` and `scancel`
scripts that only note that they were called: none may be. (tests/integration/test_faults.py
runs a sample against the live sandbox and checks squeue.) tests/unit/test_spec.py covers
validate() itself and tests/unit/test_cli.py a first set through the CLI; the figures in
docs/reliability.md count all three.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hpcjobs import kinds
from tests.conftest import ROOT

EX = ROOT / "examples"
SLURM_COMMANDS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sacct")
PROFILE_BAD = {
    "syntax.toml": 'name = "x"\n[fabric\n',
    "unknown-key.toml": 'name = "x"\ncolour = "blue"\n',
    "bad-gpu.toml": ('name = "t"\n[fabric]\nkind = "ethernet"\ninterface = "eth0"\n'
                     '[[partitions]]\nname = "p"\nnodes = "n1"\ndefault = true\n'
                     '[[nodes]]\nnames = "n1"\ncpus = 8\nmemory_mb = 1000\n'
                     '[nodes.gpu]\ntype = "v100s"\ncount = 0\nmemory_gb = 32\n'
                     'compute_capability = "7.0"\n'),
    "no-nodes.toml": 'name = "t"\n[fabric]\nkind = "ethernet"\ninterface = "eth0"\n',
}
# A profile whose GPUs are placeholders, as the sandbox's (written by `hpcjobs sandbox up`).
PROFILE_OK = {
    "placeholder.toml": ('name = "fakegpu"\nsandbox = true\n[fabric]\nkind = "ethernet"\n'
                         'interface = "eth0"\nrate_gbps = 10\n[[partitions]]\nname = "gpu"\n'
                         'nodes = "n[1-2]"\ndefault = true\nmax_time = "1-00:00:00"\n[[nodes]]\n'
                         'names = "n[1-2]"\ncpus = 8\nmemory_mb = 16000\n[nodes.gpu]\n'
                         'type = "v100s"\nmodel = "Tesla V100S-PCIE-32GB (fake)"\ncount = 1\n'
                         'memory_gb = 32\ncompute_capability = "7.0"\n'),
}

# (arguments after `hpcjobs`, the field the error must start with). {tmp} is the test's
# scratch directory (profiles, files and directories made by the fixture live there).
CASES: list[tuple[list[str], str]] = [
    (["submit", "mpi", "--nodes", "4", "--", "true"], "--nodes"),
    (["submit", "mpi", "--nodes", "0", "--", "true"], "--nodes"),
    (["submit", "mpi", "--nodes=-3", "--", "true"], "--nodes"),
    (["submit", "train", "--gpus-per-node", "2", "--", f"{EX}/train_ddp.py"], "--gpus-per-node"),
    (["submit", "mpi", "--gpus-per-node=-1", "--", "true"], "--gpus-per-node"),
    (["submit", "mpi", "--ntasks-per-node", "0", "--", "true"], "--ntasks-per-node"),
    (["submit", "mpi", "--ntasks-per-node", "1000", "--", "true"], "--ntasks-per-node"),
    (["submit", "mpi", "--cpus-per-task", "0", "--", "true"], "--cpus-per-task"),
    (["submit", "mpi", "--cpus-per-task", "64", "--", "true"], "--cpus-per-task"),
    (["submit", "nosuchkind", "--", "true"], "KIND"),
    (["submit", "mpi", "--partition", "debug", "--", "true"], "--partition"),
    (["submit", "mpi", "--time", "soon", "--", "true"], "--time"),
    (["submit", "mpi", "--time", "1:2:3:4", "--", "true"], "--time"),
    (["submit", "mpi", "--time=-5", "--", "true"], "--time"),
    (["submit", "mpi", "--time", "1-", "--", "true"], "--time"),
    (["--cluster", "{tmp}/syntax.toml", "submit", "mpi", "--", "true"],
     "cluster profile {tmp}/syntax.toml: (syntax)"),
    (["--cluster", "{tmp}/unknown-key.toml", "submit", "mpi", "--", "true"],
     "cluster profile {tmp}/unknown-key.toml: colour"),
    (["--cluster", "{tmp}/bad-gpu.toml", "submit", "mpi", "--", "true"],
     "cluster profile {tmp}/bad-gpu.toml: nodes[0].gpu.count"),
    (["--cluster", "{tmp}/no-nodes.toml", "submit", "mpi", "--", "true"],
     "cluster profile {tmp}/no-nodes.toml: nodes"),
    (["--cluster", "{tmp}/missing.toml", "submit", "mpi", "--", "true"], "--cluster"),
    (["submit", "mpi"], "PROG"),
    (["submit", "mpi", "--", "python3", "no/such/file.py"], "PROG"),
    (["submit", "mpi", "--", "./missing-binary"], "PROG"),
    (["submit", "mpi", "--", "python3", "{tmp}/a-directory.py"], "PROG"),
    (["submit", "mpi", "--", "{tmp}/dangling-link.py"], "PROG"),
    (["submit", "mpi", "--env", "NOEQUALS", "--", "true"], "--env"),
    (["submit", "mpi", "--env", "1BAD=x", "--", "true"], "--env"),
    (["submit", "mpi", "--env-pass", "HPCJOBS_TEST_SURELY_UNSET", "--", "true"], "--env-pass"),
    (["submit", "mpi", "--env-pass", "bad name", "--", "true"], "--env-pass"),
    (["submit", "mpi", "--array", "x", "--", "true"], "--array"),
    (["submit", "mpi", "--array", "1-", "--", "true"], "--array"),
    (["submit", "mpi", "--after", "abc", "--", "true"], "--after"),
    (["submit", "mpi", "--after", "12:maybe", "--", "true"], "--after"),
    (["submit", "mpi", "--signal", "KILL", "--", "true"], "--signal"),
    (["submit", "mpi", "--signal-seconds", "0", "--", "true"], "--signal-seconds"),
    (["submit", "mpi", "--signal-seconds", "70000", "--", "true"], "--signal-seconds"),
    (["submit", "mpi", "--time", "2", "--signal-seconds", "200", "--", "true"], "--signal-seconds"),
    (["submit", "mpi", "--job-name", "", "--", "true"], "--job-name"),
    (["submit", "mpi", "--job-name", "ü" * 513, "--", "true"], "--job-name"),
    (["submit", "mpi", "--output-dir", "{tmp}/back\\slash", "--", "true"], "--output-dir"),
    (["submit", "mpi", "--output-dir", "{tmp}/not-made-yet", "--", "true"], "--output-dir"),
    (["submit", "mpi", "--chdir", "/does/not/exist", "--", "true"], "--chdir"),
    (["submit", "mpi", "--account", "a b", "--", "true"], "--account"),
    (["submit", "mpi", "--qos", "x;y", "--", "true"], "--qos"),
    (["submit", "mpi", "--mpi", "openib", "--", "true"], "Invalid value for '--mpi'"),
    (["submit", "mpi", "--bogus", "--", "true"], "No such option '--bogus'"),
    (["submit", "deepspeed", "--precision", "bf16", "--", f"{EX}/ds_zero3.py"], "--precision"),
    (["submit", "deepspeed", "--bf16", "--", f"{EX}/ds_zero3.py"], "--bf16"),
    (["submit", "vllm", "--model", "meta-llama/Llama-2-70b-hf", "--tensor-parallel-size", "3"],
     "--tensor-parallel-size"),
    (["submit", "vllm", "--model", "meta-llama/Llama-2-7b-hf", "--dtype", "bfloat16"], "--dtype"),
    (["submit", "megatron", "--model", "llama-2-7b", "--tensor-parallel-size", "3", "--",
      f"{EX}/megatron_parallel_state.py"], "--tensor-parallel-size"),
    (["submit", "megatron", "--model", "llama-2-7b", "--dtype", "bfloat16", "--",
      f"{EX}/megatron_parallel_state.py"], "--dtype"),
    # issue 11: accepted before, then pending for ever or refused by sbatch (exit 3)
    (["submit", "train", "--time", "3-00:00:00", "--", f"{EX}/train_ddp.py"],
     "--time: 3-00:00:00 is above the MaxTime 2-00:00:00 of partition 'gpu'"),
    (["submit", "mpi", "--time", "0", "--", "true"], "--time: 0 means no time limit"),
    (["submit", "mpi", "--array", "5-1", "--", "true"], "--array: '5-1' is not a Slurm array spec: "
     "the range 5-1 ends before it starts"),
    (["submit", "mpi", "--array", "0-99:0%4", "--", "true"], "--array: '0-99:0%4' is not a Slurm "
     "array spec: the step of 0-99:0 must be at least 1"),
    (["submit", "mpi", "--array", "0-9%x", "--", "true"], "--array: '0-9%x' is not a Slurm array "
     "spec: the throttle"),
    (["submit", "train", "--epochs", "3", "--", f"{EX}/train_ddp.py"], "No such option '--epochs' "
     "(did you mean '--qos'?): the program's own options go after --"),
    (["render", "train", "--direct", "--", f"{EX}/train_ddp.py", "--epochs", "3"],
     "--direct: the direct-use script takes the program from sbatch's command line"),
    (["render", "mpi", "--direct", "--env", "A=1"], "--direct: the direct-use script keeps only"),
    # issue 11, point 5: the sbatch options, each in Slurm's own forms
    (["submit", "mpi", "--mem", "64GB", "--", "true"], "--mem: '64GB' is not a Slurm memory size"),
    (["submit", "mpi", "--mem", "1T", "--", "true"], "--mem: 1T per node is more than the 191000 MB"),
    (["submit", "mpi", "--mem-per-gpu", "8G", "--", "true"], "--mem-per-gpu: the job asks for no GPU"),
    (["submit", "mpi", "--mem", "1G", "--mem-per-gpu", "1G", "--gpus-per-node", "1", "--", "true"],
     "--mem: Slurm takes one of --mem and --mem-per-gpu"),
    (["submit", "mpi", "--exclude", "pve9", "--", "true"], "--exclude: no node 'pve9'"),
    (["submit", "mpi", "-w", "pve[1-3]", "-N", "2", "--", "true"], "--nodelist: names 3 nodes"),
    (["submit", "mpi", "--nodelist", "node1", "--", "true"], "--nodelist: 'node1' is not a node"),
    (["submit", "mpi", "--constraint", "a b", "--", "true"], "--constraint"),
    (["submit", "mpi", "--reservation", "r;1", "--", "true"], "--reservation"),
    (["submit", "mpi", "--mail-type", "SOMETIMES", "--", "true"], "--mail-type"),
    (["submit", "mpi", "--mail-user", "me@example.org", "--", "true"],
     "--mail-user: without --mail-type"),
    (["submit", "mpi", "--gres", "gpu:2", "--", "true"], "--gpus-per-node"),
    (["submit", "mpi", "--gres", "gpu", "--gpus-per-node", "0", "--", "true"], "--gres"),
    (["submit", "mpi", "--comment", "c" * 1100, "--", "true"], "--comment: is 1100 bytes"),
    (["submit", "mpi", "--begin", "whenever", "--", "true"], "--begin: 'whenever' is not a Slurm time"),
    (["submit", "mpi", "--deadline", "2020-01-01", "--", "true"], "--deadline: 2020-01-01"),
    (["submit", "mpi", "--begin", "now+2days", "--deadline", "now+1day", "--", "true"],
     "--deadline"),
    (["submit", "mpi", "--sbatch-arg=--time=5", "--", "true"], "--sbatch-arg: --time is set by"),
    (["submit", "mpi", "--sbatch-arg=--nodel=pve1", "--", "true"], "--sbatch-arg: --nodel is an "
     "abbreviation"),
    (["submit", "mpi", "--sbatch-arg=-x", "--", "true"], "--sbatch-arg"),
    # issue 11, point 10: a half type on placeholder GPUs ended in DeepSpeed's traceback
    (["--cluster", "{tmp}/placeholder.toml", "submit", "deepspeed", "--precision", "fp16", "--",
      f"{EX}/ds_zero3.py"], "--precision: fp16 needs a CUDA GPU, and the GPUs of cluster 'fakegpu' "
     "are placeholders"),
    (["--cluster", "{tmp}/placeholder.toml", "submit", "megatron", "--",
      "{tmp}/pretrain_gpt.py"], "PROG: pretrain_gpt.py needs CUDA GPUs and those of cluster "
     "'fakegpu' are placeholders"),
]


@pytest.fixture
def tripwire(isolated, tmp_path):
    """PATH with Slurm commands that only record being called; scratch files for the cases."""
    bin_dir = tmp_path / "tripwire"
    bin_dir.mkdir()
    log = tmp_path / "slurm-called.log"
    for name in SLURM_COMMANDS:
        p = bin_dir / name
        p.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\nexit 1\n')
        p.chmod(0o755)
    for name, text in {**PROFILE_BAD, **PROFILE_OK}.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "a-directory.py").mkdir()
    (tmp_path / "pretrain_gpt.py").write_text("# Megatron-LM's entry point, by name\n")
    (tmp_path / "dangling-link.py").symlink_to(tmp_path / "gone.py")
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("HPCJOBS_TEST_SURELY_UNSET", None)
    return tmp_path, work, env, log


def _needs_kind(args: list[str]) -> str | None:
    i = args.index("submit") + 1 if "submit" in args else None
    kind = args[i] if i is not None else None
    if kind and kind not in ("nosuchkind",) and kind not in kinds.names():
        return kind
    return None


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30
    assert len({tuple(a) for a, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("args,field", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_spec_exit_2_one_line_nothing_submitted_nothing_written(tripwire, args, field):
    tmp, work, env, log = tripwire
    missing = _needs_kind(args)
    if missing:
        pytest.skip(f"kind {missing!r} is not registered (yet)")
    args = [a.replace("{tmp}", str(tmp)) for a in args]
    field = field.replace("{tmp}", str(tmp))
    before = sorted(p.name for p in tmp.iterdir())
    r = subprocess.run([sys.executable, "-m", "hpcjobs", *args], capture_output=True, text=True,
                       env=env, cwd=work, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith(f"hpcjobs: error: {field}"), r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    # The fix comes after "; " (BadInput's format).
    assert "; " in r.stderr, f"no fix given: {r.stderr}"
    assert r.stdout == ""
    assert not log.exists(), f"Slurm was called: {log.read_text()}"
    runs = tmp / "runs"
    assert not runs.exists() or not any(runs.rglob("*")), list(runs.rglob("*"))
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in tmp.iterdir()) == before


def test_unreadable_program_for_a_user_who_cannot_read_it(tripwire):
    """Root reads every file, so this only bites as another user; checked where it can be."""
    tmp, work, env, log = tripwire
    prog = tmp / "secret.py"
    prog.write_text("print(1)\n")
    prog.chmod(0o000)
    if os.access(prog, os.R_OK):
        pytest.skip("running as root: every file is readable (the check is os.access(R_OK))")
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "submit", "mpi", "--", str(prog)],
                       capture_output=True, text=True, env=env, cwd=work)
    assert r.returncode == 2 and r.stderr.startswith("hpcjobs: error: PROG") and "chmod" in r.stderr
    assert not log.exists()


def test_plan_command_refuses_with_exit_2_without_slurm(tripwire):
    """`hpcjobs plan` shows the whole verdict (several lines by design) and exits 2."""
    _, work, env, log = tripwire
    if "vllm" not in kinds.names():
        pytest.skip("kind 'vllm' is not registered (yet)")
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "plan", "vllm", "--model",
                        "meta-llama/Llama-2-70b-hf", "--tensor-parallel-size", "3"],
                       capture_output=True, text=True, env=env, cwd=work)
    assert r.returncode == 2 and "REFUSED" in r.stdout and "not divisible" in r.stdout
    assert not log.exists() and list(work.iterdir()) == []



@pytest.mark.parametrize("time,seconds", [("1", 30), ("2", 60), ("1:30", 45), ("3", 120),
                                          ("0", 120), ("UNLIMITED", 120), ("1-0", 120)])
def test_the_default_warning_fits_a_short_time_limit(time, seconds):
    """120 s before a 1- or 2-minute limit would come at once: the default is halved there.
    (A partition without MaxTime: on one with it, 0 and UNLIMITED are refused.)"""
    from dataclasses import replace

    from hpcjobs.cluster import builtin
    from hpcjobs.spec import JobSpec, validate

    c = builtin()
    c = replace(c, partitions=tuple(replace(p, max_time=None) for p in c.partitions))
    assert validate(JobSpec(kind="mpi", program=["p"], time=time), c).signal_seconds == seconds
