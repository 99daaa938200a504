"""Arrays larger than Slurm allows: the split into chunks, the offsets, the logical ids, the
limits read from ``scontrol show config`` (pure; the real runs are in
tests/integration/test_big_arrays.py)."""

from __future__ import annotations

import json
import random

import pytest

from hpcjobs import arrays
from hpcjobs.errors import BadInput
from hpcjobs.slurm import ArrayLimits, JobStatus, parse_array_limits
from hpcjobs.spec import parse_array

CONFIG_2205 = """\
Configuration data as of 2026-12-01T23:11:56
AccountingStorageType   = accounting_storage/none
MaxArraySize            = 1001
MaxJobCount             = 10000
SchedulerParameters     = batch_sched_delay=0,sched_min_interval=0
"""


def test_limits_from_scontrol_show_config():
    lim = parse_array_limits(CONFIG_2205)
    assert (lim.max_array_size, lim.max_array_tasks, lim.max_job_count) == (1001, 1001, 10000)
    lim = parse_array_limits(CONFIG_2205.replace("sched_min_interval=0",
                                                 "sched_min_interval=0,max_array_tasks=10"))
    assert (lim.max_array_size, lim.max_array_tasks) == (1001, 10)
    lim = parse_array_limits("MaxArraySize            = 10\nSchedulerParameters     = (null)\n")
    assert (lim.max_array_size, lim.max_array_tasks) == (10, 10)
    assert parse_array_limits("") == ArrayLimits(1001, 1001, None)  # Slurm's defaults


@pytest.mark.parametrize("ids,text", [
    ([0, 1, 2, 3, 10], "0-3,10"), ([0, 5, 10], "0-10:5"), ([0, 5], "0,5"), ([7], "7"),
    ([1, 3, 5, 6, 7], "1-5:2,6-7"), (list(range(1001)), "0-1000"), ([3, 4], "3-4"),
])
def test_format_indices_is_a_slurm_spec_of_exactly_those_ids(ids, text):
    assert arrays.format_indices(ids) == text
    assert list(parse_array(text).indices) == ids


def _check(text: str, size: int, tasks: int) -> list[arrays.Chunk]:
    spec = parse_array(text)
    chunks = arrays.split(spec.indices, size, tasks)
    logical = sorted(c.logical(t) for c in chunks for t in c.tasks)
    assert logical == list(spec.indices), "every logical index exactly once"
    for c in chunks:
        assert c.tasks[-1] < size and c.count <= tasks and len(c.spec) <= ArrayLimits.SPEC_MAX
        assert list(parse_array(c.spec).indices) == list(c.tasks)
        for t in c.tasks:
            assert c.task_of(c.logical(t)) == t
    return chunks


def test_the_issue_example_0_99999_in_chunks_of_max_array_size():
    chunks = _check("0-99999", 1001, 1001)
    assert len(chunks) == 100 and chunks[0].spec == "0-1000" and chunks[-1].offset == 99099
    assert [c.offset for c in chunks[:3]] == [0, 1001, 2002] and chunks[-1].spec == "0-900"


def test_a_step_is_packed_with_a_stride_not_one_chunk_per_task():
    (c,) = _check("0-99999:1000", 1001, 1001)
    assert (c.offset, c.stride, c.spec) == (0, 1000, "0-99")
    chunks = _check("0-99999:3", 1001, 1001)
    assert len(chunks) == 34 and all(c.stride == 3 and c.count == 1001 for c in chunks[:-1])
    # The last 301 fit one window as they are (0-900:3): a tie keeps stride 1.
    assert (chunks[-1].offset, chunks[-1].spec) == (99099, "0-900:3")


def test_small_max_array_size_35_tasks_make_4_chunks_from_0():
    chunks = _check("0-34", 10, 10)
    assert [(c.offset, c.spec) for c in chunks] == [(0, "0-9"), (10, "0-9"), (20, "0-9"), (30, "0-4")]


def test_max_array_tasks_limits_the_count_while_indices_may_stay_large():
    chunks = _check("0-34", 1001, 10)
    assert [c.count for c in chunks] == [10, 10, 10, 5]


