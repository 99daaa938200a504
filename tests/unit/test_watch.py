"""hpcjobs.watch without Slurm: the poll schedule (fake clock), arrays combined, the words.

What Slurm prints is pinned in test_slurm_parse.py; here a fake ``fetch`` plays the jobs'
lives on a fake clock, and the recorded squeue output of both versions feeds ``lookup``.
"""

from __future__ import annotations

import pytest

from hpcjobs import runs, slurm, watch
from hpcjobs.errors import BadInput
from hpcjobs.slurm import JobStatus
from tests.unit.test_slurm_parse import VERSIONS, Watch


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        assert s >= 0
        self.t += s


def life(*phases):
    """A job's life: [(until_second, state, extra fields)...]; the last phase lasts."""
    def at(t):
        for until, state, extra in phases:
            if t < until:
                return state, extra
        return phases[-1][1], phases[-1][2]
    return at


class Jobs:
    """A fake fetch: every call is one "squeue" for all the ids asked."""

    def __init__(self, clock: Clock, lives: dict):
        self.clock, self.lives, self.calls = clock, lives, []

    def __call__(self, ids):
        self.calls.append((self.clock(), list(ids)))
        out = {}
        for jid in ids:
            state, extra = self.lives[jid](self.clock())
            out[jid] = JobStatus(jid, state, **extra)
        return out


def run_watch(lives, **kw):
    clock = Clock()
    jobs = Jobs(clock, lives)
    polls = list(watch.watch(list(lives), jobs, clock=clock, sleep=clock.sleep, **kw))
    return clock, jobs, polls


def test_backoff_grows_to_the_cap_and_resets_on_a_change():
    b = watch.Backoff()
    seq = [b.after(False) for _ in range(12)]
    assert seq[:4] == [1.0, 1.5, 2.25, 3.375]
    assert max(seq) == 30.0 and seq[-1] == 30.0
    assert b.after(True) == 1.0 and b.after(False) == 1.5


def test_one_call_per_poll_for_all_jobs_and_ended_jobs_dropped():
    lives = {str(10 + k): life((5 + 10 * k, "RUNNING", {"nodes": "node1"}),
                               (1e9, "COMPLETED", {"exit_code": 0})) for k in range(100)}
    _, jobs, polls = run_watch(lives)
    assert len(jobs.calls) == len(polls)  # one fetch per poll, whatever the number of jobs
    assert jobs.calls[0][1] == list(lives)  # all 100 in the first call
    assert polls[-1].done and all(st.state == "COMPLETED" for st in polls[-1].statuses.values())
    # An ended job is not asked about again.
    for (_t, ids), p in zip(jobs.calls[1:], polls):
        assert set(ids) == {j for j, st in p.statuses.items() if not st.done}
    # Jobs end every 10 s here, so the interval keeps resetting: still far fewer calls than
    # one per job per second (the old behaviour: one scontrol per job per 0.25-2 s).
    assert len(jobs.calls) < 1005 / 2


def test_a_pending_hour_costs_few_polls_and_the_end_is_seen_soon():
    lives = {"7": life((3600, "PENDING", {"reason": "Resources"}),
                       (3700, "RUNNING", {"nodes": "node[1-3]"}),
                       (1e9, "COMPLETED", {"exit_code": 0}))}
    _, jobs, polls = run_watch(lives)
    pending_polls = [t for t, _ in jobs.calls if t < 3600]
    assert len(pending_polls) <= 3600 / watch.CAP + 10  # about one per 30 s
    started = next(p.at for p in polls if p.statuses["7"].state == "RUNNING")
    assert started - 3600 <= watch.CAP  # a change is seen within the cap
    # After the start was seen the interval reset: the end is seen within about half the
    # time since that change plus one first interval, not the full cap.
    assert polls[-1].at - 3700 <= (3700 - started) / 2 + watch.FIRST
    states = [c.new.state for p in polls for c in p.changes]
    assert states == ["PENDING", "RUNNING", "COMPLETED"]


