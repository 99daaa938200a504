"""`hpcjobs why`: the classification over recorded job output (tests/fixtures/triage/, most of
it real output of jobs failed on purpose on the sandbox; README.md there says which) and over
Slurm states alone. Real jobs: tests/integration/test_why.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from hpcjobs.triage import (PENDING_REASONS, RULES, Facts, classify, explain_reason,
                            first_failure, read_log, runs_of, split_runs)
from tests.conftest import FIXTURES, ROOT

TRIAGE = FIXTURES / "triage"


def verdict(name: str, **facts) -> list[str]:
    path = TRIAGE / name
    found = classify(Facts(job_id="1", log_path=str(path), log=read_log(path), **facts))
    return [f.key for f in found]


# (fixture, Slurm's state and exit code as scontrol reported them, primary cause, remarks)
CASES = [
    ("time_limit.out", dict(state="TIMEOUT", exit_code=0, signal=15), "time_limit", []),
    ("warning_unhandled.out", dict(state="FAILED", exit_code=140), "warning_unhandled",
     ["not_requeueable"]),
    ("requeued_resumed.out", dict(state="COMPLETED", exit_code=0, restarts=1), "completed",
     ["requeued"]),
    ("host_memoryerror.out", dict(state="FAILED", exit_code=1), "oom_host", []),
    ("host_killed.out", dict(state="FAILED", exit_code=137), "oom_killed", []),
    ("credential_revoked.out", dict(state="FAILED", exit_code=168, restarts=1), "cred_revoked",
     ["requeued"]),
    ("cgroup_oom.out", dict(state="OUT_OF_MEMORY", exit_code=0, signal=9), "oom_host", []),
    ("cuda_oom_then_nccl_timeout.out", dict(state="FAILED", exit_code=1), "oom_cuda",
     ["nccl_timeout"]),
    ("nccl_timeout.out", dict(state="FAILED", exit_code=134), "nccl_timeout", []),
    ("nccl_socket_completed.out", dict(state="COMPLETED", exit_code=0), "completed",
     ["nccl_socket"]),
    ("eaddrinuse_torch.out", dict(state="FAILED", exit_code=1), "port_in_use", []),
    ("port_in_use_launcher.out", dict(state="FAILED", exit_code=2), "port_in_use", []),
    ("missing_module.out", dict(state="FAILED", exit_code=1), "missing_module", []),
    ("command_not_found.out", dict(state="FAILED", exit_code=127), "missing_module", []),
    ("plain_exit.out", dict(state="FAILED", exit_code=3), "exit_code", []),
    ("node_failure.out", dict(state="NODE_FAIL", exit_code=0), "node_fail", []),
    ("abort_at_exit.out", dict(state="FAILED", exit_code=143), "abort_at_exit", ["nccl_socket"]),
]


@pytest.mark.parametrize("name,facts,cause,remarks", CASES, ids=[c[0] for c in CASES])
def test_recorded_output_is_classified(name, facts, cause, remarks):
    keys = verdict(name, **facts)
    assert keys[0] == cause, keys
    for r in remarks:
        assert r in keys[1:], keys


@pytest.mark.parametrize("name,facts,cause,remarks", CASES, ids=[c[0] for c in CASES])
def test_the_log_alone_is_enough_without_slurm(name, facts, cause, remarks):
    """Slurm forgot the job and there is no accounting: the output still tells the cause
    (time limit, node failure and the rest print their own line)."""
    if name == "cgroup_oom.out" or cause == "completed":
        pytest.skip("the success of a job is Slurm's word, not the log's")
    assert verdict(name, state="UNKNOWN")[0] == cause


def test_every_finding_has_evidence_and_a_fix():
    for name, facts, _, _ in CASES:
        path = TRIAGE / name
        for f in classify(Facts(job_id="1", log_path=str(path), log=read_log(path), **facts)):
            assert f.evidence and f.fix and f.cause, (name, f)
            assert "\n" not in f.evidence
    # Evidence from the output names the file and line.
    first = classify(Facts(job_id="1", log_path=str(TRIAGE / "missing_module.out"),
                           log=read_log(TRIAGE / "missing_module.out"), state="FAILED"))[0]
    assert first.evidence.startswith("missing_module.out:6: ModuleNotFoundError")


@pytest.mark.parametrize("state,reason,restarts,cause", [
    ("TIMEOUT", "TimeLimit", 0, "time_limit"),
    ("NODE_FAIL", "NodeDown", 0, "node_fail"),
    ("OUT_OF_MEMORY", "OutOfMemory", 0, "oom_host"),
    ("PREEMPTED", "", 0, "preempted"),
    ("CANCELLED", "", 0, "cancelled"),
    ("PENDING", "BeginTime", 1, "requeued"),
    ("RUNNING", "", 0, "running"),
    ("COMPLETED", "", 0, "completed"),
    ("FAILED", "NonZeroExitCode", 0, "exit_code"),
])
def test_slurm_state_alone(state, reason, restarts, cause):
    found = classify(Facts(job_id="9", state=state, reason=reason, restarts=restarts,
                           exit_code=0 if state != "FAILED" else 2, source="scontrol"))
    assert found[0].key == cause
    assert found[0].evidence.startswith("Slurm (scontrol): JobState=" + state)


def test_a_requeued_pending_job_says_how_to_release_it():
    f = classify(Facts(job_id="9", state="PENDING", reason="BeginTime", restarts=1))[0]
    assert "scontrol update jobid=9 StartTime=now" in f.fix


def test_cancelled_by_the_time_limit_is_a_time_limit():
    assert verdict("time_limit.out", state="CANCELLED")[0] == "time_limit"


def test_tasks_killed_by_srun_after_another_failure_are_not_oom():
    """--kill-on-bad-exit: srun kills the other ranks ("task 1: Killed") after one failed."""
    log = ["Traceback (most recent call last):", "ModuleNotFoundError: No module named 'x'",
           "srun: error: node1: task 0: Exited with exit code 1",
           "srun: launch/slurm: _step_signal: Terminating StepId=5.0",
           "srun: error: node2: task 1: Killed"]
    assert [f.key for f in classify(Facts(job_id="5", state="FAILED", exit_code=1, log=log))] \
        == ["missing_module"]


def test_completed_job_is_not_blamed_on_a_line_it_survived():
    """A MemoryError the program caught is not why a COMPLETED job ended."""
    found = classify(Facts(job_id="1", state="COMPLETED", exit_code=0,
                           log=["MemoryError", "retrying with smaller batches", "done"]))
    assert [f.key for f in found] == ["completed"]


def test_rules_are_unique_and_compile():
    import re

    assert len({r.key for r in RULES}) == len(RULES)
    for r in RULES:
        re.compile(r.pattern)


def test_cli_why_with_a_log_file_and_no_slurm(tmp_path):
    """`hpcjobs why JOBID --log FILE` on a machine whose Slurm does not answer: the log decides,
    Slurm's error is a note, exit 0; --json for scripts."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable),  # python, no Slurm commands
           "HPCJOBS_RUNS_DIR": str(tmp_path / "runs")}
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "why", "4711", "--log",
                        str(TRIAGE / "nccl_timeout.out"), "--json"], capture_output=True,
                       text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    assert v["cause"] == "nccl_timeout" and v["state"] == "UNKNOWN"
    assert any("Slurm did not answer" in n for n in v["notes"])
    text = subprocess.run([sys.executable, "-m", "hpcjobs", "why", "4711", "--log",
                           str(TRIAGE / "nccl_timeout.out")], capture_output=True, text=True,
                          env=env, cwd=ROOT).stdout
    assert "cause:    an NCCL collective timed out" in text
    assert "evidence: nccl_timeout.out:4: [rank0]" in text and "fix:      " in text