def test_a_high_window_is_shifted_to_zero():
    (c,) = _check("5000-5010", 1001, 1001)
    assert (c.offset, c.spec) == (5000, "0-10")


def test_scattered_lists_and_random_specs_cover_every_index_once():
    _check("1,3,5-7,2000,2001,4000-4100:2", 1001, 1001)
    rng = random.Random(13)
    for _ in range(60):
        items = []
        for _ in range(rng.randint(1, 6)):
            a = rng.randint(0, 30000)
            b = a + rng.randint(0, 3000)
            items.append(f"{a}-{b}:{rng.randint(1, 40)}" if rng.random() < 0.6 else str(a))
        _check(",".join(items), rng.choice([10, 101, 1001]), rng.choice([7, 10, 1001]))


def test_a_scattered_chunk_keeps_the_spec_within_slurms_4096_bytes():
    ids = tuple(sorted(random.Random(1).sample(range(0, 1_000_000, 3), 3000)))
    chunks = arrays.split(ids, 4_000_001, 4_000_001)
    assert all(len(c.spec) <= ArrayLimits.SPEC_MAX for c in chunks) and len(chunks) > 1
    assert sorted(c.logical(t) for c in chunks for t in c.tasks) == list(ids)


def test_arrays_disabled_is_bad_input():
    with pytest.raises(BadInput, match="disabled"):
        arrays.split((0, 1), 0, 0)


def test_plan_is_none_when_slurm_takes_the_array_as_it_is():
    assert arrays.plan("0-1000%5", ArrayLimits(1001, 1001), queue=2500) is None
    p = arrays.plan("0-1001%5", ArrayLimits(1001, 1001), queue=2500)
    assert p is not None and len(p.chunks) == 2 and p.chained and p.spec_of(p.chunks[1]) == "0%5"
    assert p.window == 0  # 1002 tasks may all be queued at once
    assert not arrays.plan("0-1001", ArrayLimits(1001, 1001), queue=2500).chained


def test_more_tasks_than_may_be_queued_are_fed_a_window_at_a_time():
    # The issue's 0-99999 under Slurm's default MaxJobCount 10000 (a quarter of it queued).
    lim = ArrayLimits(1001, 1001, 10000)
    assert arrays.queue_limit(lim) == 2500
    p = arrays.plan("0-99999%10", lim)
    assert len(p.chunks) == 100 and p.window == 2 and p.chained  # the running chunk, the next
    p = arrays.plan("0-99999", lim)
    assert len(p.chunks) == 100 and p.window == 2 and not p.chained  # 2 x 1001 <= 2500
    p = arrays.plan("0-34%3", ArrayLimits(1001, 1001), queue=12)
    assert [c.count for c in p.chunks] == [6] * 5 + [5] and p.window == 2  # two chunks <= 12
    assert arrays.plan("0-34", ArrayLimits(1001, 1001), queue=12).window == 1


def test_the_queue_limit_can_be_set(monkeypatch):
    monkeypatch.setenv(arrays.QUEUE_ENV, "500")
    assert arrays.queue_limit(ArrayLimits(1001, 1001, 10000)) == 500


def _plan() -> arrays.Plan:
    p = arrays.plan("0-34%3", ArrayLimits(10, 10), queue=2500)
    p.chunks = [arrays.Chunk(c.offset, c.stride, c.tasks, str(100 + k)) for k, c in enumerate(p.chunks)]
    return p


def test_logical_ids_map_both_ways():
    p = _plan()
    assert p.logical_id("101_3") == "100_13" and p.logical_id("103_4") == "100_34"
    assert p.logical_id("102_[0-9]") == "100_[20-29]" and p.logical_id("999_1") == "999_1"
    k, t = p.locate(27)
    assert (p.chunks[k].job_id, t) == ("102", 7)
    assert p.locate(35) is None
    d = arrays.Plan.from_dict(p.to_dict())
    assert [(c.job_id, c.offset, c.tasks) for c in d.chunks] == \
        [(c.job_id, c.offset, c.tasks) for c in p.chunks] and d.throttle == 3


