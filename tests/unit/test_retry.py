"""The retry rules (hpcjobs/retry.py decide, bad_nodes) and the chain's status
(hpcjobs/chains.py fold): pure. The real causes on the sandbox are in
tests/integration/test_retry.py."""

from __future__ import annotations

import json

import pytest

from hpcjobs import chains, retry
from hpcjobs.errors import BadInput
from hpcjobs.retry import Situation, decide
from hpcjobs.slurm import JobStatus


def S(cause: str, **kw) -> Situation:
    base = dict(cause=cause, cause_text=cause.replace("_", " "), fix="do X", state="FAILED",
                retries_used=0, budget=3, time="00:10:00", max_time="2-00:00:00",
                partition="gpu", partition_nodes=["node1", "node2", "node3"], nodes=1)
    return Situation(**{**base, **kw})


def test_timeout_gets_a_longer_limit_by_the_factor():
    d = decide(S("time_limit", state="TIMEOUT"))
    assert d.retry and d.changes == {"time": ["00:10:00", "00:20:00"]}
    assert "x2" in d.message
    d = decide(S("time_limit", state="TIMEOUT", time="1", time_factor=1.5))
    assert d.changes == {"time": ["00:01:00", "00:02:00"]}  # Slurm keeps minutes: 1.5 min -> 2


def test_timeout_is_capped_at_maxtime_and_not_retried_at_maxtime():
    d = decide(S("time_limit", state="TIMEOUT", time="1-20:00:00"))
    assert d.retry and d.changes == {"time": ["1-20:00:00", "2-00:00:00"]} and "MaxTime" in d.message
    d = decide(S("time_limit", state="TIMEOUT", time="2-00:00:00"))
    assert not d.retry and "MaxTime 2-00:00:00 already" in d.message
    d = decide(S("time_limit", state="TIMEOUT", max_time=None, time="3-00:00:00"))
    assert d.changes == {"time": ["3-00:00:00", "6-00:00:00"]}


def test_node_failure_excludes_the_node_and_keeps_earlier_exclusions():
    d = decide(S("node_fail", state="NODE_FAIL", bad_nodes=["node3"], bad_why="DOWN"))
    assert d.retry and d.changes == {"exclude": [None, "node3"]}
    d = decide(S("node_fail", bad_nodes=["node2"], exclude=["node3"]))
    assert d.changes == {"exclude": ["node3", "node[2-3]"]}


def test_node_failure_without_enough_nodes_left_is_not_retried():
    d = decide(S("node_fail", bad_nodes=["node2"], exclude=["node3"], nodes=2))
    assert not d.retry and "1 node(s) left and the job needs 2" in d.message


def test_a_failed_node_the_job_must_have_is_not_excluded():
    d = decide(S("node_fail", bad_nodes=["node2"], nodelist=["node1", "node2"], bad_why="DOWN"))
    assert not d.retry and "must run on node2 (--nodelist)" in d.message


def test_node_failure_with_no_node_to_name_comes_back_as_it_was():
    d = decide(S("node_fail", state="NODE_FAIL"))
    assert d.retry and not d.changes and "cannot be named" in d.message


def test_a_preflight_verdict_excludes_the_node_it_names():
    d = decide(S("preflight", bad_nodes=["node2"], bad_why="failed the preflight"))
    assert d.retry and d.changes == {"exclude": [None, "node2"]}


def test_host_oom_gets_more_memory_capped_by_realmemory():
    d = decide(S("oom_host", state="OUT_OF_MEMORY", mem_mb=4000, mem_cap_mb=191000))
    assert d.retry and d.changes == {"mem": ["4000M", "8000M"]}
    d = decide(S("oom_host", mem_mb=150000, mem_cap_mb=191000))
    assert d.changes == {"mem": ["150000M", "191000M"]} and "RealMemory" in d.message
    d = decide(S("oom_host", mem_mb=191000, mem_cap_mb=191000))
    assert not d.retry and "all the nodes have" in d.message
    d = decide(S("oom_host", mem_option="mem_per_gpu", mem_mb=8000, mem_cap_mb=95500))
    assert d.changes == {"mem_per_gpu": ["8000M", "16000M"]}
    assert not decide(S("oom_host", mem_mb=0)).retry  # --mem 0: all of it already


@pytest.mark.parametrize("cause", ["nccl_timeout", "hung"])
def test_nccl_timeout_and_hang_come_back_as_they_were_once(cause):
    d = decide(S(cause))
    assert d.retry and not d.changes and "once" in d.message
    d = decide(S(cause, retries_used=1, causes_before=[cause]))
    assert not d.retry and "retried once already" in d.message


@pytest.mark.parametrize("cause", ["exit_code", "missing_module", "oom_cuda", "port_in_use",
                                   "oom_killed", "abort_at_exit", "preempted"])
def test_other_causes_are_not_retried_and_say_why(cause):
    d = decide(S(cause, fix="read the traceback"))
    assert not d.retry and "retrying the same request would not help" in d.message
    assert "read the traceback" in d.message


def test_a_cancelled_job_is_not_retried():
    d = decide(S("cancelled", state="CANCELLED"))
    assert not d.retry and "cancelled" in d.message


def test_the_budget_is_the_users():
    d = decide(S("time_limit", retries_used=3, budget=3))
    assert not d.retry and "budget of 3 is spent" in d.message