def test_cli_why_bad_job_id_is_exit_2(tmp_path):
    env = {**os.environ, "HPCJOBS_RUNS_DIR": str(tmp_path / "runs")}
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "why", "12;rm"], capture_output=True,
                       text=True, env=env, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.startswith("hpcjobs: error: JOBID")
    assert r.stderr.count("\n") == 1


# --- issue 11, point 9: the first failing rank, not the peers srun killed --------------------

def facts_of(name: str, **kw) -> Facts:
    path = TRIAGE / name
    return Facts(job_id="7", log_path=str(path), log=read_log(path), **kw)


# Real 3-node jobs on the sandbox whose rank 2 raised KeyError (README.md there); srun then
# SIGTERMed ranks 0 and 1, so the job's exit code is 143. The 24.11 file is the 22.05 one with
# srun's teardown line as 24.11's srun prints it.
KEYERROR = [
    ("rank_keyerror_mpi.out", "the only traceback in the output"),
    ("rank_keyerror_mpi_24.11.out", "the only traceback in the output"),
    ("rank_keyerror_torch.out", "torch's [rankN] prefix"),  # ranks 0, 1: RuntimeErrors too
    ("rank_keyerror_label.out", "srun --label"),
]


@pytest.mark.parametrize("name,how", KEYERROR, ids=[k[0] for k in KEYERROR])
def test_the_first_failing_rank_is_named_with_its_own_exit_code(name, how):
    facts = facts_of(name, state="FAILED", exit_code=143, source="scontrol",
                     details={"NumTasks": "3"})
    first = classify(facts)[0]
    assert first.key == "exit_code"
    assert first.cause.startswith("rank 2 on node3 failed first: exited with code 1 "
                                  "(KeyError: 'batch_size')"), first.cause
    assert "SIGTERM: the job's exit code 143" in first.cause
    assert first.evidence.endswith("KeyError: 'batch_size'")
    f = first_failure(facts)
    assert (f.rank, f.node, f.exit_code, f.attributed) == (2, "node3", 1, how)
    assert f.traceback[0] == "Traceback (most recent call last):"
    assert f.traceback[-1] == "KeyError: 'batch_size'" and 'cfg["batch_size"]' in f.traceback[2]
    assert f.evidence.endswith("srun: error: node3: task 2: Exited with exit code 1")


