"""Exact-text tests of hpcjobs.slurm's parsers on output recorded from real runs of Slurm 22.05
(Debian 12) and 24.11 (Debian 13): tests/fixtures/slurm/<version>/, written by
scripts/record-slurm-fixtures (see tests/fixtures/slurm/README.md). Job ids are the ones of
that run (jobs.json)."""

from __future__ import annotations

import json
import subprocess

import pytest

from hpcjobs import slurm
from tests.conftest import FIXTURES

VERSIONS = ["22.05", "24.11"]


class Run:
    """One version's recorded run."""

    def __init__(self, version: str):
        self.version = version
        self.dir = FIXTURES / "slurm" / version
        self.captures = json.loads((self.dir / "captures.json").read_text())
        self.jobs = json.loads((self.dir / "jobs.json").read_text())

    def out(self, name: str) -> str:
        return (self.dir / f"{name}.out").read_text()

    def proc(self, name: str) -> subprocess.CompletedProcess:
        err = self.dir / f"{name}.err"
        c = self.captures[name]
        return subprocess.CompletedProcess(c["argv"], c["rc"], self.out(name),
                                           err.read_text() if err.exists() else "")

    def job(self, case: str) -> slurm.JobStatus:
        (st,) = slurm.parse_scontrol_job(self.out(f"scontrol_show_job_{case}"))
        return st


@pytest.fixture(params=VERSIONS)
def rec(request) -> Run:
    return Run(request.param)


def test_recorded_versions():
    for v, debian in (("22.05", "12."), ("24.11", "13.")):
        ver = Run(v).captures["_version"]
        assert ver["slurmd -V"].startswith(f"slurm-wlm {v}.") and ver["debian"].startswith(debian)


# --- sbatch --parsable ------------------------------------------------------------------------

def test_sbatch_parsable(rec):
    for case, jid in rec.jobs.items():
        assert rec.out(f"sbatch_{case}") == f"{jid}\n"
        assert slurm.parse_sbatch(rec.out(f"sbatch_{case}")) == jid
    assert slurm.parse_sbatch("42;cluster2\n") == "42"  # --parsable with a cluster name


def test_sbatch_unexpected_output_is_an_error():
    with pytest.raises(slurm.SlurmError, match="unexpected output"):
        slurm.parse_sbatch("Submitted batch job 7\n")


# --- scontrol show job -o ---------------------------------------------------------------------

# case: (state, reason, exit code, signal, nodes); reasons that differ by version are below.
FINAL = {
    "completed": ("COMPLETED", "", 0, 0, "node1"),
    "failed": ("FAILED", "NonZeroExitCode", 3, 0, "node1"),
    "timeout": ("TIMEOUT", "TimeLimit", 0, 15, "node1"),
    "cancelled": ("CANCELLED", "", 0, 15, "node1"),
    "running": ("RUNNING", "", 0, 0, "node1"),
    "pending_begin": ("PENDING", "BeginTime", 0, 0, ""),
    "held": ("PENDING", "JobHeldUser", 0, 0, ""),
    "dependency": ("PENDING", "DependencyNeverSatisfied", 0, 0, ""),
    "partition_time_limit": ("PENDING", "PartitionTimeLimit", 0, 0, ""),
    "resources": ("PENDING", "Resources", 0, 0, ""),
    "requeued": ("PENDING", "BeginTime", 0, 0, ""),
}


@pytest.mark.parametrize("case", sorted(FINAL))
def test_scontrol_job_states(rec, case):
    st = rec.job(case)
    assert (st.state, st.reason, st.exit_code, st.signal, st.nodes) == FINAL[case]
    assert st.job_id == rec.jobs[case] and st.source == "scontrol" and st.partition == "gpu"


def test_scontrol_signal_exit_0_9(rec):
    """``kill -9 $$`` in the batch script: ExitCode=0:9 on both; the reason differs."""
    st = rec.job("signal")
    assert (st.state, st.exit_code, st.signal) == ("FAILED", 0, 9)
    assert "ExitCode=0:9 " in rec.out("scontrol_show_job_signal")
    assert st.reason == {"22.05": "JobLaunchFailure", "24.11": "RaisedSignal:9(Killed)"}[rec.version]


