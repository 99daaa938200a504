"""Every shell command in README.md runs as written, from the repository root, on the sandbox
(issue 11, point 24).

The commands are read from README.md's ``sh``/``bash``/``console`` blocks (comments dropped, a
trailing backslash joins lines, a console block's ``$ `` lines only) and run with ``bash -c``
in the repository root, with this interpreter's ``bin/`` (the .venv) first on PATH, which is
what ``. .venv/bin/activate`` does for them. Each is either in ``EXPECT`` (its exit code and
what its output, or the output of the job it submitted, must say) or in ``NOT_RUN`` with the
reason; a README command in neither fails ``test_every_readme_command_is_run_or_listed``, and
so does an entry for a command the README no longer has. ``JOBID`` is the id of the job that
the README's main command (``MAIN``) submitted here; the commands that only read a job share
it. README's Python blocks run too, and print what their ``# comments`` say.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import wait_job

README = ROOT / "README.md"
MAIN = "hpcjobs submit train --nodes 3 -- examples/train_ddp.py --epochs 3"
SUBMITTED = re.compile(r"Submitted batch job (\d+)")
MPI_OK = r"allreduce sum = (\d+) \(expected \1\) over (\d+) ranks on \2 hosts: OK"


def _losses_fell(out: str) -> None:
    losses = [float(x) for x in re.findall(r"^epoch \d+/\d+ step \d+ loss (\S+)$", out, re.M)]
    assert len(losses) == 3 and losses[-1] < losses[0], f"a loss that falls over 3 epochs:\n{out}"


@dataclass
class Expect:
    rc: int = 0
    out: tuple[str, ...] = ()  # regexes, each found in the command's stdout + stderr
    job_out: tuple[str, ...] = ()  # regexes in the output file of the job it submitted
    ended: bool = False  # JOBID's job has ended before the command runs
    probe: str = ""  # a shell line run after it in the same shell (its output counts)
    check: Callable[[str], None] | None = None


EXPECT: dict[str, Expect] = {
    MAIN: Expect(out=(SUBMITTED.pattern,)),
    "hpcjobs status": Expect(out=(r"\bJOBID\s+train\s+(PENDING|RUNNING|COMPLETING|COMPLETED)\b",)),
    "hpcjobs logs JOBID --follow": Expect(out=(r"rank 2 of 3 local_rank 0 on node",
                                               r"all_reduce sum = 3 \(expected 3\): OK",
                                               r"training done: 3 epochs"), check=_losses_fell),
    "hpcjobs wait JOBID": Expect(out=(r"job JOBID ended COMPLETED, exit code 0",)),
    "hpcjobs why JOBID": Expect(ended=True, out=(r"cause:\s+the job completed successfully",)),
    "hpcjobs report JOBID": Expect(ended=True, out=(r"job JOBID \(train\): COMPLETED on node",
                                                    r"(?m)^node3\s")),
    "hpcjobs cancel JOBID": Expect(ended=True, out=(r"JOBID: already ended COMPLETED",)),
    "hpcjobs submit mpi --nodes 3 --wait -- python examples/mpi_allreduce.py":
        Expect(out=(r"ended COMPLETED, exit code 0",),
               job_out=(r"allreduce sum = 3 \(expected 3\) over 3 ranks on 3 hosts: OK",)),
    "hpcjobs plan vllm --model llama-2-70b --tensor-parallel-size 3":
        Expect(rc=2, out=(r"FAIL\s+heads\s+64 attention heads not divisible by TP 3",
                          r"verdict: REFUSED", r"suggestion: try --tensor-parallel-size 1")),
    "sbatch job_templates/mpi.sbatch python examples/mpi_allreduce.py":
        Expect(out=(SUBMITTED.pattern,), job_out=(MPI_OK,)),
    "sbatch --nodes=2 job_templates/train.sbatch examples/train_ddp.py --epochs 3":
        Expect(out=(SUBMITTED.pattern,), job_out=(r"rank 1 of 2 local_rank 0",
                                                  r"all_reduce sum = 1 \(expected 1\): OK",
                                                  r"training done: 3 epochs")),
    "srun -N3 python -m hpcjobs.launch -- python examples/train_ddp.py --epochs 1":
        Expect(out=(r"rank 2 of 3 local_rank 0 on node3", r"all_reduce sum = 3 \(expected 3\): OK",
                    r"training done: 1 epochs")),
    'eval "$(_HPCJOBS_COMPLETE=bash_source hpcjobs)"':
        Expect(probe="complete -p hpcjobs", out=(r"complete -o nosort -F _hpcjobs_completion hpcjobs",)),
}

NOT_RUN: dict[str, str] = {
    "./scripts/quickstart": "installs Debian packages and starts the sandbox, which scripts/test "
                            "(that runs this test) has done; benchmarks/quickstart_fresh.sh runs it "
                            "on a fresh Debian root (docs/benchmarks.md)",
    "./scripts/test": "it runs this test",
    "./scripts/install --frameworks": "installs software: scripts/test ran scripts/install --all first",
    "./scripts/install --vllm": "installs software: scripts/test ran scripts/install --all first",
    "./scripts/install --accounting": "installs MariaDB and slurmdbd, which CI's sandbox runs without",
    ". .venv/bin/activate": "the commands run with this interpreter's bin/ first on PATH, which is "
                            "what activating does for them",
}


def _strip_comment(line: str) -> str:
    """The line without a shell comment: a ``#`` at the start or after a blank, outside quotes."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def blocks(text: str, langs: tuple[str, ...]) -> list[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of each fenced block in one of ``langs``."""
    found, lang, start, body = [], None, 0, []
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*```\s*(\S*)", line)
        if m and lang is None:
            lang, start, body = m.group(1), n + 1, []
        elif m:
            if lang in langs:
                found.append((lang, start, body))
            lang = None
        elif lang is not None:
            body.append(line)
    return found


def readme_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) for every command line of the sh/bash/console blocks."""
    cmds = []
    for lang, start, body in blocks(text, ("sh", "bash", "console")):
        pending, first = "", 0
        for n, line in enumerate(body, start):
            if lang == "console" and not pending:
                if not line.startswith("$ "):
                    continue  # output
                line = line[2:]
            line = _strip_comment(line)
            if not pending and not line.strip():
                continue
            if not pending:
                first = n
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            cmds.append((first, " ".join((pending + line).split())))
            pending = ""
    return cmds


COMMANDS = readme_commands(README.read_text())
RUN = [(n, c) for n, c in COMMANDS if c in EXPECT]


def test_every_readme_command_is_run_or_listed():
    unknown = [f"README.md:{n}: {c}" for n, c in COMMANDS if c not in EXPECT and c not in NOT_RUN]
    assert not unknown, ("README commands neither run (EXPECT) nor listed with a reason (NOT_RUN) "
                         "in this test:\n" + "\n".join(unknown))
    have = {c for _, c in COMMANDS}
    stale = [c for c in [*EXPECT, *NOT_RUN] if c not in have]
    assert not stale, "entries for commands README.md no longer has:\n" + "\n".join(stale)


def test_comments_and_continuations_are_read_like_bash():
    text = ("```sh\nfoo 'a # b' \"#c\" x#y  # comment\n# only\n\nbar --x \\\n   --y  # z\n```\n"
            "```console\n$ baz 1\noutput # not a command\n```\n```python\nprint(1)\n```\n")
    assert readme_commands(text) == [(2, "foo 'a # b' \"#c\" x#y"), (5, "bar --x --y"), (9, "baz 1")]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """The user's environment with .venv/bin first on PATH, run records in a fresh directory
    (so that `hpcjobs status` lists this test's jobs) and the sandbox's own profile."""
    e = {k: v for k, v in os.environ.items() if k != "HPCJOBS_CLUSTER"}
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e["HPCJOBS_RUNS_DIR"] = str(tmp_path_factory.mktemp("readme") / "runs")
    return e


