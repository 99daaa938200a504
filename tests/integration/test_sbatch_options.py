"""Issue 11 on the real sandbox: the sbatch options reach slurmctld as given and it accepts them;
what only the live Slurm knows (its partition, its nodes, the jobs behind --after) is refused
before submission; small MPI jobs share a node; the GPU kinds and the direct bench scripts on
placeholder GPUs.

The sandbox's nodes have no features and it has no reservation: the test that sets every
option gives node1 a feature and makes a one-core reservation on it for the few seconds it
runs, and removes both (a whole-node reservation would hold back other tests' jobs).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import hpcjobs, run_job, wait_job

FEATURE = "hpcjobs_probe"


def _scontrol(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True)


@pytest.fixture
def feature_and_reservation(sandbox):
    """A node feature on node1 and a one-core reservation there, removed afterwards."""
    name = f"hpcjobs_test_{os.getpid()}"
    r = _scontrol("update", "NodeName=node1", f"AvailableFeatures={FEATURE}",
                  f"ActiveFeatures={FEATURE}")
    assert r.returncode == 0, r.stderr
    try:
        r = _scontrol("create", "reservation", f"ReservationName={name}", "StartTime=now",
                      "Duration=10", "Nodes=node1", "CoreCnt=1", "Users=root")
        assert r.returncode == 0, r.stderr
        try:
            yield name
        finally:
            _scontrol("delete", f"ReservationName={name}")
    finally:
        _scontrol("update", "NodeName=node1", "AvailableFeatures=", "ActiveFeatures=")


def held_job() -> str:
    """A job that never starts (held), to depend on."""
    r = subprocess.run(["sbatch", "--parsable", "--hold", "-J", "hpcjobs-held", "--time=1",
                        "--wrap", "true"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split(";")[0]


def common(reservation: str, held: str) -> list[str]:
    """Every first-class option but --mem/--mem-per-gpu and --exclusive, which exclude each
    other or the one-core reservation."""
    return ["--nodes", "1", "--time", "1", "--constraint", FEATURE, "--exclude", "node3",
            "--nodelist", "node1", "--mail-type", "END,FAIL", "--mail-user", "root",
            "--comment", 'issue 11: "every" option; $HOME #1', "--begin", "now+1minute",
            "--deadline", "now+2days", "--after", f"{held}:any", "--array", "0-3%2",
            "--sbatch-arg=--nice=5", "--sbatch-arg=--time-min=1"]


def test_scripts_with_every_option_are_accepted_by_slurmctld(sandbox, feature_and_reservation,
                                                              tmp_path, runs_env):
    """`sbatch --test-only` on rendered scripts; then a real (held) submission of each through
    hpcjobs (which asks the live Slurm first), and what slurmctld recorded of each option."""
    held = held_job()
    try:
        variants = {
            "reservation": ["--reservation", feature_and_reservation, "--mem", "1G",
                            "--gres", "gpu:v100s:1"],
            "exclusive": ["--exclusive", "--gpus-per-node", "1", "--mem-per-gpu", "2G"],
        }
        for name, extra in variants.items():
            args = [*common(feature_and_reservation, held), *extra]
            r = hpcjobs("render", "mpi", *args, "--", "true", env=runs_env)
            assert r.returncode == 0, r.stderr
            script = tmp_path / f"{name}.sbatch"
            script.write_text(r.stdout)
            t = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True,
                               text=True, cwd=tmp_path)
            assert t.returncode == 0 and "to start at" in t.stderr, (name, t.stderr, r.stdout)
            assert "on nodes node1 in partition gpu" in t.stderr, t.stderr

            r = hpcjobs("submit", "mpi", *args, "--sbatch-arg=--hold", "--json", "--", "true",
                        env=runs_env)
            assert r.returncode == 0, r.stderr
            sub = json.loads(r.stdout)
            try:
                f = job_fields(sub["job_id"])
                assert f["Features"] == FEATURE and f["ExcNodeList"] == "node3"
                assert f["ReqNodeList"] == "node1" and f["MailType"] == "END,FAIL"
                assert f["MailUser"] == "root" and f["Nice"] == "5"
                assert f["Dependency"].startswith(f"afterany:{held}")
                assert f["Deadline"] != "N/A" and f["TimeMin"] == "00:01:00"
                text = _scontrol("show", "job", sub["job_id"]).stdout
                assert f["Comment"].rstrip() == 'issue 11: "every" option; $HOME #1', text
                if name == "reservation":
                    assert f["Reservation"] == feature_and_reservation
                    assert "gres:gpu:v100s=1" in f.get("TresPerNode", "") or \
                        "gpu:v100s:1" in f.get("TresPerNode", ""), f
                    assert f["MinMemoryNode"] == "1G"
                else:
                    assert f["OverSubscribe"] == "NO" and "mem_per_gpu" not in f
                    # 22.05 writes gres:gpu, 24.11 gres/gpu
                    assert "2G" in text and re.search(r"MemPerTres=gres[:/]gpu:2048", text), text
                spec = json.loads((Path(sub["run_dir"]) / "spec.json").read_text())
                assert spec["constraint"] == FEATURE and spec["sbatch_args"][0] == "--nice=5"
            finally:
                subprocess.run(["scancel", sub["job_id"]], capture_output=True)
    finally:
        subprocess.run(["scancel", held], capture_output=True)


def job_fields(job_id: str) -> dict:
    from hpcjobs import slurm

    kv = getattr(slurm, "parse_kv", None) or slurm._kv  # made public by the watch work
    return kv(_scontrol("show", "job", "-o", job_id).stdout.splitlines()[0], job=True)


def no_job_named(name: str) -> bool:
    out = subprocess.run(["squeue", "--noheader", "-t", "all", "-n", name, "-o", "%i"],
                         capture_output=True, text=True).stdout
    return out.strip() == ""


def refused(args: list[str], words: str, env: dict) -> None:
    name = f"hpcjobs-refused-{uuid.uuid4().hex[:8]}"
    r = hpcjobs("submit", "mpi", "--job-name", name, *args, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("hpcjobs: error: ") and words in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and r.stdout == ""
    assert no_job_named(name), f"a job named {name} was submitted"
    runs = env.get("HPCJOBS_RUNS_DIR")
    assert not runs or not os.path.isdir(runs) or not any(os.scandir(runs))


def test_after_a_job_slurm_does_not_know_is_refused(sandbox, runs_env):
    """Slurm counts such a dependency as satisfied: the job started at once."""
    refused(["--after", "99999999", "--", "true"], "--after: Slurm does not know job 99999999", runs_env)


def test_after_a_job_that_ended_the_wrong_way(sandbox, runs_env, shared_tmp):
    failed = run_job([f"--output={shared_tmp}/f-%j.out", "--time=1", "--wrap", "false"])
    assert failed.state == "FAILED", failed
    refused(["--after", failed.job_id, "--", "true"],
            f"--after: job {failed.job_id} already ended FAILED, so afterok:{failed.job_id} can "
            "never be satisfied", runs_env)
    # afterany is satisfied by a failure: submitted, and it runs
    r = hpcjobs("submit", "mpi", "--nodes", "1", "--time", "2", "--after", f"{failed.job_id}:any",
                "--wait", "--", "hostname", env=runs_env)
    assert r.returncode == 0 and "ended COMPLETED" in r.stdout, r.stdout + r.stderr


def test_the_live_partition_overrules_a_profile_that_promises_more(sandbox, tmp_path, runs_env):
    """A profile claiming nine 2-GPU nodes with 400 GB, a 5-day MaxTime and a partition Slurm
    lacks: each claim passes the profile's checks and is refused from what Slurm says."""
    text = sandbox.profile_path.read_text()
    text = (text.replace('names = "node[1-3]"', 'names = "node[1-9]"')
            .replace('addresses = "10.200.0.[1-3]"', 'addresses = "10.200.0.[1-9]"')
            .replace('nodes = "node[1-3]"', 'nodes = "node[1-9]"')
            .replace('max_time = "2-00:00:00"', 'max_time = "5-00:00:00"')
            .replace("memory_mb = 191000", "memory_mb = 400000").replace("count = 1", "count = 2"))
    text += '\n[[partitions]]\nname = "big"\nnodes = "node[4-9]"\n'
    prof = tmp_path / "optimistic.toml"
    prof.write_text(text)
    env = {**runs_env, "HPCJOBS_CLUSTER": str(prof)}
    refused(["--time", "3-00:00:00", "--", "true"],
            "--time: 3-00:00:00 is above the MaxTime 2-00:00:00 of partition 'gpu'", env)
    refused(["--nodes", "5", "--", "true"], "partition 'gpu' has 3 (Slurm's TotalNodes)", env)
    refused(["--partition", "big", "--", "true"], "--partition: Slurm has no partition 'big'", env)
    refused(["--nodes", "1", "--gpus-per-node", "2", "--", "true"],
            "--gpus-per-node: 2 GPUs per node asked but 0 node(s)", env)
    refused(["--nodes", "1", "--mem", "300G", "--", "true"], "Slurm's RealMemory; at most 191000 MB", env)
    refused(["--nodes", "1", "--constraint", "nosuch", "--", "true"],
            "--constraint: no node of partition 'gpu' has feature 'nosuch'", env)
    # the profile alone (render, --dry-run: no Slurm asked) lets them through
    r = hpcjobs("submit", "mpi", "--nodes", "5", "--time", "3-00:00:00", "--dry-run", "--", "true",
                env=env)
    assert r.returncode == 0, r.stderr


