"""The benchmark jobs without Slurm: nccl-tests' arithmetic, the verdict, the output files,
the two kinds' checks and rendering, and both programs run for real on this host (torch gloo
over loopback, Open MPI over shared memory) where torch / mpi4py are installed."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hpcjobs import kinds
from hpcjobs.bench import report
from hpcjobs.cluster import builtin
from hpcjobs.rendering import materialize
from hpcjobs.spec import JobSpec
from tests.conftest import ROOT, unchecked

# --- nccl-tests' definitions ------------------------------------------------------------------

def test_algbw_is_bytes_over_time_in_decimal_gb():
    # 1 GiB in 0.1 s: 10.737 GB/s (nccl-tests divides by 1.0E9, not 2^30)
    assert report.algbw(1 << 30, 0.1) == pytest.approx(10.737418, rel=1e-6)
    assert report.algbw(1000, 0) == 0.0


@pytest.mark.parametrize("n,factor", [(1, 0.0), (2, 1.0), (3, 4 / 3), (4, 1.5), (8, 1.75)])
def test_allreduce_busbw_factor_is_2_n_minus_1_over_n(n, factor):
    assert report.allreduce_busbw(10.0, n) == pytest.approx(10.0 * factor)


def test_parse_size_and_human():
    assert [report.parse_size(s) for s in ("1K", "64M", "1G", "4096", "2KiB", "8kb", 7)] == \
        [1024, 64 << 20, 1 << 30, 4096, 2048, 8192, 7]
    for bad in ("1T", "x", "", "-1K", "1.5M"):
        with pytest.raises(ValueError):
            report.parse_size(bad)
    assert [report.human(n) for n in (1024, 1 << 30, 3 << 20, 1000)] == ["1K", "1G", "3M", "1000"]


def test_sweep_covers_1k_to_1g_by_doubling_and_keeps_the_max():
    s = report.sweep(1024, 1 << 30)
    assert s[0] == 1024 and s[-1] == 1 << 30 and len(s) == 21
    assert all(b == 2 * a for a, b in itertools.pairwise(s))
    assert report.sweep(1000, 5000, 2, align=4) == [1000, 2000, 4000, 5000]
    assert report.sweep(2, 9, 2, align=4) == [4, 8]  # rounded down to whole elements, no zero
    with pytest.raises(ValueError):
        report.sweep(4096, 1024)


def test_median():
    assert report.median([3.0, 1.0, 2.0]) == 2.0
    assert report.median([4.0, 1.0, 2.0, 3.0]) == 2.5


# --- verdict ----------------------------------------------------------------------------------

def test_verdict_edr_uses_12_5_gbytes():
    v = report.verdict(11.2, 1 << 30, 100, nnodes=3, fabric="infiniband")
    assert v.line_rate == 12.5 and v.share == pytest.approx(0.896) and v.level == "good"
    assert v.text == "busbw 11.20 GB/s at 1G = 90% of the 12.50 GB/s link (infiniband 100 Gb/s): good"


@pytest.mark.parametrize("busbw,level", [(10.0, "good"), (7.0, "fair"), (2.4, "poor"),
                                         (20.0, "above-line-rate")])
def test_verdict_levels(busbw, level):
    v = report.verdict(busbw, 1 << 30, 100, nnodes=2, fabric="infiniband")
    assert v.level == level
    if level == "poor":
        assert "hpcjobs doctor" in v.text and "TCP sockets instead of RDMA" in v.text


def test_verdict_on_ethernet_points_at_the_interface():
    v = report.verdict(0.3, 4 << 20, 10, nnodes=3, fabric="ethernet")
    assert v.level == "poor" and "NCCL_SOCKET_IFNAME" in v.text and "RDMA" not in v.text


def test_verdict_one_node_is_no_fabric_verdict():
    v = report.verdict(300.0, 1 << 30, 100, nnodes=1)
    assert v.level == "no-fabric" and "never crossed the fabric" in v.text


def test_verdict_without_rate():
    assert report.verdict(1.0, 1024, 0, nnodes=2).level == "no-fabric"


# --- output -----------------------------------------------------------------------------------

def _row(size, t, n):
    alg = report.algbw(size, t)
    return {"size": size, "count": size // 4, "type": "float", "redop": "sum", "time_us": t * 1e6,
            "algbw": alg, "busbw": report.allreduce_busbw(alg, n)}


def test_allreduce_table_has_nccl_tests_columns():
    lines = report.allreduce_table([_row(1 << 30, 0.1, 3)])
    assert lines[0].split()[1:] == ["size", "count", "type", "redop", "time", "algbw", "busbw"]
    assert lines[2].split() == ["1073741824", "268435456", "float", "sum", "100000.00", "10.74", "14.32"]


def test_json_and_png(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    rows = [_row(s, s / 1e9, 2) for s in (1024, 2048)]
    res = report.Result("allreduce", rows, report.verdict(rows[-1]["busbw"], 2048, 100, 2), {"x": 1})
    jpath, ppath = report.output_paths(str(tmp_path), "bench-allreduce")
    assert jpath.endswith("bench-allreduce-42.json") and ppath.endswith("bench-allreduce-42.png")
    report.write_json(jpath, res)
    d = json.loads(Path(jpath).read_text())
    assert d["benchmark"] == "allreduce" and d["x"] == 1 and d["rows"] == rows
    assert d["verdict"]["level"] == "poor"
    png = report.write_png(ppath, res, y="busbw", ylabel="busbw", title="t")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert png is None and not os.path.exists(ppath)
    else:
        assert png == ppath and Path(ppath).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the kinds --------------------------------------------------------------------------------

def spec(kind, **kw):
    c = builtin()
    return unchecked(JobSpec(kind=kind, nodes=kw.pop("nodes", 2), options=kw.pop("options", {}), **kw), c), c


def test_bench_allreduce_renders_its_program_with_the_link_rate():
    s, c = spec("bench-allreduce", options={"max_size": "64M", "iters": 7})
    kinds.get("bench-allreduce").check(s.spec, c)
    script = materialize(s, run_dir="/runs/x").script
    assert "#SBATCH --ntasks-per-node=1" in script and "#SBATCH --gres=gpu:v100s:1" in script
    assert ('-m hpcjobs.launch -- \\\n    "$HPCJOBS_PYTHON" -m hpcjobs.bench.allreduce --min-size=1K '
            "--step-factor=2 --dtype=float --backend=auto --max-size=64M --iters=7 "
            "--link-gbps=100 --fabric=infiniband") in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_bench_mpi_renders_srun_pmix_and_two_ranks():
    s, c = spec("bench-mpi", options={"max_size": "1M"})
    kinds.get("bench-mpi").check(s.spec, c)
    script = materialize(s).script
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=1" in script
    assert "hpcjobs_step --mpi=pmix" in script
    assert "-m hpcjobs.bench.pingpong --max-size=1M --iters=1000 --window=64 --link-gbps=100" in script


def test_values_reach_bash_quoted():
    s, _ = spec("bench-allreduce", options={"min_size": "1K; rm -rf /"})
    assert "'--min-size=1K; rm -rf /'" in materialize(s).script


def cli(*args, tmp_path):
    env = {**os.environ, "HPCJOBS_RUNS_DIR": str(tmp_path / "runs"),
           "HPCJOBS_SANDBOX_STATE": str(tmp_path / "none"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    env.pop("HPCJOBS_CLUSTER", None)
    return subprocess.run([sys.executable, "-m", "hpcjobs", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, check=False)


@pytest.mark.parametrize("args,field", [
    (["bench-mpi", "--nodes", "3"], "--nodes"),
    (["bench-mpi"], "--nodes"),  # the partition's 3 nodes
    (["bench-mpi", "--nodes", "2", "--window", "0"], "--window"),
    (["bench-mpi", "--nodes", "2", "--max-size", "lots"], "--max-size"),
    (["bench-allreduce", "--max-size", "1T"], "--max-size"),
    (["bench-allreduce", "--min-size", "1M", "--max-size", "1K"], "--max-size"),
    (["bench-allreduce", "--min-size", "2"], "--min-size"),
    (["bench-allreduce", "--step-factor", "1"], "--step-factor"),
    (["bench-allreduce", "--iters", "0"], "--iters"),
    (["bench-allreduce", "--", "true"], "PROG"),
])
def test_bad_input_exit_2_nothing_written(tmp_path, args, field):
    r = cli("submit", *args, tmp_path=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"hpcjobs: error: {field}") and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))


def test_kinds_are_listed(tmp_path):
    out = cli("kinds", tmp_path=tmp_path).stdout
    assert "bench-allreduce" in out and "bench-mpi" in out


# --- the programs, for real on this host ------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_allreduce_program_on_two_local_ranks(tmp_path):
    pytest.importorskip("torch")
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "SLURM_JOB_ID": "7",
               "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "hpcjobs.bench.allreduce", "--backend", "gloo", "--max-size", "64K",
             "--iters", "3", "--warmup", "1", "--link-gbps", "100", "--out", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT))
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    out0 = outs[0][0]
    assert outs[1][0] == ""  # only rank 0 prints
    assert "2 ranks on 1 node(s)" in out0 and "check: all_reduce of rank+1 over 2 ranks = 3" in out0
    assert "ok" in out0 and "verdict: busbw" in out0 and "never crossed the fabric" in out0
    d = json.loads((tmp_path / "bench-allreduce-7.json").read_text())
    assert [r["size"] for r in d["rows"]] == report.sweep(1024, 64 << 10)
    for r in d["rows"]:
        assert r["count"] == r["size"] // 4
        assert r["algbw"] == pytest.approx(r["size"] / 1e9 / (r["time_us"] / 1e6))
        assert r["busbw"] == pytest.approx(r["algbw"] * 2 * (2 - 1) / 2)
    assert d["world_size"] == 2 and d["nnodes"] == 1 and d["check_ok"] is True
    assert d["verdict"]["level"] == "no-fabric"


def test_pingpong_program_on_two_local_ranks(tmp_path):
    pytest.importorskip("mpi4py")
    if not shutil.which("mpirun"):
        pytest.skip("no mpirun")
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "SLURM_JOB_ID": "8"}
    r = subprocess.run(["mpirun", "-np", "2", "--oversubscribe", sys.executable, "-m",
                        "hpcjobs.bench.pingpong", "--max-size", "64K", "--iters", "50", "--bw-iters", "5",
                        "--link-gbps", "100", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "ping-pong rank 0 on" in r.stdout and "(same node)" in r.stdout
    d = json.loads((tmp_path / "bench-mpi-8.json").read_text())
    assert [x["size"] for x in d["rows"]] == [0] + report.sweep(1, 64 << 10)
    assert d["rows"][0]["bandwidth"] is None and all(x["latency_us"] > 0 for x in d["rows"])
    assert all(x["bandwidth"] > 0 for x in d["rows"][1:])
    assert d["verdict"]["level"] == "no-fabric"


def test_pingpong_alone_says_it_needs_two_ranks():
    pytest.importorskip("mpi4py")
    r = subprocess.run([sys.executable, "-m", "hpcjobs.bench.pingpong"], capture_output=True, text=True,
                       cwd=ROOT, timeout=60, check=False,
                       env={**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1",
                            "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
    assert r.returncode == 2 and "needs 2 ranks" in r.stderr and "--mpi=pmix" in r.stderr


# --- nccl-tests output and the GPU comparison -------------------------------------------------

def _nccl_line(size, oop, inp):
    """One data row exactly as nccl-tests' util.cu prints it (preamble + two bodies)."""
    # printf formats copied from util.cu on purpose, hence % formatting
    pre = "%12li  %12li  %8s  %6s  %6s" % (size, size // 4, "float", "sum", "%6i" % -1)  # noqa: UP031
    body = "".join("  %7s  %6s  %6s  %6g" % (f"{t:.2f}"[:7], f"{a:.2f}", f"{b:.2f}", 0)  # noqa: UP031
                   for t, a, b in (oop, inp))
    return pre + body


NCCL_TESTS_OUT = "\n".join([
    "# nccl-tests version 2.19.6 nccl-headers=23102 nccl-library=23102",
    "#" + " " * 62 + "out-of-place" + " " * 23 + "in-place",
    ("#       size         count      type   redop    root     time   algbw   busbw  #wrong     time   algbw"
     "   busbw  #wrong "),
    _nccl_line(1024, (10.5, 0.10, 0.10), (10.1, 0.10, 0.10)),
    _nccl_line(1 << 30, (3300.0, 325.4, 325.4), (3290.0, 326.4, 326.4)),
    "# Out of bounds values : 0 OK",
    "# Avg bus bandwidth    : 163.2 ",
])


def test_parse_nccl_tests_takes_the_in_place_columns():
    rows = report.parse_nccl_tests(NCCL_TESTS_OUT)
    assert [r["size"] for r in rows] == [1024, 1 << 30]
    assert rows[1]["busbw"] == 326.4 and rows[1]["time_us"] == 3290.0 and rows[1]["oop"]["busbw"] == 325.4
    assert rows[0]["type"] == "float" and rows[0]["redop"] == "sum" and rows[0]["wrong"] == "0"


def test_gpu_compare_script(tmp_path):
    nccl = tmp_path / "nccl.txt"
    nccl.write_text(NCCL_TESTS_OUT)
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"rows": [_row(1024, 25e-6, 2), _row(1 << 30, 3.4e-3, 2)]}))
    off = tmp_path / "off.json"
    off.write_text(json.dumps({"rows": [_row(1 << 30, 40e-3, 2)]}))
    r = subprocess.run([sys.executable, str(ROOT / "tests/gpu/compare_allreduce.py"), "--bench", str(bench),
                        "--nccl", str(nccl), "--bench-p2poff", str(off), "--md", str(tmp_path / "c.md"),
                        "--json", str(tmp_path / "c.json")], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "c.json").read_text())
    big = rows[-1]
    assert big["size"] == 1 << 30 and big["ratio"] == pytest.approx(report.algbw(1 << 30, 3.4e-3) / 326.4)
    assert big["p2poff_vs_default"] == pytest.approx(3.4 / 40)
    assert "| 1G | 326.40 |" in (tmp_path / "c.md").read_text()


def test_mpi_verdict_names_mpi_settings():
    v = report.verdict(0.3, 4 << 20, 10, nnodes=2, fabric="ethernet", what="bandwidth")
    assert "OMPI_MCA_btl_tcp_if_include" in v.text and "NCCL" not in v.text
    v = report.verdict(3.0, 4 << 20, 100, nnodes=2, fabric="infiniband", what="bandwidth")
    assert v.text.startswith("bandwidth 3.00 GB/s at 4M") and "UCX_NET_DEVICES" in v.text


def test_pingpong_with_extra_ranks_leaves_them_idle(tmp_path):
    """The direct script asks for every node of the partition: ranks beyond 2 must not hang."""
    pytest.importorskip("mpi4py")
    if not shutil.which("mpirun"):
        pytest.skip("no mpirun")
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    r = subprocess.run(["mpirun", "-np", "3", "--oversubscribe", sys.executable, "-m", "hpcjobs.bench.pingpong",
                        "--max-size", "4K", "--iters", "10", "--bw-iters", "2"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "ranks 2..2 idle" in r.stdout and "# verdict:" in r.stdout