def test_a_short_run_after_a_long_wait_is_seen_within_the_cap():
    """Pending an hour, then 5 s of running between two 30-s polls: the start is not seen,
    the end is, at most CAP seconds late."""
    lives = {"7": life((3600, "PENDING", {"reason": "Resources"}),
                       (3605, "RUNNING", {"nodes": "node1"}),
                       (1e9, "COMPLETED", {"exit_code": 0}))}
    _, _, polls = run_watch(lives)
    assert polls[-1].statuses["7"].state == "COMPLETED"
    assert polls[-1].at - 3605 <= watch.CAP


def test_a_one_second_job_is_seen_to_end_within_two_seconds():
    lives = {"8": life((0.3, "PENDING", {}), (1.3, "RUNNING", {"nodes": "node1"}),
                       (1e9, "COMPLETED", {"exit_code": 0}))}
    _, _, polls = run_watch(lives)
    assert polls[-1].statuses["8"].state == "COMPLETED"
    assert polls[-1].at - 1.3 <= 2.0


def test_worst_case_latency_is_the_cap():
    """A job that sat unchanged long enough for the interval to reach the cap."""
    lives = {"9": life((10000, "RUNNING", {"nodes": "node1"}), (1e9, "FAILED", {"exit_code": 3}))}
    _, jobs, polls = run_watch(lives)
    assert polls[-1].at - 10000 <= watch.CAP
    gaps = [b[0] - a[0] for a, b in zip(jobs.calls, jobs.calls[1:])]
    assert max(gaps) == watch.CAP


def test_timeout_stops_watching_and_says_so():
    lives = {"5": life((1e9, "RUNNING", {"nodes": "node2"}))}
    _, _, polls = run_watch(lives, timeout=7.0)
    assert polls[-1].timed_out and not polls[-1].done
    assert polls[-1].at == pytest.approx(7.0)
    assert sum(1 for p in polls if p.timed_out) == 1


def test_ticks_run_between_polls_without_slurm():
    lives = {"5": life((20, "RUNNING", {}), (1e9, "COMPLETED", {}))}
    ticks = []
    _, jobs, _ = run_watch(lives, on_tick=ticks.append, tick=0.5)
    assert len(ticks) > 2 * len(jobs.calls)
    assert ticks == sorted(ticks)


def test_changes_are_state_reason_nodes_restarts():
    lives = {"3": life((2, "PENDING", {"reason": "Priority"}), (4, "PENDING", {"reason": "Resources"}),
                       (6, "RUNNING", {"nodes": "node1"}), (8, "PENDING", {"reason": "BeginTime",
                                                                          "restarts": 1}),
                       (1e9, "COMPLETED", {"restarts": 1}))}
    _, _, polls = run_watch(lives)
    seen = [(c.new.state, c.new.reason, c.new.restarts) for p in polls for c in p.changes]
    assert seen == [("PENDING", "Priority", 0), ("PENDING", "Resources", 0), ("RUNNING", "", 0),
                    ("PENDING", "BeginTime", 1), ("COMPLETED", "", 1)]


# --- arrays, words ---------------------------------------------------------------------------

def t(jid, state, **kw):
    return JobStatus(jid, state, **kw)


def test_combine_running_pending_and_ended_arrays():
    running = watch.combine("12", [t("12_1", "PENDING", reason="JobArrayTaskLimit"),
                                   t("12_0", "RUNNING", nodes="node2", elapsed="0:05"),
                                   t("12_2", "COMPLETED", exit_code=0, nodes="node1", elapsed="0:09")])
    assert (running.state, running.nodes, running.elapsed) == ("RUNNING", "node2", "0:00:09")
    assert [x.job_id for x in running.tasks] == ["12_0", "12_1", "12_2"]  # index order
    pending = watch.combine("12", [t("12_1", "PENDING", reason="JobArrayTaskLimit"),
                                   t("12_0", "COMPLETED", exit_code=0)])
    assert (pending.state, pending.reason) == ("PENDING", "JobArrayTaskLimit")
    failed = watch.combine("12", [t("12_0", "COMPLETED", exit_code=0, nodes="node1"),
                                  t("12_1", "FAILED", exit_code=1, nodes="node2"),
                                  t("12_2", "FAILED", exit_code=2, nodes="node3")])
    assert (failed.state, failed.exit_code, failed.nodes) == ("FAILED", 1, "node[1-3]")
    assert watch.task_summary(failed) == "3 tasks: 2 FAILED, 1 COMPLETED"
    ok = watch.combine("12", [t("12_0", "COMPLETED", exit_code=0), t("12_1", "COMPLETED", exit_code=0)])
    assert ok.state == "COMPLETED" and ok.done and watch.task_summary(ok) == "2 tasks: 2 COMPLETED"