def test_scontrol_exit_3_is_3_0(rec):
    assert " ExitCode=3:0 " in rec.out("scontrol_show_job_failed")
    assert rec.job("failed").exit_code == 3


def test_scontrol_name_with_spaces_and_equals(rec):
    line = rec.out("scontrol_show_job_spaces")
    assert "JobName=my job a=b  two UserId=root(0)" in line
    st = rec.job("spaces")
    assert st.name == "my job a=b  two"  # the "a=" inside is not a key; the double blank stays
    assert st.state == "COMPLETED" and st.nodes == "node1"
    assert st.stdout == f"/tmp/fx/my job a=b  two-{rec.jobs['spaces']}.out"
    kv = slurm.parse_kv(line, job=True)
    assert "a" not in kv and kv["UserId"] == "root(0)" and kv["WorkDir"] == "/src/hpcjobs"


def test_scontrol_stdout_is_expanded_on_both(rec):
    """sbatch -o /tmp/fx/%x-%j.out: scontrol shows it expanded on 22.05 too (only 22.05's
    squeue --json keeps the pattern)."""
    jid = rec.jobs["completed"]
    assert rec.job("completed").stdout == f"/tmp/fx/completed-{jid}.out"


def test_scontrol_requeued_counts_restarts(rec):
    st = rec.job("requeued")
    assert st.restarts == 1 and st.nodes == ""
    assert " NodeList= " in rec.out("scontrol_show_job_requeued")  # empty, not (null)


def test_scontrol_array_tasks(rec):
    a = rec.jobs["array"]
    got = {s.job_id: (s.state, s.exit_code) for s in
           slurm.parse_scontrol_job(rec.out("scontrol_show_job_array"))}
    assert got == {f"{a}_0": ("COMPLETED", 0), f"{a}_1": ("FAILED", 1), f"{a}_2": ("FAILED", 2)}
    (task,) = slurm.parse_scontrol_job(rec.out("scontrol_show_job_array_task"))
    assert (task.job_id, task.state, task.exit_code) == (f"{a}_1", "FAILED", 1)


def test_scontrol_throttled_array_pending_tasks(rec):
    """--array=0-3%1: task 0 runs, tasks 1-3 are one record "ArrayTaskId=1-3%1"."""
    t = rec.jobs["array_throttled"]
    assert f"JobId={t} ArrayJobId={t} ArrayTaskId=1-3%1 ArrayTaskThrottle=1 " \
           "JobName=array throttled " in rec.out("scontrol_show_job_array_throttled")
    got = {s.job_id: (s.state, s.reason, s.name) for s in
           slurm.parse_scontrol_job(rec.out("scontrol_show_job_array_throttled"))}
    assert got == {f"{t}_0": ("RUNNING", "", "array throttled"),
                   f"{t}_[1-3]": ("PENDING", "JobArrayTaskLimit", "array throttled")}


def test_scontrol_all_jobs(rec):
    text = rec.out("scontrol_show_job_all")
    got = slurm.parse_scontrol_job(text)
    assert len(got) == text.count("\nJobId=") + 1
    ids = {s.job_id.split("_")[0] for s in got}
    assert set(rec.jobs.values()) <= ids
    assert all(s.state in slurm.FINAL_STATES | {"PENDING", "RUNNING"} for s in got)


def test_kv_keeps_values_exact(rec):
    kv = slurm.parse_kv(rec.out("scontrol_show_job_timeout"), job=True)
    assert kv["JobState"] == "TIMEOUT" and kv["RunTime"] == "00:01:27"
    assert kv["AllocNode:Sid"].endswith(":0") and kv["ReqB:S:C:T"] == "0:0:*:*"
    assert kv["CPUs/Task"] == "1" and kv["StdIn"] == "/dev/null"
    # 22.05 ends the line with "Power= ", 24.11 with "StdOut=... ".
    if rec.version == "22.05":
        assert kv["Power"] == "" and kv["TRES"].startswith("cpu=1,mem=5968M")
    else:
        assert "Power" not in kv and kv["ReqTRES"].startswith("cpu=1,mem=5968M")
    # Every key of both versions is one the parser knows (a free-text value ends at them).
    for line in rec.out("scontrol_show_job_all").splitlines():
        assert set(slurm.parse_kv(line, job=True)) <= slurm.JOB_KEYS, line[:80]