def test_why_json_carries_the_failing_rank_for_retry(tmp_path):
    """The verdict's data names the rank, the node (what --retry leaves out) and the rank's
    own exit code; `hpcjobs why` itself exits 0."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable),
           "HPCJOBS_RUNS_DIR": str(tmp_path / "runs")}
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "why", "21624883", "--log",
                        str(TRIAGE / "rank_keyerror_mpi.out"), "--json"], capture_output=True,
                       text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    assert v["cause"] == "exit_code"
    assert v["failure"]["rank"] == 2 and v["failure"]["node"] == "node3"
    assert v["failure"]["exit_code"] == 1 and v["failure"]["nodes"] == ["node3"]
    assert v["failure"]["exception"] == "KeyError: 'batch_size'"
    text = subprocess.run([sys.executable, "-m", "hpcjobs", "why", "21624883", "--log",
                           str(TRIAGE / "rank_keyerror_mpi.out")], capture_output=True,
                          text=True, env=env, cwd=ROOT).stdout
    assert "traceback of rank 2 on node3 (the only traceback in the output):" in text
    assert "\n    KeyError: 'batch_size'\n" in text


def test_several_unlabelled_tracebacks_say_that_the_rank_is_not_known():
    log = ["Traceback (most recent call last):", '  File "a.py", line 3, in <module>',
           "KeyError: 'x'",
           "Traceback (most recent call last):", '  File "a.py", line 9, in <module>',
           "RuntimeError: Connection closed by peer",
           "srun: error: node2: task 1: Exited with exit code 1",
           "srun: launch/slurm: _step_signal: Terminating StepId=5.0",
           "srun: error: node1: task 0: Exited with exit code 1"]
    facts = Facts(job_id="5", state="FAILED", exit_code=1, log=log)
    f = first_failure(facts)
    assert (f.rank, f.node, f.exit_code) == (1, "node2", 1)
    assert f.exception == "KeyError: 'x'" and "the first of 2 tracebacks" in f.attributed
    assert classify(facts)[0].cause.startswith("rank 1 on node2 failed first: exited with code "
                                               "1 (KeyError: 'x')")


def test_a_traceback_split_by_sruns_own_lines_is_whole():
    """srun writes its own lines into the file between a task's lines (real: the requeued
    job's first run, requeued_oom_then_exit.out lines 1-5)."""
    log = read_log(TRIAGE / "requeued_oom_then_exit.out")[:5]
    f = first_failure(Facts(job_id="1", log=log, details={"NumTasks": "1"}, state="FAILED",
                            exit_code=1, source="scontrol"))
    assert f.traceback == ["Traceback (most recent call last):",
                           '  File "<string>", line 1, in <module>', "MemoryError"]