def test_bad_nodes_from_node_state_srun_and_the_record():
    log = ["srun: error: Node failure on node2", "x"]
    assert retry.bad_nodes(log, [], ["node1", "node2"], {"node1"}, "node_fail") == \
        (["node1"], "DOWN after the node failure")
    assert retry.bad_nodes(log, [], ["node1", "node2"], set(), "node_fail")[0] == ["node2"]
    assert retry.bad_nodes([], [], ["node3"], set(), "node_fail") == \
        (["node3"], "the job's only node failed")
    assert retry.bad_nodes([], [], ["node1", "node3"], set(), "node_fail") == ([], "")
    assert retry.bad_nodes([], [{"node": "node2", "check": "tmp"}], ["node1"], set(),
                           "preflight")[0] == ["node2"]
    line = "hpcjobs: preflight: node3 failed import: ModuleNotFoundError | fix: install it"
    assert retry.bad_nodes([line], [], ["node1"], set(), "preflight")[0] == ["node3"]


def test_down_nodes_are_read_from_slurms_states():
    states = {"node1": "IDLE", "node2": "DOWN*", "node3": "IDLE+DRAIN", "node4": "ALLOCATED*",
              "node5": "MIXED"}
    assert retry._down(states) == {"node2", "node3", "node4"}


def test_slurm_time_forms():
    assert retry.slurm_time(120) == "00:02:00" and retry.slurm_time(90000) == "1-01:00:00"


# --- the options --------------------------------------------------------------------------

def _validate(**kw):
    from hpcjobs.cluster import builtin
    from hpcjobs.spec import JobSpec, validate

    return validate(JobSpec(kind="mpi", program=["true"], nodes=1, **kw), builtin())


@pytest.mark.parametrize("kw,field", [
    (dict(retry=-1), "--retry"), (dict(retry=11), "--retry"),
    (dict(retry=1, retry_time_factor=1.0), "--retry-time-factor"),
    (dict(retry=1, retry_mem_factor=50), "--retry-mem-factor"),
    (dict(retry=1, array="0-3"), "--retry"),
])
def test_bad_retry_options_are_one_line_naming_the_field(kw, field):
    with pytest.raises(BadInput) as e:
        _validate(**kw)
    assert e.value.field == field and "\n" not in str(e.value)


def test_retry_is_off_by_default():
    assert _validate().retry == 0


# --- the chain's status -----------------------------------------------------------------------

def _chain(tmp_path, entries):
    from hpcjobs.runs import Run

    (tmp_path / "meta.json").write_text(json.dumps({"job_id": "100"}))
    (tmp_path / "attempts.json").write_text(json.dumps({"budget": 2, "attempts": entries}))
    run = Run(tmp_path)
    return chains.view(run, "100")


def test_a_chain_waits_while_its_follower_decides(tmp_path):
    c = _chain(tmp_path, [{"attempt": 1, "job_id": "100", "follower": "101"}])
    assert c.ask == ["100", "101"]
    found = {"100": JobStatus("100", "TIMEOUT", exit_code=0), "101": JobStatus("101", "PENDING")}
    st = c.fold(found)
    assert st.state == "PENDING" and not st.done and "job 101 decides" in st.reason
    found["101"] = JobStatus("101", "COMPLETED")  # ended without a decision: the chain ended
    assert c.fold(found).state == "TIMEOUT"


def test_a_decided_retry_waits_for_the_next_attempt_to_be_recorded(tmp_path):
    c = _chain(tmp_path, [{"attempt": 1, "job_id": "100", "follower": "101", "decision": "retry",
                           "ended": {"state": "TIMEOUT"}}])
    assert c.fold({"101": JobStatus("101", "RUNNING")}).state == "PENDING"


def test_a_chain_is_its_last_attempt_under_the_first_id(tmp_path):
    c = _chain(tmp_path, [
        {"attempt": 1, "job_id": "100", "follower": "101", "decision": "retry", "next": "102",
         "ended": {"state": "TIMEOUT", "exit_code": 0}},
        {"attempt": 2, "job_id": "102", "follower": "103"}])
    assert c.ask == ["100", "102", "103"]
    st = c.fold({"102": JobStatus("102", "RUNNING", nodes="node2"), "103": JobStatus("103", "PENDING")})
    assert (st.job_id, st.state, st.nodes) == ("100", "RUNNING", "node2")
    st = c.fold({"102": JobStatus("102", "COMPLETED", exit_code=0), "103": JobStatus("103", "PENDING")})
    assert st.state == "COMPLETED" and st.done  # the follower is left to Slurm (invalid dependency)
    assert c.attempt_status(c.attempts[0], {}).state == "TIMEOUT"  # as its follower recorded it
    assert c.cancel_order({"102": JobStatus("102", "RUNNING"), "103": JobStatus("103", "PENDING")}) \
        == [["103"], ["102"]]


def test_a_stopped_chain_ends_with_its_attempt(tmp_path):
    c = _chain(tmp_path, [{"attempt": 1, "job_id": "100", "follower": "101", "decision": "stop",
                           "ended": {"state": "FAILED", "exit_code": 1}}])
    st = c.fold({"101": JobStatus("101", "RUNNING")})
    assert st.state == "FAILED" and st.exit_code == 1


def test_a_chain_slurm_forgot_ends_as_its_record_says(tmp_path):
    c = _chain(tmp_path, [
        {"attempt": 1, "job_id": "100", "decision": "retry", "next": "102",
         "ended": {"state": "TIMEOUT", "exit_code": 0}},
        {"attempt": 2, "job_id": "102"}])
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["final"] = {"job_id": "100", "state": "COMPLETED", "exit_code": 0}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    st = c.fold({})  # Slurm holds none of them any more
    assert (st.job_id, st.state) == ("100", "COMPLETED")
    assert c.attempt_status(c.attempts[0], {}).state == "TIMEOUT"
