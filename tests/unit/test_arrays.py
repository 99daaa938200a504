"""Arrays larger than Slurm allows: the split into chunks, the offsets, the logical ids, the
limits read from ``scontrol show config`` (pure; the real runs are in
tests/integration/test_big_arrays.py)."""

from __future__ import annotations

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
    assert arrays.plan("0-1000%5", ArrayLimits(1001, 1001)) is None
    p = arrays.plan("0-1001%5", ArrayLimits(1001, 1001))
    assert p is not None and len(p.chunks) == 2 and p.chained and p.spec_of(p.chunks[1]) == "0%5"
    assert not arrays.plan("0-1001", ArrayLimits(1001, 1001)).chained  # no throttle to hold


def _plan() -> arrays.Plan:
    p = arrays.plan("0-34%3", ArrayLimits(10, 10))
    p.chunks = [arrays.Chunk(c.offset, c.stride, c.tasks, str(100 + k)) for k, c in enumerate(p.chunks)]
    return p


def test_logical_ids_map_both_ways():
    p = _plan()
    assert p.logical_id("101_3") == "100_13" and p.logical_id("103_4") == "100_34"
    assert p.logical_id("102_[0-9]") == "100_[20-29]" and p.logical_id("999_1") == "999_1"
    c, t = p.locate(27)
    assert (c.job_id, t) == ("102", 7)
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


def test_submit_chains_the_chunks_and_undoes_a_partial_submission(monkeypatch):
    from hpcjobs import slurm
    from hpcjobs.errors import SlurmError

    calls, cancelled = [], []

    def sbatch(script, extra=(), cwd=None, env=None):
        calls.append(list(extra))
        if len(calls) == 3:
            raise SlurmError("sbatch: error: Batch job submission failed: Job violates "
                             "accounting/QOS policy (job submit limit, user's size and/or time limits)")
        return str(500 + len(calls))

    monkeypatch.setattr(slurm, "sbatch", sbatch)
    monkeypatch.setattr(slurm, "scancel", lambda ids, signal=None: cancelled.extend(ids) or {})
    p = arrays.plan("0-34%3", ArrayLimits(10, 10))
    with pytest.raises(SlurmError, match="chunk 3 of 4.*2 queued before it were cancelled"):
        arrays.submit("job.sbatch", p, export=["SECRET"], dependency="afterok:7")
    assert calls[0] == ["--array=0-9%3", "--export=ALL,SECRET,HPCJOBS_ARRAY_OFFSET=0,"
                        "HPCJOBS_ARRAY_STRIDE=1", "--dependency=afterok:7"]
    assert calls[1][-1] == "--dependency=afterok:7,afterany:501"
    assert "HPCJOBS_ARRAY_OFFSET=10" in calls[1][1]
    assert cancelled == ["502", "501"]  # last first
