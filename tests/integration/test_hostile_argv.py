"""Hostile input on the real sandbox: the program receives its argv and its --env values byte
for byte, Slurm reports the job name it was given and writes the output where it was asked,
and nothing in the corpus ever executes (a canary file that any executed string would create
stays absent).

Many strings ride in one job (a program that dumps its argv and environment as hex), so the
whole corpus costs a few jobs, not hundreds. Job names and output directories, one per job,
are checked on held jobs (sbatch parses the #SBATCH lines at submission; the job never runs)
and cancelled at once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
from tests.fixtures.hostile import corpus, dir_name_ok, encode, job_name_ok

DUMP = """\
import json, os, sys
res = {"argv": [os.fsencode(a).hex() for a in sys.argv[2:]],
       "env": {k.decode(): v.hex() for k, v in os.environb.items() if k.startswith(b"HV")},
       "leaked": sorted(k.decode() for k in os.environb if k.startswith(b"HPCJOBS_ARGV"))}
with open(sys.argv[1], "w") as f:
    json.dump(res, f)
print("dumped", len(res["argv"]), "args and", len(res["env"]), "variables", flush=True)
"""


@pytest.fixture
def work(shared_tmp):
    (shared_tmp / "dump.py").write_text(DUMP)
    canary = shared_tmp / "canary"
    yield shared_tmp, canary
    assert not canary.exists(), "a hostile string was executed"


def hpcjobs(*args, env):
    # Arguments are bytes on the way out: undecodable bytes (surrogates) go through as is.
    return subprocess.run([sys.executable, "-m", "hpcjobs", *args], capture_output=True,
                          env=env, cwd=ROOT, timeout=300)


def runs_env(tmp: Path) -> dict:
    return {**os.environ, "HPCJOBS_RUNS_DIR": str(tmp / "runs")}


def submit_dump(tmp: Path, args: list[str], env_values: list[str], *, job_name: str | None = None,
                output_dir: str | None = None) -> tuple[dict, str, Path]:
    result = tmp / f"result-{os.urandom(4).hex()}.json"
    argv = ["submit", "mpi", "--nodes", "1", "--wait", "--json"]
    if job_name is not None:
        argv += ["--job-name", job_name]
    if output_dir is not None:
        argv += ["--output-dir", output_dir]
    for i, s in enumerate(env_values):
        argv += ["--env", f"HV{i}={s}"]
    argv += ["--", sys.executable, str(tmp / "dump.py"), str(result), *args]
    r = hpcjobs(*argv, env=runs_env(tmp))
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out + r.stderr.decode(errors="replace")
    job_id = json.loads(out.splitlines()[0])["job_id"]
    return json.loads(result.read_text()), job_id, Path(json.loads(out.splitlines()[0])["run_dir"])


def scontrol_text(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True).stdout.decode(
        "utf-8", "surrogateescape")


def test_whole_corpus_reaches_the_program_byte_for_byte(sandbox, work):
    """All ~300 strings as arguments AND as --env values of one job, with a hostile job name and
    a hostile output directory; the program sees exactly those bytes."""
    tmp, canary = work
    strings = corpus(str(canary))
    name = f"$(touch {canary}) `touch {canary}` 'x' \"y\" # %j \\ ü ; hetjob"
    out_dir = tmp / f"out $(touch {canary.name}) 'q' \"d\" 100% #x"
    out_dir.mkdir()
    got, job_id, _ = submit_dump(tmp, strings, strings, job_name=name, output_dir=str(out_dir))
    assert got["argv"] == [encode(s).hex() for s in strings]
    assert got["env"] == {f"HV{i}": encode(s).hex() for i, s in enumerate(strings)}
    assert got["leaked"] == []  # the ":"-safe path cleans up after itself
    first = scontrol_text(job_id).split("\n")[0]
    assert first == f"JobId={job_id} JobName={name}"
    out = out_dir / f"slurm-{job_id}.out"
    assert f"dumped {len(strings)} args and {len(strings)} variables" in out.read_text()


def test_a_lone_colon_argument_survives_srun(sandbox, work):
    """srun reads an argument that is exactly ":" as a heterogeneous-step separator and has no
    escape for it ("Allocation failure of 1 nodes: job size of 1, already allocated 1 nodes to
    previous components"); the templates route such a command around srun's parser."""
    tmp, _ = work
    got, _, _ = submit_dump(tmp, [":", "a", ":", ":", "-", "--", ""], [":"])
    assert got["argv"] == [encode(s).hex() for s in [":", "a", ":", ":", "-", "--", ""]]
    assert got["env"] == {"HV0": encode(":").hex()}


@settings(max_examples=3, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                        max_size=30), min_size=1, max_size=40))
def test_property_random_argv_in_a_real_job(sandbox, work, args):
    tmp, _ = work
    got, _, _ = submit_dump(tmp, args, args[:5])
    assert got["argv"] == [encode(s).hex() for s in args]
    assert got["env"] == {f"HV{i}": encode(s).hex() for i, s in enumerate(args[:5])}


