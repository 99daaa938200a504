"""The receipt (hpcjobs/report/): numbers from samples, findings and their thresholds, the
words, JSON and picture, where samples are found, and the live views of status and top.
Samples here are written as the monitor writes them; a real job: tests/integration/test_report.py."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcjobs.report import live, live_for_run, receipt_of_dir
from hpcjobs.report.sources import nccl_transport
from hpcjobs.report.numbers import GIB, percentile
from hpcjobs.report.receipt import build
from hpcjobs.report.samples import read_dir
from hpcjobs.slurm import JobStatus

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
CARD = 32 * GIB
V100S = {"i": 0, "uuid": "GPU-aaaa", "name": "Tesla V100S-PCIE-32GB", "mem": CARD,
         "power_limit": 250000, "energy": True}


def write_node(d: Path, node: str, rows: list[dict], *, t0: float = 1000.0, interval: float = 5.0,
               gpus=(V100S,), stop: bool = True, start: dict | None = None, append=False) -> Path:
    """A node's samples file: rows are (partial) sample dicts at t0, t0+interval, ..."""
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{node}.jsonl"
    lines = [{"k": "start", "v": 1, "t": t0, "node": node, "interval": interval, "procs": "tree",
              "cpus": 4, "mem_total": 64 * GIB, "gpus": list(gpus), "gpu_map": "by minor",
              **(start or {})}]
    for i, row in enumerate(rows):
        lines.append({"k": "s", "t": t0 + i * interval, "c": 0.0, "cs": 0.0, "rss": 0, "hwm": 0,
                      "n": 1, "own": 0.01 * i, **row})
    if stop:
        lines.append({"k": "stop", "t": t0 + (len(rows) - 1) * interval + 0.1, "why": "SIGUSR1",
                      "own": 0.05})
    with open(path, "a" if append else "w") as f:
        f.write("".join(json.dumps(x) + "\n" for x in lines))
    return path


def gpu(u=None, m=GIB, p=150_000, e=None, **kw) -> dict:
    g = {"m": m, "p": p, **kw}
    if u is not None:
        g["u"] = u
    if e is not None:
        g["e"] = e
    return g


def test_percentile_nearest_rank():
    assert percentile([0, 0, 100, 100], 95) == 100
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([], 95) is None


def test_gpu_numbers_are_weighted_by_interval_and_energy_comes_from_the_counter(tmp_path):
    rows = [{"g": [gpu(u, m=mem, e=e)]} for u, mem, e in
            ((0, GIB, 1_000_000), (100, 9 * GIB, 2_000_000), (100, 9 * GIB, 3_800_000),
             (0, 2 * GIB, 4_000_000), (0, 2 * GIB, 4_100_000))]
    write_node(tmp_path, "pve2", rows)
    r = build("12", read_dir(tmp_path), status=JobStatus("12", "COMPLETED", elapsed="0:20"))
    (g,) = r.gpus
    # The first sample is the baseline: 4 intervals of 5 s with 100, 100, 0, 0.
    assert g.util_mean == 50.0 and g.idle_share == 0.5 and g.util_p95 == 100.0
    assert g.mem_peak == 9 * GIB and g.memory_total == CARD
    assert g.energy_kwh == pytest.approx(3_100_000 / 3.6e9)
    assert r.energy_kwh == pytest.approx(g.energy_kwh)
    assert r.wall_seconds == 20 and r.wall_source == "slurm"
    assert r.gpu_hours == pytest.approx(20 / 3600) and r.gpu_count == 1


def test_a_counter_that_went_back_adds_nothing_and_runs_are_kept_apart(tmp_path):
    rows1 = [{"g": [gpu(50, e=e)]} for e in (100, 200)]
    rows2 = [{"g": [gpu(50, e=e)]} for e in (5, 10, 30)]  # the driver reloaded in between
    write_node(tmp_path, "n1", rows1)
    write_node(tmp_path, "n1", rows2, t0=5000.0, append=True, start={"restart": 1})
    r = build("12", read_dir(tmp_path))
    (g,) = r.gpus
    assert g.energy_kwh == pytest.approx((100 + 25) / 3.6e9) and g.samples == 5
    assert r.nodes[0].runs == 2
    assert r.wall_seconds == pytest.approx(5.1 + 10.1)  # the runs' spans, not the gap