def test_kv_free_text_ends_only_at_known_keys():
    line = ("JobId=7 JobName=x Partition=y UserId=u(1) GroupId=g(1) JobState=RUNNING "
            "WorkDir=/data/run LR=0.1 StdOut=/data/run LR=0.1/out.txt Power=")
    kv = slurm.parse_kv(line, job=True)
    assert kv["JobName"] == "x Partition=y" and kv["WorkDir"] == "/data/run LR=0.1"
    assert kv["StdOut"] == "/data/run LR=0.1/out.txt" and kv["Power"] == ""
    # Without job=True (doctor's node lines) every capitalised key counts.
    assert slurm.parse_kv("NodeName=node1 State=IDLE Reason=x y [root@2024]")["Reason"] == "x y [root@2024]"


# --- squeue --noheader --array -o SQUEUE_FORMAT ----------------------------------------------

def test_squeue(rec):
    text = rec.out("squeue")
    assert "\x1f" in text and rec.captures["squeue"]["argv"][-1] == slurm.SQUEUE_FORMAT
    got = {s.job_id: (s.state, s.reason, s.nodes, s.name) for s in slurm.parse_squeue(text)}
    j, t = rec.jobs, rec.jobs["array_throttled"]
    assert got[j["running"]] == ("RUNNING", "", "node1", "running")
    assert got[f"{t}_0"] == ("RUNNING", "", "node1", "array throttled")
    for k in (1, 2, 3):
        assert got[f"{t}_{k}"] == ("PENDING", "JobArrayTaskLimit", "", "array throttled")
    assert got[j["pending_begin"]] == ("PENDING", "BeginTime", "", "pending begin")
    assert got[j["held"]] == ("PENDING", "JobHeldUser", "", "held")
    assert got[j["dependency"]] == ("PENDING", "DependencyNeverSatisfied", "", "dependency")
    assert got[j["partition_time_limit"]] == ("PENDING", "PartitionTimeLimit", "", "too long")
    assert got[j["resources"]] == ("PENDING", "Resources", "", "resources")
    assert got[j["requeued"]] == ("PENDING", "BeginTime", "", "requeued")
    assert j["completed"] not in got  # finished jobs are not in squeue
    assert all(s.partition == "gpu" and s.source == "squeue" for s in slurm.parse_squeue(text))
    assert len(got) == len(text.splitlines())


def test_squeue_selected_jobs(rec):
    """-j running,throttled,completed: the completed job is simply absent (no error)."""
    got = [s.job_id for s in slurm.parse_squeue(rec.out("squeue_jobs"))]
    t = rec.jobs["array_throttled"]
    assert sorted(got) == sorted([rec.jobs["running"], f"{t}_0", f"{t}_1", f"{t}_2", f"{t}_3"])
    assert rec.captures["squeue_jobs"]["rc"] == 0


def test_squeue_running_elapsed(rec):
    (st,) = [s for s in slurm.parse_squeue(rec.out("squeue")) if s.job_id == rec.jobs["running"]]
    assert st.elapsed in ("1:27", "1:28")  # %M: minutes:seconds


# --- sacct -P -n -X -o SACCT_FIELDS ----------------------------------------------------------

SACCT = {  # case: (state, exit code, signal, nodes)
    "timeout": ("TIMEOUT", 0, 0, "node1"),  # sacct says 0:0 where scontrol says 0:15
    "completed": ("COMPLETED", 0, 0, "node1"),
    "failed": ("FAILED", 3, 0, "node1"),
    "signal": ("FAILED", 0, 9, "node1"),
    "spaces": ("COMPLETED", 0, 0, "node1"),
    "running": ("RUNNING", 0, 0, "node1"),
    "cancelled": ("CANCELLED", 0, 0, "node1"),  # "CANCELLED by 0"
    "pending_begin": ("PENDING", 0, 0, ""),  # "None assigned"
    "held": ("PENDING", 0, 0, ""),
    "requeued": ("PENDING", 0, 0, ""),
}