def test_signals_after_the_first_failure_are_not_the_cause():
    """24.11's srun prints "Terminating StepId" without 22.05's plugin prefix; the tasks it then
    kills ("Killed") are not out of memory, and a side step's "User defined signal 1" (the
    monitor, stopped by USR1) is not the warning signal."""
    log = ["ValueError: bad", "srun: error: node1: task 0: Exited with exit code 2",
           "srun: Terminating StepId=9.1", "srun: error: node2: task 1: Killed",
           "srun: error: node1: task 0: User defined signal 1"]
    found = classify(Facts(job_id="9", state="FAILED", exit_code=2, log=log))
    assert [f.key for f in found] == ["exit_code"]
    assert found[0].cause.startswith("rank 0 on node1 failed first: exited with code 2")


def test_a_node_failure_names_the_node_to_exclude():
    facts = facts_of("node_failure.out", state="NODE_FAIL", exit_code=0)
    first = classify(facts)[0]
    assert first.key == "node_fail" and "--exclude node3" in first.fix
    f = first_failure(facts)
    assert f.node_failure and f.nodes == ["node3"] and f.rank is None


# --- point 10: dependencies, pending reasons, the last run of a requeued job -----------------

def scontrol_facts(path) -> Facts:
    """Facts as gather() makes them from `scontrol show job -o` (recorded on 22.05 and 24.11)."""
    from hpcjobs.slurm import parse_kv, parse_scontrol_job

    text = path.read_text()
    st = parse_scontrol_job(text)[0]
    return Facts(st.job_id, state=st.state, exit_code=st.exit_code, signal=st.signal,
                 reason=st.reason, restarts=st.restarts, elapsed=st.elapsed, source="scontrol",
                 details=parse_kv(text.splitlines()[0], job=True))


@pytest.mark.parametrize("version,dep", [("22.05", "21624908"), ("24.11", "3")])
def test_a_dependency_that_can_never_be_met_is_not_blamed_on_scancel(version, dep):
    """--kill-on-invalid-dep=yes (the templates' setting): Slurm cancels the job when the job
    it waits for (afterok) fails; its reason stays DependencyNeverSatisfied (22.05: a real job,
    tests/fixtures/triage/slurm/22.05; 24.11: slurmctld's _kill_dependent on 24.11's record)."""
    facts = scontrol_facts(TRIAGE / "slurm" / version /
                           "scontrol_show_job_dependency_cancelled.out")
    facts.dependencies = {dep: "ended FAILED, exit code 3"}
    found = classify(facts)
    assert [f.key for f in found] == ["dependency"]
    assert found[0].cause == (f"the job never ran: its dependency can never be satisfied: "
                              f"afterok:{dep} needs job {dep} to have ended successfully "
                              f"(COMPLETED), but it ended FAILED, exit code 3; Slurm cancelled "
                              f"it (kill_invalid_depend / --kill-on-invalid-dep=yes)")
    assert f"Dependency=afterok:{dep}(failed)" in found[0].evidence
    assert f"`hpcjobs why {dep}`" in found[0].fix and f"--after {dep}:any" in found[0].fix