RENDEZVOUS = """\
import os, sys, time
me, other, d = sys.argv[1], sys.argv[2], sys.argv[3]
open(os.path.join(d, me), "w").write(os.environ.get("SLURMD_NODENAME", "?"))
for _ in range(600):  # up to 60 s for the other job to start
    if os.path.exists(os.path.join(d, other)):
        print(f"{me} met {other} on {os.environ.get('SLURMD_NODENAME')}", flush=True)
        sys.exit(0)
    time.sleep(0.1)
print(f"{me} never met {other}", flush=True)
sys.exit(1)
"""


def test_two_small_mpi_jobs_run_at_once_on_one_node(sandbox, shared_tmp, runs_env):
    """Without --gpus-per-node an mpi job holds no GPU, so a second one fits beside it on the
    same node (each waits for the other's file: both complete only if both ran together). With
    a GPU each (the old default), the second waited for the first and both timed out here."""
    prog = shared_tmp / "rendezvous.py"
    prog.write_text(RENDEZVOUS)
    ids = []
    for me, other in (("a", "b"), ("b", "a")):
        r = hpcjobs("submit", "mpi", "--nodes", "1", "--nodelist", "node1", "--time", "3",
                    "--output-dir", str(shared_tmp), "--json", "--", sys.executable, str(prog), me,
                    other, str(shared_tmp), env=runs_env)
        assert r.returncode == 0, r.stderr
        ids.append(json.loads(r.stdout)["job_id"])
    for jid, me, other in zip(ids, "ab", "ba"):
        f = wait_job(jid, 150)
        out = (shared_tmp / f"slurm-{jid}.out").read_text()
        assert f["JobState"] == "COMPLETED" and f"{me} met {other} on node1" in out, (f, out)
        assert "gres" not in f.get("TresPerNode", "")