def _held(script: Path) -> str:
    r = subprocess.run(["sbatch", "--parsable", "--hold", str(script)], capture_output=True)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r.stdout.decode().strip().split(";")[0]


def test_slurm_reads_every_job_name_and_output_dir_as_given(sandbox, work):
    """sbatch's own parser on every rendered #SBATCH line: the name Slurm reports is the name
    given, the output path is the directory given (for every corpus string that can be one)."""
    from hpcjobs import api
    from hpcjobs.spec import JobSpec

    tmp, canary = work
    strings = corpus(str(canary))
    base = tmp / "dirs"
    base.mkdir()
    cases = []
    for i, s in enumerate(strings):
        if not (job_name_ok(s) or dir_name_ok(s)):
            continue
        name = s if job_name_ok(s) else None
        out_dir = None
        if dir_name_ok(s):
            out_dir = base / s
            out_dir.mkdir()
        script = api.render(JobSpec(kind="mpi", nodes=1, program=["true"], job_name=name,
                                    output_dir=str(out_dir) if out_dir else None)).script
        path = tmp / f"held-{i}.sbatch"
        path.write_bytes(encode(script))
        cases.append((name, out_dir, path))
    assert len(cases) >= 200
    mismatches = []
    for start in range(0, len(cases), 40):  # few held jobs in the shared queue at a time
        batch = cases[start:start + 40]
        ids = []
        try:
            for _, _, path in batch:
                ids.append(_held(path))
            for (name, out_dir, _), job_id in zip(batch, ids, strict=True):
                text = scontrol_text(job_id)
                first = text.split("\n")[0]  # not splitlines(): names may hold \v, \x85 ...
                if name is not None and first != f"JobId={job_id} JobName={name}":
                    mismatches.append(("name", name, first))
                # scontrol's StdOut display expands %-patterns but not %% (it shows the %%A of
                # a literal "%A" as "%<jobid>"): those directories are run for real below.
                if out_dir is not None and "%" not in out_dir.name:
                    std = re.search(r"^\s+StdOut=(.*)$", text, re.M).group(1)
                    pattern = str(out_dir) + "/slurm-%j.out"
                    if std not in (pattern, pattern.replace("%j", job_id)):
                        mismatches.append(("output", str(out_dir), std))
        finally:
            if ids:
                subprocess.run(["scancel", *ids], capture_output=True)
    assert mismatches == [], "\n".join(map(repr, mismatches))


@pytest.mark.parametrize("name,dirname", [
    ("%x %j %% %A", "100% %j %%"),
    ("%A_%a %u", "%A_%a %u %N %t %5j"),
    ("ünï 🚀 #x 'q", "#SBATCH --wrap=x"),
    ("-J evil --wrap=true", " lead and trail "),
])
def test_hostile_output_dir_receives_the_output(sandbox, work, name, dirname):
    """Run for real: the output file appears in the hostile directory under slurm-<jobid>.out,
    and `hpcjobs logs` finds it."""
    tmp, _ = work
    out_dir = tmp / dirname
    out_dir.mkdir()
    got, job_id, _ = submit_dump(tmp, ["x"], [], job_name=name, output_dir=str(out_dir))
    assert got["argv"] == [b"x".hex()]
    assert "dumped 1 args" in (out_dir / f"slurm-{job_id}.out").read_text()
    assert scontrol_text(job_id).split("\n")[0] == f"JobId={job_id} JobName={name}"
    logs = hpcjobs("logs", job_id, env=runs_env(tmp))
    assert logs.returncode == 0 and b"dumped 1 args" in logs.stdout


def test_unknown_partition_and_bad_array_never_reach_slurm(sandbox, work):
    tmp, canary = work
    mark = f"hostile-refused-{os.getpid()}"
    for args, field in [(["--partition", f"$(touch {canary})"], "--partition"),
                        (["--partition", "gpu\n#SBATCH --wrap=x"], "--partition"),
                        (["--array", f"1-3;touch {canary}"], "--array"),
                        (["--array", "`id`"], "--array")]:
        r = hpcjobs("submit", "mpi", "--job-name", mark, *args, "--", "true", env=runs_env(tmp))
        err = r.stderr.decode()
        assert r.returncode == 2 and err.startswith(f"hpcjobs: error: {field}"), err
        assert err.count("\n") == 1
    queued = subprocess.run(["squeue", "-h", "-n", mark, "-o", "%i"], capture_output=True, text=True)
    assert queued.stdout.strip() == ""
    assert not (tmp / "runs").exists() or not any((tmp / "runs").rglob("*"))