def test_fold_names_tasks_by_logical_index_and_combines_them(tmp_path):
    from hpcjobs.runs import Run

    p = _plan()
    run = Run(tmp_path)
    (tmp_path / "meta.json").write_text('{"job_id": "100"}')
    view = arrays.LogicalArray("100", p, run)
    assert view.ask == ["100", "101", "102", "103"]
    found = {}
    for c in p.chunks:
        tasks = [JobStatus(f"{c.job_id}_{t}", "COMPLETED", exit_code=0) for t in c.tasks]
        found[c.job_id] = JobStatus(c.job_id, "COMPLETED", tasks=tasks)
    found["103"] = JobStatus("103", "PENDING", tasks=[JobStatus(f"103_{t}", "PENDING") for t in range(5)])
    st = view.fold(found)
    assert st.job_id == "100" and st.state == "PENDING" and len(st.tasks) == 35
    assert [t.job_id for t in st.tasks][:3] == ["100_0", "100_1", "100_2"]
    assert st.tasks[-1].job_id == "100_34"
    rounds = view.cancel_order({**found, "102": JobStatus("102", "RUNNING", tasks=[
        JobStatus("102_0", "RUNNING"), JobStatus("102_1", "PENDING")])})
    assert rounds == [["103"], ["102"]]  # the waiting chunk before the running one


def test_export_tells_each_chunk_its_offset_and_stride():
    assert arrays.export_of(None) == ["HPCJOBS_ARRAY_OFFSET=0", "HPCJOBS_ARRAY_STRIDE=1"]
    assert arrays.export_of(arrays.Chunk(2002, 3, (0, 1))) == \
        ["HPCJOBS_ARRAY_OFFSET=2002", "HPCJOBS_ARRAY_STRIDE=3"]


class FakeSlurm:
    """sbatch and scancel replaced (exact-text unit test): job ids from 500 up, every call
    kept; the n-th sbatch may be refused with Slurm's message."""

    def __init__(self, monkeypatch, refuse: int | None = None):
        from hpcjobs import slurm

        self.calls, self.cancelled, self.refuse = [], [], refuse
        monkeypatch.setattr(slurm, "sbatch", self.sbatch)
        monkeypatch.setattr(slurm, "run", self.run)
        monkeypatch.setattr(slurm, "scancel", lambda ids, signal=None: self.cancelled.extend(ids) or {})

    def _next(self, argv):
        from hpcjobs.errors import SlurmError

        self.calls.append(list(argv))
        if len(self.calls) == self.refuse:
            raise SlurmError("sbatch: error: Batch job submission failed: Job violates "
                             "accounting/QOS policy (job submit limit, user's size and/or time limits)")
        return str(500 + len(self.calls))

    def sbatch(self, script, extra=(), cwd=None, env=None):
        return self._next(extra)

    def run(self, argv, **kw):
        import subprocess

        return subprocess.CompletedProcess(argv, 0, self._next(argv[2:]) + "\n", "")


def _record(tmp_path, monkeypatch):
    from hpcjobs.runs import Run

    monkeypatch.setenv("HPCJOBS_RUNS_DIR", str(tmp_path / "runs"))
    d = tmp_path / "runs" / "rec"
    d.mkdir(parents=True)
    (d / "job.sbatch").write_text("#!/bin/bash\n")
    return Run(d)


def test_submit_chains_the_chunks_and_undoes_a_partial_submission(monkeypatch, tmp_path):
    from hpcjobs.errors import SlurmError

    fake = FakeSlurm(monkeypatch, refuse=3)
    run = _record(tmp_path, monkeypatch)
    p = arrays.plan("0-34%3", ArrayLimits(10, 10), queue=2500)
    with pytest.raises(SlurmError, match="after 2 of the jobs of array 0-34%3, which were cancelled"):
        arrays.submit(run, p, arrays.Submit("job.sbatch", ["SECRET"], "afterok:7"))
    assert fake.calls[0] == ["--array=0-9%3", "--export=ALL,SECRET,HPCJOBS_ARRAY_OFFSET=0,"
                             "HPCJOBS_ARRAY_STRIDE=1", "--dependency=afterok:7"]
    assert fake.calls[1][-1] == "--dependency=afterok:7,afterany:501"
    assert "HPCJOBS_ARRAY_OFFSET=10" in fake.calls[1][1]
    assert fake.cancelled == ["502", "501"]  # last first