def test_deepspeeds_documented_command_on_placeholder_gpus(sandbox, runs_env):
    """docs/deepspeed.md's first command: fp16 on the sandbox's GRES-only GPUs ended in
    DeepSpeed's "Type fp16 is not supported on your device"; now fp32 with a notice."""
    sandbox.need(3)
    pytest.importorskip("deepspeed")
    r = hpcjobs("submit", "deepspeed", "--nodes", "3", "--time", "10", "--wait", "--",
                "examples/ds_zero3.py", "--steps", "20", env=runs_env, timeout=600)
    assert r.stderr.startswith("hpcjobs: notice: the GPUs of cluster 'sandbox' are placeholders"), r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    jid = re.search(r"Submitted batch job (\d+)", r.stdout).group(1)
    out = hpcjobs("logs", jid, env=runs_env).stdout
    assert "Traceback" not in out and "not supported on your device" not in out
    assert re.search(r"fp32", out), out[-2000:]


def test_the_direct_bench_script_judges_the_sandboxs_link(sandbox, tmp_path, shared_tmp):
    """The shipped script hard-coded EDR (100 Gb/s) for the verdict; rendered --direct now, it
    reads the sandbox's profile where it runs."""
    sandbox.need(2)
    r = hpcjobs("render", "bench-mpi", "--direct")
    assert r.returncode == 0 and "--link-gbps" not in r.stdout
    script = tmp_path / "bench-mpi.sbatch"
    script.write_text(r.stdout)
    env = {**os.environ, "HPCJOBS_PYTHON": sys.executable}
    # Results land where sbatch was called: the test's directory, not the checkout.
    job = run_job(["--nodes=2", "--time=5", f"--output={shared_tmp}/b-%j.out", str(script),
                   "--max-size=64K", "--iters=50"], env=env, timeout=180, cwd=shared_tmp)
    assert job.ok, job
    assert re.search(r"# link: 10 Gb/s ethernet \(from profile \S+cluster.toml \(the running "
                     r"sandbox\)\)", job.output), job.output
    verdict = next(ln for ln in job.output.splitlines() if ln.startswith("# verdict:"))
    assert "1.25 GB/s link (ethernet 10 Gb/s)" in verdict and "12.50 GB/s" not in verdict, verdict