@pytest.mark.parametrize("version", ["22.05", "24.11"])
@pytest.mark.parametrize("name,key,words,fix", [
    ("dependency", "dependency", "the job can never run: its dependency", "cancel it "
     "(`hpcjobs cancel 16`)"),
    ("held", "pending", "held by its owner", "`scontrol release 15`"),
    ("partition_time_limit", "pending", "above its partition's MaxTime",
     "`scontrol show partition gpu`"),
    ("pending_begin", "pending", "earliest start time has not come yet",
     "`scontrol update jobid=14 StartTime=now`"),
    ("resources", "pending", "in use by other jobs", "--time"),
])
def test_a_pending_job_says_why_it_pends(version, name, key, words, fix):
    """Slurm's reasons for pending jobs recorded on both versions (tests/fixtures/slurm/)."""
    facts = scontrol_facts(FIXTURES / "slurm" / version / f"scontrol_show_job_{name}.out")
    first = classify(facts)[0]
    assert first.key == key and words in first.cause and fix in first.fix, first
    if name == "partition_time_limit":
        assert "TimeLimit=3-00:00:00 in partition gpu" in first.cause
    if name in ("pending_begin", "resources"):
        assert "Slurm expects it to start at 2026-11-27T" in first.cause


def test_a_job_waiting_for_its_dependency_names_that_job():
    facts = Facts("20", state="PENDING", reason="Dependency", source="squeue",
                  details={"Dependency": "afterok:19(unfulfilled)"},
                  dependencies={"19": "is RUNNING"})
    first = classify(facts)[0]
    assert first.key == "pending" and "it waits for job 19, which is RUNNING" in first.cause
    assert "`hpcjobs status 19`" in first.fix


REASONS = [ln for ln in (TRIAGE / "slurm" / "pending_reasons.txt").read_text().splitlines()
           if ln and not ln.startswith("#")]


@pytest.mark.parametrize("reason", REASONS)
def test_every_pending_reason_slurm_names_is_explained(reason):
    """Every reason string of 22.05's and 24.11's job_reason_string() that a pending job can
    show (the file; ended-job reasons such as NonZeroExitCode are not in it) has a meaning and
    a fix."""
    found = explain_reason(reason)
    assert found and all(found), reason


def test_accounting_limits_are_read_from_their_names():
    what, fix = explain_reason("QOSMaxJobsPerUserLimit")
    assert what == "its QOS's limit on jobs per user is reached" and "another --qos" in fix
    what, fix = explain_reason("AssocGrpGRES")
    assert "GRES" in what and "of all its jobs together" in what and "--gpus-per-node" in fix
    what, fix = explain_reason("QOSMaxWallDurationPerJobLimit")
    assert "never starts" in what and "--time" in fix
    assert explain_reason("ReqNodeNotAvail, UnavailableNodes:node3")[1].startswith(
        "leave such nodes out (--exclude")
    assert explain_reason("NoSuchReasonAtAll") is None


def test_after_a_requeue_the_last_run_is_judged_and_the_first_is_a_remark():
    """A real job (--requeue): run 1 died of MemoryError, `scontrol requeue`, run 2 exited 3.
    The output holds both (--open-mode=append); the restart line splits them."""
    facts = facts_of("requeued_oom_then_exit.out", state="FAILED", exit_code=3, restarts=1,
                     source="scontrol", details={"NumTasks": "1"})
    found = classify(facts)
    assert found[0].key == "exit_code", found
    assert found[0].cause.startswith("rank 0 on node1 failed first: exited with code 3 (error: "
                                     "input file is empty)")
    assert found[0].evidence == "requeued_oom_then_exit.out:7: error: input file is empty"
    earlier = [f for f in found if f.run is not None]
    assert len(earlier) == 1 and earlier[0].cause == ("run 1 of 2 ended: out of memory on the "
                                                      "host (RAM)")
    assert (earlier[0].key, earlier[0].run) == ("oom_host", 1)
    assert earlier[0].evidence == "requeued_oom_then_exit.out:5: MemoryError"
    assert all(f.run is None for f in found if f.key != "oom_host")
    assert any("holds 2 runs" in n for n in facts.notes)


def test_a_requeued_job_waiting_to_run_again_says_how_its_last_run_ended():
    log = read_log(TRIAGE / "requeued_oom_then_exit.out")[:5]  # run 1 only, as it waits
    found = classify(Facts("9", state="PENDING", reason="BeginTime", restarts=1,
                           source="squeue", log=log, log_path="slurm-9.out"))
    assert [(f.key, f.run) for f in found] == [("requeued", None), ("oom_host", 1)]
    assert found[1].cause == "run 1 of 2 ended: out of memory on the host (RAM)"
    assert "scontrol update jobid=9 StartTime=now" in found[0].fix