def test_sacct(rec):
    text = rec.out("sacct")
    assert rec.captures["sacct"]["argv"][5] == slurm.SACCT_FIELDS
    got = {s.job_id: s for s in slurm.parse_sacct(text)}
    for case, want in SACCT.items():
        s = got[rec.jobs[case]]
        assert (s.state, s.exit_code, s.signal, s.nodes) == want, case
        assert s.source == "sacct" and s.partition == "gpu"
    assert "|CANCELLED by 0|" in text and "|None assigned\n" in text
    assert got[rec.jobs["spaces"]].name == "my job a=b  two"
    assert got[rec.jobs["timeout"]].elapsed == "00:01:27"
    a, t = rec.jobs["array"], rec.jobs["array_throttled"]
    assert [(got[f"{a}_{k}"].state, got[f"{a}_{k}"].exit_code) for k in range(3)] == \
           [("COMPLETED", 0), ("FAILED", 1), ("FAILED", 2)]
    assert f"\n{t}_[1-3%1]|array throttled|" in text
    assert got[f"{t}_[1-3]"].state == "PENDING" and got[f"{t}_0"].state == "RUNNING"


def test_sacct_steps_and_array_task(rec):
    steps = {s.job_id: (s.state, s.exit_code, s.signal) for s in
             slurm.parse_sacct(rec.out("sacct_steps"))}
    f, g = rec.jobs["failed"], rec.jobs["signal"]
    assert steps[f] == ("FAILED", 3, 0) and steps[f"{f}.batch"] == ("FAILED", 3, 0)
    assert steps[g] == ("FAILED", 0, 9) and steps[f"{g}.batch"] == ("CANCELLED", 0, 9)
    (task,) = slurm.parse_sacct(rec.out("sacct_array_task"))
    assert (task.job_id, task.state, task.exit_code) == (f"{rec.jobs['array']}_1", "FAILED", 1)


def test_sacct_unknown_job_is_empty(rec):
    assert rec.captures["sacct_invalid_job"]["rc"] == 0 and rec.out("sacct_invalid_job") == ""
    assert slurm.parse_sacct("") == []


def test_sacct_name_with_a_bar():
    (s,) = slurm.parse_sacct("12|a|b c|gpu|FAILED|2:0|00:00:01|node[1-2]\n")
    assert (s.job_id, s.name, s.state, s.exit_code, s.nodes) == ("12", "a|b c", "FAILED", 2,
                                                                 "node[1-2]")


def test_sacct_json_exit_code_bug_on_22_05():
    """Why hpcjobs reads ``sacct -P``: 22.05's ``sacct --json`` says SUCCESS/0 for exit 3;
    24.11 says 3 (and wraps numbers as {set, infinite, number}, states in lists)."""
    old = json.loads(Run("22.05").out("sacct_json_failed"))["jobs"][0]
    assert old["exit_code"] == {"status": "SUCCESS", "return_code": 0}
    assert old["state"]["current"] == "FAILED"
    new = json.loads(Run("24.11").out("sacct_json_failed"))["jobs"][0]
    assert new["exit_code"]["return_code"] == {"set": True, "infinite": False, "number": 3}
    assert new["state"]["current"] == ["FAILED"]
    for v in VERSIONS:  # the same job, through -P: 3:0
        assert "|FAILED|3:0|" in Run(v).out("sacct")


# --- accounting detection ---------------------------------------------------------------------

def test_accounting_detection(rec):
    on, off = rec.out("scontrol_show_config"), rec.out("scontrol_show_config_noacct")
    assert "AccountingStorageType   = accounting_storage/slurmdbd\n" in on
    want_off = {"22.05": "accounting_storage/none", "24.11": "(null)"}[rec.version]
    assert f"AccountingStorageType   = {want_off}\n" in off
    assert slurm.accounting_in_config(on) is True
    assert slurm.accounting_in_config(off) is False
    assert slurm.accounting_in_config("") is False


def test_sacct_without_accounting(rec):
    p = rec.proc("sacct_noacct")
    assert p.returncode == 1 and p.stderr == "Slurm accounting storage is disabled\n"
    assert slurm._message(p) == "Slurm accounting storage is disabled"


# --- Slurm's error messages -------------------------------------------------------------------