def test_a_window_queues_two_chunks_and_feeders_queue_the_rest(monkeypatch, tmp_path):
    fake = FakeSlurm(monkeypatch)
    run = _record(tmp_path, monkeypatch)
    p = arrays.plan("0-34%3", ArrayLimits(10, 10), queue=12)  # 6 chunks of at most 6
    ids = arrays.submit(run, p, arrays.Submit(str(run.script), cwd=str(tmp_path)))
    d = run.path / "array"
    assert ids == ["501", "502"] and (d / "chunk-1").read_text().strip() == "502"
    # Feeders: F0 after chunk 0; F1 after chunk 1 and F0 (chained: it needs chunk 2's id).
    f0, f1 = fake.calls[2], fake.calls[3]
    assert "--dependency=afterany:501" in f0 and f0[-1] == "0"
    assert "--dependency=afterany:502,afterany:503" in f1 and f1[-1] == "1"
    assert (d / "feeder-0").read_text().strip() == "503"
    (run.path / "meta.json").write_text(json.dumps({"job_id": "501", "array": p.to_dict()}))
    view = arrays.view(run, "501")
    assert view.ask == ["501", "502", "503", "504"]  # chunks, then the feeders still to run
    found = {"501": JobStatus("501", "RUNNING", tasks=[JobStatus("501_0", "RUNNING")]),
             "502": JobStatus("502", "PENDING", tasks=[JobStatus("502_0", "PENDING")]),
             "503": JobStatus("503", "PENDING"), "504": JobStatus("504", "PENDING")}
    st = view.fold(found)
    assert len(st.tasks) == 2 + (35 - 12) and st.state == "RUNNING"  # one task listed per chunk
    unq = [t for t in st.tasks if "queued by hpcjobs" in t.reason]
    assert len(unq) == 35 - 12 and unq[0].job_id == "501_12" and "job 503" in unq[0].reason
    gone = {**found, "503": JobStatus("503", "COMPLETED"), "504": JobStatus("504", "FAILED")}
    lost = [t for t in view.fold(gone).tasks if t.state == "FAILED"]  # no feeder left
    assert len(lost) == 35 - 12 and "no feeder job is left" in lost[0].reason
    # Chunk 0 ended: feeder 0 queues chunk 2 after chunk 1, and feeder 2 after it and F1.
    assert arrays.feed(str(run.path), 0) == 0
    assert fake.calls[4][-1] == "--dependency=afterany:502" and (d / "chunk-2").exists()
    assert "--dependency=afterany:505,afterany:504" in fake.calls[5]
    assert arrays.feed(str(run.path), 0) == 0 and len(fake.calls) == 6  # a second run: no-op
    # A cancel marks the record: a feeder queues nothing more.
    rounds = arrays.view(run, "501").cancel_order(found)
    assert rounds[0] == ["504", "506"] and (d / "cancel").exists()  # F1, and F2 that F0 queued
    assert arrays.feed(str(run.path), 1) == 0 and len(fake.calls) == 6


def test_a_feeder_that_cannot_queue_ends_the_logical_array(monkeypatch, tmp_path):
    fake = FakeSlurm(monkeypatch, refuse=4)
    run = _record(tmp_path, monkeypatch)
    p = arrays.plan("0-34", ArrayLimits(10, 10), queue=12)  # 4 chunks, one queued at a time
    assert p.window == 1
    arrays.submit(run, p, arrays.Submit(str(run.script)))
    (run.path / "meta.json").write_text(json.dumps({"job_id": "501", "array": p.to_dict()}))
    assert arrays.feed(str(run.path), 0) == 3  # chunk 2 queued as 503, its feeder refused
    assert "could not queue the rest" in (run.path / "array" / "error").read_text()
    view = arrays.view(run, "501")
    found = {"501": JobStatus("501", "COMPLETED", tasks=[JobStatus(f"501_{t}", "COMPLETED") for t in range(10)])}
    assert len(fake.calls) == 4
    st = view.fold(found)
    assert st.done and st.state == "FAILED" and any("not queued" in t.reason for t in st.tasks)