def test_runs_split_where_slurm_requeued_when_the_script_printed_no_restart_line():
    """Older scripts print no restart line: slurmstepd's "DUE TO NODE FAILURE" (a real first
    run) ends run 1, srun's teardown lines after it still belong to it; then a second run."""
    log = read_log(TRIAGE / "node_failure.out")[:-1] + ["error: quota exceeded",
                                                         "srun: error: node1: task 0: Exited "
                                                         "with exit code 3", ""]
    runs = split_runs(log)
    assert runs == [(0, 13), (13, 16)]
    found = classify(Facts(job_id="1061", state="FAILED", exit_code=3, restarts=1, log=log,
                           source="scontrol"))
    assert found[0].cause.startswith("rank 0 on node1 failed first: exited with code 3")
    assert any((f.key, f.run) == ("node_fail", 1) and "a node failed during the job (node3)"
               in f.cause for f in found)


def test_slurm_saying_no_restart_means_one_run():
    log = read_log(TRIAGE / "requeued_resumed.out")
    assert len(split_runs(log)) == 2
    assert runs_of(Facts("48", state="COMPLETED", source="scontrol", log=log)) == [(0, len(log))]


# --- point 11: every fix names options hpcjobs has ------------------------------------------

def _options(*command: str) -> set[str]:
    from click.testing import CliRunner

    from hpcjobs.cli import main

    out = CliRunner().invoke(main, [*command, "--help"], catch_exceptions=False).output
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", out))


def _named(fix: str) -> list[tuple[str, str]]:
    """(command, option) for each option a fix names: outside backticks hpcjobs submit's,
    inside `hpcjobs CMD ...` that command's; other tools' commands (`srun -N1 ...`) are theirs.
    --sbatch-arg=--X passes X to sbatch: only --sbatch-arg is hpcjobs'."""
    out = []
    for i, part in enumerate(fix.split("`")):
        quoted = i % 2 == 1
        words = part.split()
        if quoted and words[:1] != ["hpcjobs"]:
            continue
        cmd = " ".join(words[:2]) if quoted else "hpcjobs submit"
        for opt in re.findall(r"(?<![\w=-])(--[a-z][a-z0-9-]*)", part):
            out.append((cmd, opt))
    return out


def _all_fixes() -> list[str]:
    fixes = [r.fix for r in RULES] + [fix for _, fix in PENDING_REASONS.values()]
    fixes += [explain_reason(r)[1] for r in REASONS]
    cases = CASES + [(n, dict(state="FAILED", exit_code=143), "", []) for n, _ in KEYERROR]
    cases += [("requeued_oom_then_exit.out", dict(state="FAILED", exit_code=3, restarts=1), "",
               [])]
    for name, facts, _, _ in cases:
        fixes += [f.fix for f in classify(facts_of(name, **facts))]
    for version in ("22.05", "24.11"):
        for f in (TRIAGE / "slurm" / version).glob("*.out"):
            fixes += [x.fix for x in classify(scontrol_facts(f))]
        for f in (FIXTURES / "slurm" / version).glob("scontrol_show_job_*.out"):
            if f.read_text().startswith("JobId="):
                fixes += [x.fix for x in classify(scontrol_facts(f))]
    return fixes


def test_every_fix_names_only_options_hpcjobs_has():
    """The OOM advice said "sbatch --mem / --mem-per-cpu"; hpcjobs has --mem and --mem-per-gpu.
    Every fix (the rules', the pending reasons', and those classify() writes for the recorded
    jobs) names only options that `hpcjobs submit KIND --help` lists for every kind."""
    from hpcjobs.kinds import KINDS

    submit = set.intersection(*(_options("submit", k) for k in KINDS))
    assert {"--mem", "--mem-per-gpu", "--time", "--requeue", "--exclude"} <= submit
    helps = {"hpcjobs submit": submit}
    bad = []
    for fix in _all_fixes():
        for cmd, opt in _named(fix):
            if cmd not in helps:
                helps[cmd] = _options(*cmd.split()[1:])
            if opt not in helps[cmd]:
                bad.append((cmd, opt, fix))
    assert not bad, bad