def test_describe_and_describe_end():
    assert watch.describe(t("1", "PENDING", reason="Resources")) == "PENDING (Resources)"
    assert watch.describe(t("1", "RUNNING", nodes="node[1-3]")) == "RUNNING on node[1-3]"
    assert watch.describe_end(t("1", "FAILED", exit_code=3, reason="NonZeroExitCode",
                                elapsed="0:04")) == "job 1 ended FAILED, exit code 3, ran 0:00:04"
    assert watch.describe_end(t("1", "TIMEOUT", exit_code=0, signal=15, reason="TimeLimit",
                                elapsed="00:01:27")) == \
        "job 1 ended TIMEOUT, exit code 0 (signal 15), reason TimeLimit, ran 0:01:27"
    assert watch.describe(t("1", "PENDING", reason="BeginTime", restarts=2)) == \
        "PENDING (BeginTime), restarted 2x"


def test_check_ids():
    assert watch.check_ids(["12", "12_3", "12"]) == ["12", "12_3"]
    for bad in ("abc", "12_", "12_[1-3]", "-1", "1 2", ""):
        with pytest.raises(BadInput, match="is not a job id"):
            watch.check_ids(["12", bad])
    with pytest.raises(BadInput, match="no job id"):
        watch.check_ids([])


# --- lookup over the recorded squeue output of both versions ---------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_lookup_job_task_array_and_unknown(version, monkeypatch, isolated):
    w = Watch(version)
    calls = []

    def squeue_jobs(ids):
        calls.append(list(ids))
        want = {i.split("_")[0] for i in ids}
        return [s for s in slurm.parse_squeue_watch(w.out("watch_all"))
                if s.job_id.split("_")[0] in want]

    monkeypatch.setattr(slurm, "squeue_jobs", squeue_jobs)
    monkeypatch.setattr(slurm, "sacct_jobs", lambda ids: [])
    a, j = w.jobs["array"], w.jobs
    got = watch.lookup([j["failed"], a, f"{a}_2", "99999999"])
    assert len(calls) == 1
    assert (got[j["failed"]].state, got[j["failed"]].exit_code) == ("FAILED", 3)
    assert (got[a].state, got[a].exit_code, len(got[a].tasks)) == ("FAILED", 1, 3)
    assert got[f"{a}_2"].exit_code == 2 and not got[f"{a}_2"].tasks
    assert watch.unknown(got["99999999"])


def test_lookup_falls_back_to_the_record(monkeypatch, isolated):
    monkeypatch.setattr(slurm, "squeue_jobs", lambda ids: [])
    monkeypatch.setattr(slurm, "sacct_jobs", lambda ids: [])
    run = runs.create(runs.new_run_path("mpi"), "#!/bin/bash\n", {}, {}, {"kind": "mpi"})
    runs.link_job(run, "41")
    got = watch.lookup(["41"])["41"]
    assert (got.state, got.source) == ("UNKNOWN", "record") and not watch.unknown(got)
    final = watch.combine("41", [t("41_0", "COMPLETED", exit_code=0), t("41_1", "FAILED", exit_code=4)])
    run.update_meta(final=final.to_dict())
    got = watch.lookup(["41", "41_1"])
    assert (got["41"].state, got["41"].source, len(got["41"].tasks)) == ("FAILED", "record", 2)
    assert (got["41_1"].state, got["41_1"].exit_code) == ("FAILED", 4)