ERRORS = {  # capture: the one line hpcjobs shows (Slurm's own)
    "sbatch_invalid_partition":  # the verdict, then the line before it that names the value
        "sbatch: error: Batch job submission failed: Invalid partition name specified "
        "(invalid partition specified: nope)",
    "sbatch_too_many_gpus":
        "sbatch: error: Batch job submission failed: Requested node configuration is not available",
    "sbatch_bad_time": "sbatch: error: Invalid --time specification",
    "sbatch_missing_script": "sbatch: error: Unable to open file /nonexistent/job.sh",
    "scontrol_show_job_invalid": "slurm_load_jobs error: Invalid job id specified",
    "squeue_invalid_job": "slurm_load_jobs error: Invalid job id specified",
    "noconf_sbatch": "sbatch: fatal: Could not establish a configuration source",
    "noconf_squeue": "squeue: fatal: Could not establish a configuration source",
    "frozen_squeue": "slurm_load_jobs error: Socket timed out on send/recv operation",
    "frozen_sbatch": "sbatch: error: Batch job submission failed: Socket timed out on send/recv "
                     "operation",
    "frozen_scontrol_show_job": "slurm_load_jobs error: Socket timed out on send/recv operation",
    "down_squeue": "slurm_load_jobs error: Unable to contact slurm controller (connect failure)",
    "down_sbatch": "sbatch: error: Batch job submission failed: Unable to contact slurm "
                   "controller (connect failure)",
    "down_scontrol_show_job":
        "slurm_load_jobs error: Unable to contact slurm controller (connect failure)",
    "down_scancel": "scancel: error: Kill job error on job id 1: Unable to contact slurm "
                    "controller (connect failure)",
}
TRANSIENT_CAPTURES = {k for k in ERRORS if k.startswith(("frozen_", "down_"))}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_error_message(rec, name):
    p = rec.proc(name)
    assert p.returncode != 0
    assert slurm._message(p) == ERRORS[name]
    # A frozen or stopped controller is retried; a refused job or a bad id is not.
    assert any(t in ERRORS[name] for t in slurm.TRANSIENT) == (name in TRANSIENT_CAPTURES)


def test_only_a_refused_connection_is_resubmitted(rec):
    """sbatch is retried only when the job surely never reached slurmctld."""
    unsent = [n for n in ERRORS if n.endswith("sbatch") and
              any(u in slurm._message(rec.proc(n)) for u in slurm.UNSENT)]
    assert unsent == ["down_sbatch"]


def test_too_many_nodes(rec):
    """sbatch -N 10 on 3 nodes: 24.11 refuses it; 22.05 accepts it (it pends forever)."""
    p = rec.proc("sbatch_too_many_nodes")
    if rec.version == "24.11":
        assert slurm._message(p) == ("sbatch: error: Batch job submission failed: Requested node "
                                     "configuration is not available")
    else:
        assert p.returncode == 0 and p.stdout.startswith("Submitted batch job ")


def test_scancel_unknown_job_is_silent(rec):
    """scancel 999999 prints nothing and exits 0 on both versions."""
    p = rec.proc("scancel_invalid")
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")


def test_ping(rec):
    assert rec.out("scontrol_ping") == "Slurmctld(primary) at slurmctl is UP\n"
    down = rec.proc("down_scontrol_ping")
    assert down.returncode == 1 and "*****" in down.stdout
    assert slurm.ping_message(down) == "Slurmctld(primary) at slurmctl is DOWN"
    assert slurm.ping_message(rec.proc("noconf_scontrol_ping")) == \
        "scontrol: fatal: Could not establish a configuration source"


def test_recorded_restart_was_ridden_out_by_run(rec):
    """scripts/record-slurm-fixtures stopped slurmctld, called slurm.run(squeue) and restarted
    slurmctld 6 s later: the first try failed with a TRANSIENT message, the retry answered."""
    r = json.loads((rec.dir / "retry_across_restart.json").read_text())
    assert r["ok"] and [a["rc"] for a in r["attempts"]] == [1, 0]
    assert any(t in r["attempts"][0]["stderr"] for t in slurm.TRANSIENT)


# --- the watchers' squeue (-O WATCH_FORMAT, -t all) and scancel: tests/fixtures/slurm/*/watch/ ---

class Watch(Run):
    """One version's recording by scripts/record-watch-fixtures."""

    def __init__(self, version: str):
        super().__init__(version)
        self.dir = FIXTURES / "slurm" / version / "watch"
        self.captures = json.loads((self.dir / "captures.json").read_text())
        self.jobs = json.loads((self.dir / "jobs.json").read_text())

    def parsed(self, name: str = "watch_all") -> dict[str, slurm.JobStatus]:
        return {s.job_id: s for s in slurm.parse_squeue_watch(self.out(name))}