def sh(command: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@dataclass
class MainJob:
    job_id: str
    proc: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def submitted():
    """Every job id a command here submitted; those still queued are cancelled at the end."""
    ids: list[str] = []
    yield ids
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


@pytest.fixture(scope="module")
def main_job(sandbox, env, submitted) -> MainJob:
    """The README's main command, run as written: its job is the JOBID of the others."""
    sandbox.need(3)
    pytest.importorskip("torch", reason="the train kind needs torch (./scripts/install --frameworks)")
    p = sh(MAIN, env)
    m = SUBMITTED.search(p.stdout)
    assert p.returncode == 0 and m, f"{MAIN}: exit {p.returncode}\n{p.stdout}{p.stderr}"
    submitted.append(m.group(1))
    return MainJob(m.group(1), p)


def _job_output(job_id: str) -> str:
    """The output file of an ended job (its StdOut), removed afterwards where a plain sbatch
    left it in the repository root, with the monitor's samples beside it."""
    f = wait_job(job_id, timeout=180)
    path = Path(f.get("StdOut", "").replace("%j", job_id).replace("%A", job_id))
    out = path.read_text(errors="replace") if path.is_file() else ""
    if path.parent == ROOT:
        path.unlink(missing_ok=True)
        shutil.rmtree(ROOT / "hpcjobs-monitor" / job_id, ignore_errors=True)
    assert f.get("JobState") == "COMPLETED", f"job {job_id} {f.get('JobState')}:\n{out}"
    return out


@pytest.mark.parametrize("line,command", RUN, ids=[c[:60] for _, c in RUN])
def test_readme_command(line, command, sandbox, env, main_job, submitted):
    exp = EXPECT[command]
    jobid = main_job.job_id
    if exp.ended:
        wait_job(jobid, timeout=180)
    if command == MAIN:
        p = main_job.proc
    else:
        script = re.sub(r"\bJOBID\b", jobid, command) + (f"\n{exp.probe}" if exp.probe else "")
        p = sh(script, env)
    said = p.stdout + p.stderr
    where = f"README.md:{line}: {command}\nexit {p.returncode}\n{said}"
    assert p.returncode == exp.rc, where
    for pattern in exp.out:
        assert re.search(pattern.replace("JOBID", jobid), said), f"no /{pattern}/ in:\n{where}"
    if exp.check:
        exp.check(said)
    m = SUBMITTED.search(p.stdout)
    if m and command != MAIN:
        submitted.append(m.group(1))
    if exp.job_out:
        assert m, where
        out = _job_output(m.group(1))
        for pattern in exp.job_out:
            assert re.search(pattern, out), f"no /{pattern}/ in the output of job {m.group(1)}:\n{out}"


def test_readme_python_runs(sandbox, env):
    """README's Python blocks, run from the repository root; `print(...)  # X` must print X."""
    for _, start, body in blocks(README.read_text(), ("python",)):
        code = "\n".join(body)
        p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 0, f"README.md:{start}: exit {p.returncode}\n{p.stdout}{p.stderr}"
        for said in re.findall(r"^print\(.*\)\s+#\s*(.+)$", code, re.M):
            assert said.strip() in p.stdout.splitlines(), f"README.md:{start}: {said!r} not in\n{p.stdout}"