def test_throttle_shares_from_time_counters_else_from_reasons(tmp_path):
    ns5 = 5 * 10**9
    rows = [{"g": [gpu(90, pc=i * ns5 // 2, st=0, ht=0, pb=0, r=4)]} for i in range(5)]
    write_node(tmp_path / "a", "n1", rows)
    (g,) = build("1", read_dir(tmp_path / "a")).gpus
    assert g.power_capped_share == 0.5 and g.thermal_share == 0.0 and g.throttle_source == "counters"
    rows = [{"g": [gpu(90, r=r)]} for r in (0, 0x40, 0x40, 0, 0x4)]
    write_node(tmp_path / "b", "n1", rows)
    (g,) = build("1", read_dir(tmp_path / "b")).gpus
    assert g.thermal_share == 0.5 and g.power_capped_share == 0.25 and g.throttle_source == "reasons"


def test_cpu_and_memory_per_node(tmp_path):
    rows = [{"c": 0.0, "cs": 0.0, "rss": 100, "hwm": 90, "n": 2},
            {"c": 2.0, "cs": 10.0, "rss": 600, "hwm": 500, "n": 3},
            {"c": 1.0, "cs": 15.0, "rss": 300, "hwm": 500, "n": 3}]
    write_node(tmp_path, "n1", rows, gpus=())
    (n,) = build("1", read_dir(tmp_path)).nodes
    assert (n.cpu_mean, n.cpu_peak, n.cpu_seconds) == (1.5, 2.0, 15.0)
    assert (n.rss_peak, n.hwm_peak, n.procs_peak, n.cpus) == (600, 500, 3, 4)
    assert n.stopped and n.monitor_cpu_seconds == 0.05


def finding_keys(r) -> dict:
    return {f.what: f for f in r.findings}


def test_findings_say_what_and_the_threshold(tmp_path):
    idle = [{"g": [gpu(u, m=9 * GIB, r=0x4 if i % 2 else 0x40)]} for i, u in
            enumerate((0, 0, 0, 80, 0, 0, 90, 0))]
    write_node(tmp_path, "pve2", idle)
    busy = [{"g": [gpu(95, m=int(31.5 * GIB))]} for _ in range(8)]
    write_node(tmp_path, "pve3", busy, gpus=({**V100S, "uuid": "GPU-bbbb"},))
    r = build("7", read_dir(tmp_path), plan={"numbers": {"need_per_device_gb": 20.0},
                                             "framework": "DeepSpeed", "mode": "training"})
    f = finding_keys(r)
    assert f["idle"].text == "GPU 0 on pve2 idle 71% of the time: input pipeline?"
    assert f["idle"].threshold == "idle: utilisation under 5%; said from 30% of the time"
    assert f["memory_low"].text == ("peak memory 9.0 GiB of 32 GiB on GPU 0 on pve2: a smaller "
                                    "allocation or a larger batch would fit")
    assert "close to out of memory" in f["memory_high"].text and "pve3" in f["memory_high"].text
    assert f["plan_over"].text.startswith("peak memory 32 GiB on GPU 0 on pve3 is 1.69x the plan's")
    assert "GPU 0 on pve2 0" not in f["uneven"].text and "pve3 95%" in f["uneven"].text
    assert f["thermal"].text.startswith("thermal throttling on pve2")
    assert f["power_capped"].text.startswith("power capped on pve2")
    assert r.plan_source == "DeepSpeed training plan" and r.plan_need_bytes == 20e9


def test_no_findings_for_a_healthy_job_and_few_samples(tmp_path):
    write_node(tmp_path, "n1", [{"g": [gpu(u, m=20 * GIB)]} for u in (0, 90, 95, 92, 94)])
    assert build("1", read_dir(tmp_path)).findings == []
    write_node(tmp_path / "short", "n1", [{"g": [gpu(0, m=20 * GIB)]} for _ in range(2)])
    assert "idle" not in finding_keys(build("1", read_dir(tmp_path / "short")))


def test_xid_cpu_bound_and_node_memory_findings(tmp_path):
    rows = [{"c": 3.9, "rss": int(60 * GIB), "g": [gpu(0, m=20 * GIB)]} for _ in range(5)]
    path = write_node(tmp_path, "pve1", rows, stop=False)
    with open(path, "a") as f:
        f.write(json.dumps({"k": "xid", "t": 1012.0, "gpu": 0, "xid": 79}) + "\n")
    r = build("1", read_dir(tmp_path), status=JobStatus("1", "FAILED"))
    f = finding_keys(r)
    assert f["xid"].text == "XID 79 on GPU 0 on pve1 at +0:00:12: GPU has fallen off the bus: the node needs attention"
    assert "used 3.9 of its 4 CPUs while GPU 0 on pve1 was idle" in f["cpu_bound"].text
    assert f["node_memory"].text.startswith("pve1: the job's processes reached 60 GiB of the node's memory 64 GiB")
    assert "did not stop cleanly" in f["monitor_killed"].text


def test_a_monitor_that_died_early_and_a_gpu_job_without_nvml(tmp_path):
    write_node(tmp_path, "n1", [{} for _ in range(10)], gpus=(), stop=True,
               start={"gpu_map": "NVML unavailable: NVML Shared Library Not Found"})
    write_node(tmp_path, "n2", [{} for _ in range(3)], gpus=(), stop=False)
    r = build("1", read_dir(tmp_path), status=JobStatus("1", "COMPLETED", elapsed="0:50"),
              allocated_gpus=2)
    f = finding_keys(r)
    assert "the monitor on n2 stopped 0:00:35 before the others" in f["monitor_gap"].text
    assert "no GPU figures on n1: NVML unavailable: NVML Shared Library Not Found" in \
        [x.text for x in r.findings]
    assert r.gpu_count == 2 and r.gpu_hours == pytest.approx(2 * 50 / 3600) and not r.gpus


def test_cpu_job_with_many_idle_cpus(tmp_path):
    write_node(tmp_path, "n1", [{"c": 0.5} for _ in range(5)], gpus=(), start={"cpus": 16})
    assert finding_keys(build("1", read_dir(tmp_path)))["cpu_low"].text == \
        "n1: the job used 0.5 of its 16 CPUs on average: fewer would do"


def test_words_and_json(tmp_path):
    write_node(tmp_path, "pve1", [{"c": 1.0, "cs": 5.0, "rss": GIB, "hwm": GIB,
                                   "g": [gpu(u, m=9 * GIB, e=e)]}
                                  for u, e in ((10, 0), (90, 3.6e6), (90, 7.2e6))])
    r = build("12", read_dir(tmp_path), status=JobStatus("12", "COMPLETED", elapsed="0:10",
                                                         nodes="pve1"), kind="train",
              nccl=(["NET/IB/0/GDRDMA"], "the job's log (x.out)"))
    text = __import__("hpcjobs.report.text", fromlist=["render"]).render(r)
    assert text.splitlines()[0] == "job 12 (train): COMPLETED on pve1, ran 0:00:10"
    assert "energy 0.0020 kWh (NVML energy counters)" in text and "mean GPU utilisation 90%" in text
    assert "NCCL transport: NET/IB/0/GDRDMA (from the job's log (x.out))" in text
    assert "GPU 0 on pve1" in text and "90% / 90%" in text and "9.0 / 32" in text
    d = json.loads(json.dumps(r.to_dict()))
    assert d["gpus"][0]["util_p95"] == 90 and d["nodes"][0]["hwm_peak"] == GIB
    assert d["findings"][0]["what"] == "memory_low" and "threshold" in d["findings"][0]


def test_the_plot_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from hpcjobs.report import plot

    write_node(tmp_path / "s", "n1", [{"g": [gpu(u, m=u * GIB // 10)]} for u in range(0, 100, 10)])
    write_node(tmp_path / "c", "n1", [{"c": 1.0, "rss": GIB} for _ in range(4)], gpus=())
    for sub in ("s", "c"):
        out = plot.draw(receipt_of_dir(tmp_path / sub), str(tmp_path / f"{sub}.png"))
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp*"))


def test_plot_without_matplotlib_says_how_to_get_it(monkeypatch):
    from hpcjobs.errors import BadInput
    from hpcjobs.report import plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(BadInput) as e:
        plot.require_matplotlib()
    assert e.value.field == "--plot" and "pip install 'hpcjobs[plot]'" in str(e.value)


def test_nccl_transport_from_the_log(tmp_path):
    log = tmp_path / "slurm-1.out"
    log.write_text("node1:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[0] [send] via NET/IB/0/GDRDMA\n"
                   "node1:1:1 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[0] [send] via NET/IB/0/GDRDMA\n"
                   "node1:1:1 [0] NCCL INFO Channel 00 : 0[0] -> 1[1] via P2P/IPC/read\n")
    assert nccl_transport(log) == (["NET/IB/0/GDRDMA", "P2P/IPC"], f"the job's log ({log})")
    log.write_text("NCCL INFO Using network Socket\n")
    assert nccl_transport(log)[0] == ["NET/Socket"]
    log.write_text("hello\n")
    assert nccl_transport(log)[0] == [] and "--nccl-debug" in nccl_transport(log)[1]


def test_live_reads_only_the_last_lines(tmp_path):
    rows = [{"c": 1.5, "rss": GIB, "g": [gpu(u, m=10 * GIB, ua=ua)]}
            for u, ua in ((10, 10), (90, 50), (60, 53.3))]
    write_node(tmp_path, "n1", rows, stop=False)
    write_node(tmp_path, "n2", rows, stop=False, gpus=({**V100S, "uuid": "GPU-b"},))
    lv = live(tmp_path, now=1012.0)
    assert (lv.nodes, lv.gpus, lv.util_now, lv.util_mean) == (2, 2, 60.0, 53.3)
    assert lv.mem_used == 10 * GIB and lv.mem_total == CARD and lv.power_w == 300.0
    assert lv.cpu == 3.0 and lv.rss == 2 * GIB and lv.age == 2.0 and not lv.stale()
    assert live(tmp_path / "none") is None


# --- where samples are found ---------------------------------------------------------------

@pytest.fixture
def no_slurm(monkeypatch):
    """Unit tests ask no Slurm: the job's state is what each test says."""
    from hpcjobs.report import sources as locate

    state = {"status": None}
    monkeypatch.setattr(locate, "_status", lambda jid: state["status"])
    monkeypatch.setattr(locate, "_slurm_dirs", lambda jid: state.get("dirs", []))
    return state


def make_run(job_id: str, spec: dict | None = None):
    from hpcjobs import runs

    run = runs.create(runs.new_run_path("mpi"), "#!/bin/bash\n", {"kind": "mpi", "nodes": 1,
                      "gpus_per_node": 1, **(spec or {})}, {}, {"kind": "mpi", "job_id": job_id})
    runs.link_job(run, job_id)
    return run


def test_a_recorded_job_is_found_in_its_run_record(isolated, no_slurm):
    from hpcjobs import report

    run = make_run("501")
    (run.path / "plan.json").write_text(json.dumps({"numbers": {"need_per_device_gb": 4.0}}))
    write_node(run.path / "monitor" / "501", "node1", [{"g": [gpu(50)]} for _ in range(3)])
    no_slurm["status"] = JobStatus("501", "RUNNING", elapsed="0:15", nodes="node1")
    r = report.receipt("501")
    assert r.where == "run record" and r.kind == "mpi" and r.running and r.plan_need_bytes == 4e9
    assert r.nccl == [] and r.nccl_source.startswith("no output file")
    run.update_meta(transport="NET/IB/0/GDRDMA")  # what the preflight recorded
    r = report.receipt("501")
    assert (r.nccl, r.nccl_source) == (["NET/IB/0/GDRDMA"], "the preflight's all-reduce")
    assert live_for_run(run, "501").util_now == 50.0


def test_an_array_a_pending_job_and_one_without_samples(isolated, no_slurm):
    from hpcjobs import report
    from hpcjobs.errors import BadInput

    run = make_run("600")
    for t in ("600_0", "600_1"):
        write_node(run.path / "monitor" / t, "node1", [{}])
    with pytest.raises(BadInput, match=r"600 is a job array.*hpcjobs report 600_0 \(tasks: 600_0, 600_1\)"):
        report.receipt("600")
    assert report.receipt("600_1").job_id == "600_1"
    make_run("601")
    no_slurm["status"] = JobStatus("601", "PENDING")
    with pytest.raises(BadInput, match="job 601 is PENDING: no samples yet"):
        report.receipt("601")
    make_run("602", {"monitor": False})
    no_slurm["status"] = JobStatus("602", "COMPLETED")
    with pytest.raises(BadInput, match="it ran with --no-monitor"):
        report.receipt("602")
    with pytest.raises(BadInput, match="'x1' is not a job id"):
        report.receipt("x1")


def test_a_direct_job_is_found_through_its_working_directory(isolated, no_slurm, tmp_path,
                                                             monkeypatch):
    from hpcjobs import report
    from hpcjobs.errors import BadInput

    work = tmp_path / "work"
    write_node(work / "hpcjobs-monitor" / "700", "node1", [{}, {}])
    no_slurm["status"] = JobStatus("700", "COMPLETED")
    no_slurm["dirs"] = [(work, "Slurm's WorkDir")]
    assert report.receipt("700").where == "Slurm's WorkDir"
    no_slurm["dirs"], no_slurm["status"] = [], None
    monkeypatch.chdir(work)
    assert report.receipt("700").where == "current directory"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match="no samples of job 700 and no such job known"):
        report.receipt("700")
    assert report.receipt("700", str(work / "hpcjobs-monitor")).where == "--dir"


def test_the_command(isolated, no_slurm, tmp_path):
    from hpcjobs.cli import main

    write_node(tmp_path / "hpcjobs-monitor" / "800", "node1", [{"g": [gpu(40)]} for _ in range(3)])
    runner = CliRunner()
    r = runner.invoke(main, ["report", "800", "--dir", str(tmp_path / "hpcjobs-monitor"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["gpus"][0]["util_mean"] == 40
    r = runner.invoke(main, ["report", "800", "--dir", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "--dir:" in r.output and r.output.count("\n") == 1
    r = runner.invoke(main, ["report", "800", "--dir", str(tmp_path / "hpcjobs-monitor"),
                             "--plot", str(tmp_path / "no" / "x.png")])
    # Without the optional matplotlib, that is the refusal (the same exit 2, one line).
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert ("does not exist" if HAVE_MPL else "matplotlib is not installed") in r.output


def test_status_shows_the_mean_gpu_utilisation_of_running_jobs(isolated):
    from hpcjobs.cli.watch import _gpu_util, _table

    run = make_run("900")
    write_node(run.path / "monitor" / "900", "node1", [{"g": [gpu(80, ua=71.0)]}], stop=False)
    running, done = JobStatus("900", "RUNNING", elapsed="1:00"), JobStatus("900", "COMPLETED")
    assert _gpu_util(running, run) == 71.0 and _gpu_util(done, run) is None
    lines = _table([(running, run)]).splitlines()
    assert lines[0].split()[6] == "GPU%" and lines[1].split()[5] == "71"


def test_top_rows(isolated):
    from hpcjobs.cli.report import TOP_HEAD, top_rows

    run = make_run("901")
    write_node(run.path / "monitor" / "901", "node1", [{"c": 2.0, "rss": 2 * GIB,
                                                        "g": [gpu(80, m=8 * GIB, ua=60)]}], stop=False)
    (row,) = top_rows([(JobStatus("901", "RUNNING", elapsed="2:00", nodes="node1"), run)], now=1003.0)
    assert dict(zip(TOP_HEAD, row)) == {
        "JOBID": "901", "KIND": "mpi", "STATE": "RUNNING", "ELAPSED": "0:02:00", "NODES": "node1",
        "GPU%": "80", "GPU%avg": "60", "GPUMEM GiB": "8.0/32.0", "POWER W": "150", "CPU": "2.0",
        "RSS GiB": "2.0", "SAMPLE": "3s"}