@pytest.fixture(params=VERSIONS)
def wrec(request) -> Watch:
    return Watch(request.param)


def test_watch_recorded_versions():
    for v, debian in (("22.05", "12."), ("24.11", "13.")):
        ver = Watch(v).captures["_version"]
        assert ver["slurmd -V"].startswith(f"slurm-wlm {v}.") and ver["debian"].startswith(debian)


def test_watch_format_is_what_was_recorded(wrec):
    argv = wrec.captures["watch_all"]["argv"]
    assert argv[argv.index("-O") + 1] == slurm.WATCH_FORMAT
    assert "\x1f" in wrec.out("watch_all") and "  " not in wrec.out("watch_all").replace(
        "my job a=b  two", "")  # width 0: no padding on either version


WATCH = {  # case: (state, reason, exit code, signal, restarts)
    "completed": ("COMPLETED", "", 0, 0, 0),
    "failed": ("FAILED", "NonZeroExitCode", 3, 0, 0),
    "timeout": ("TIMEOUT", "TimeLimit", 0, 15, 0),
    "cancelled": ("CANCELLED", "", 0, 15, 0),
    "running": ("RUNNING", "", None, None, 0),  # no exit code before the end
    "requeued": ("PENDING", "BeginTime", None, None, 1),
    "held": ("PENDING", "JobHeldUser", None, None, 0),
}


@pytest.mark.parametrize("case", sorted(WATCH))
def test_watch_states_and_exit_codes(wrec, case):
    """22.05 prints the raw wait status (768 for exit 3), 24.11 "3:0": the same JobStatus."""
    st = wrec.parsed()[wrec.jobs[case]]
    assert (st.state, st.reason, st.exit_code, st.signal, st.restarts) == WATCH[case]
    assert st.source == "squeue" and st.partition == "gpu" and st.user == "root"
    assert st.name == case and st.nodes == ("" if st.state == "PENDING" else "node1")


def test_watch_exit_code_forms_differ_by_version(wrec):
    line = next(ln for ln in wrec.out("watch_all").splitlines()
                if ln.startswith(wrec.jobs["failed"] + "\x1f"))
    assert line.split("\x1f")[7] == {"22.05": "768", "24.11": "3:0"}[wrec.version]


def test_watch_signal(wrec):
    st = wrec.parsed()[wrec.jobs["signal"]]
    assert (st.state, st.exit_code, st.signal) == ("FAILED", 0, 9)


def test_watch_name_with_spaces_and_running_time(wrec):
    got = wrec.parsed()
    assert got[wrec.jobs["spaces"]].name == "my job a=b  two"
    assert slurm.parse_duration(got[wrec.jobs["running"]].elapsed) in (86, 87, 88)


def test_watch_arrays(wrec):
    got = wrec.parsed()
    a, t = wrec.jobs["array"], wrec.jobs["array_throttled"]
    assert [(got[f"{a}_{k}"].state, got[f"{a}_{k}"].exit_code) for k in range(3)] == \
           [("COMPLETED", 0), ("FAILED", 1), ("FAILED", 2)]
    assert got[f"{t}_0"].state == "RUNNING"
    for k in (1, 2, 3):  # --array lists each pending task on its own line
        assert (got[f"{t}_{k}"].state, got[f"{t}_{k}"].reason) == ("PENDING", "JobArrayTaskLimit")
    assert set(wrec.parsed("watch_array")) == {f"{a}_{k}" for k in range(3)}


def test_watch_every_job_in_one_call_and_ended_ones_too(wrec):
    got = wrec.parsed()
    bases = {j.split("_")[0] for j in got}
    assert bases == set(wrec.jobs.values())  # -t all: the ended jobs are there
    queue = wrec.parsed("watch_queue")  # without -t all: only pending and running
    assert all(s.state in ("PENDING", "RUNNING") for s in queue.values())
    assert wrec.jobs["completed"] not in queue and wrec.jobs["requeued"] in queue


def test_watch_single_and_unknown_ids(wrec):
    (st,) = slurm.parse_squeue_watch(wrec.out("watch_single"))
    assert (st.job_id, st.state) == (wrec.jobs["completed"], "COMPLETED")
    p = wrec.proc("watch_invalid")
    assert p.returncode == 1 and slurm._message(p) == "slurm_load_jobs error: Invalid job id specified"
    q = wrec.proc("watch_invalid_list")
    assert (q.returncode, q.stdout, q.stderr) == (0, "", "")


def test_squeue_jobs_reads_one_unknown_id_as_not_in_the_queue(wrec, monkeypatch):
    calls = []

    def fake_run(argv, check=True, **kw):
        calls.append(argv)
        return wrec.proc("watch_invalid")

    monkeypatch.setattr(slurm, "run", fake_run)
    assert slurm.squeue_jobs(["99999999"]) == []
    assert len(calls) == 1 and calls[0][-2:] == ["-j", "99999999"]


def test_squeue_jobs_one_call_for_many_and_task_selection(wrec, monkeypatch):
    calls = []

    def fake_run(argv, check=True, **kw):
        calls.append(argv)
        return wrec.proc("watch_all")

    monkeypatch.setattr(slurm, "run", fake_run)
    a = wrec.jobs["array"]
    got = slurm.squeue_jobs([wrec.jobs["failed"], f"{a}_1", wrec.jobs["held"]])
    assert sorted(s.job_id for s in got) == sorted([wrec.jobs["failed"], f"{a}_1", wrec.jobs["held"]])
    assert len(calls) == 1
    # squeue gets base ids (its own "12_[1-2]" selection is unreliable), in one -j list
    assert calls[0][calls[0].index("-j") + 1] == f"{wrec.jobs['failed']},{a},{wrec.jobs['held']}"
    assert "-t" in calls[0] and calls[0][calls[0].index("-t") + 1] == "all"
    assert slurm.squeue_jobs([]) == [] and len(calls) == 1  # nothing asked, nothing called


def test_scancel_is_silent_for_ended_and_unknown_jobs(wrec):
    for name in ("scancel_ended", "scancel_unknown"):
        p = wrec.proc(name)
        assert (p.returncode, p.stdout, p.stderr) == (0, "", ""), name


def test_scancel_refusal_per_job(wrec):
    p = wrec.proc("scancel_denied")
    assert p.returncode == 210
    assert slurm.parse_scancel(p.stderr) == {wrec.jobs["running"]: "Access/permission denied",
                                             wrec.jobs["completed"]: "Access/permission denied"}


def test_scancel_returns_the_refused(wrec, monkeypatch):
    monkeypatch.setattr(slurm, "run", lambda argv, check=True, **kw: wrec.proc("scancel_denied"))
    refused = slurm.scancel([wrec.jobs["running"], wrec.jobs["completed"]])
    assert set(refused) == {wrec.jobs["running"], wrec.jobs["completed"]}


def test_scancel_unreachable_controller_is_slurms_message(rec, monkeypatch):
    monkeypatch.setattr(slurm.subprocess, "run", lambda *a, **kw: rec.proc("down_scancel"))
    monkeypatch.setattr(slurm.time, "sleep", lambda s: None)
    with pytest.raises(slurm.SlurmError, match="Unable to contact slurm controller"):
        slurm.scancel(["1"])


def test_durations():
    for text, secs in (("1:27", 87), ("00:01:27", 87), ("1:02:03", 3723), ("1-02:03:04", 93784),
                       ("0:00", 0)):
        assert slurm.parse_duration(text) == secs, text
    for text in ("", "INVALID", "UNLIMITED", "N/A"):
        assert slurm.parse_duration(text) is None
    assert [slurm.format_duration(s) for s in (0, 7, 87, 3723, 93784, None)] == \
           ["0:00:00", "0:00:07", "0:01:27", "1:02:03", "26:03:04", ""]


def test_job_status_round_trips_through_a_record():
    task = slurm.JobStatus("12_1", "FAILED", exit_code=1, elapsed="0:03")
    st = slurm.JobStatus("12", "FAILED", exit_code=1, tasks=[task])
    back = slurm.JobStatus.from_dict({**json.loads(json.dumps(st.to_dict())), "old_key": 1})
    assert back == st and back.tasks[0].seconds == 3
