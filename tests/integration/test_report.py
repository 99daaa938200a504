"""Every job's receipt, from real jobs on the sandbox: the monitor samples a 3-node job beside
it and `hpcjobs report` agrees with what the job itself says it used; the monitor's death does
not fail the job and its records stay valid. (GPU figures: tests/gpu/run_report_gpu.sh.)"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import hpcjobs, run_job

PROGRAM = str(ROOT / "tests" / "integration" / "receipt_job.py")


def own_figures(output: str) -> dict[str, dict]:
    """What each rank printed about itself, by node."""
    out = {}
    for line in output.splitlines():
        if line.startswith("RECEIPT-JOB "):
            d = json.loads(line.split(" ", 1)[1])
            out[d["node"]] = d
    return out


def report_json(job_id: str, env=None, cwd=ROOT) -> dict:
    r = hpcjobs("report", job_id, "--json", env=env, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_receipt_of_a_3_node_job_matches_what_the_job_used(runs_env, tmp_path):
    """Each rank fills 500/600/700 MB on its own node (rank 0 also burns CPU first): the
    receipt's per-node peaks match the ranks' own VmHWM/VmRSS within 10% (attribution on one
    shared /proc), CPU seconds match getrusage, and a running job shows its samples so far."""
    sub = hpcjobs("submit", "mpi", "--nodes", "3", "--monitor-interval", "0.5", "--json", "--",
                  PROGRAM, "500", "2", "4", env=runs_env)
    assert sub.returncode == 0, sub.stderr
    job_id = json.loads(sub.stdout)["job_id"]
    live = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the samples so far, while it runs
        r = hpcjobs("report", job_id, "--json", env=runs_env)
        if r.returncode == 0:
            d = json.loads(r.stdout)
            if d["running"] and len(d["nodes"]) == 3 and min(n["samples"] for n in d["nodes"]) >= 3:
                live = d
                break
        time.sleep(0.5)
    assert live is not None, "no running receipt seen"
    assert live["state"] == "RUNNING"
    w = hpcjobs("wait", job_id, env=runs_env)
    assert w.returncode == 0, w.stderr
    rec = report_json(job_id, env=runs_env)
    run_dir = json.loads(sub.stdout)["run_dir"]
    output = Path(f"{run_dir}/slurm-{job_id}.out").read_text()
    own = own_figures(output)
    assert sorted(own) == ["node1", "node2", "node3"], output
    assert rec["state"] == "COMPLETED" and not rec["running"] and rec["where"] == "run record"
    nodes = {n["node"]: n for n in rec["nodes"]}
    for node, mine in own.items():
        n = nodes[node]
        assert n["procs"] == "tree" and n["stopped"] and n["samples"] >= 6, n
        assert n["hwm_peak"] == pytest.approx(mine["vmhwm"], rel=0.10), (node, n, mine)
        assert n["rss_peak"] == pytest.approx(mine["vmrss"], rel=0.10), (node, n, mine)
    # rank 0's CPU (burn + start-up) on node1; the others only started Python.
    assert nodes["node1"]["cpu_seconds"] == pytest.approx(own["node1"]["cpu_s"], rel=0.15, abs=0.3)
    assert nodes["node2"]["cpu_seconds"] < own["node1"]["cpu_s"]
    assert rec["monitor_cpu_seconds"] < 2.0 and rec["wall_source"] == "slurm"
    json.loads(Path(f"{run_dir}/meta.json").read_text())  # the record itself is intact
    text = hpcjobs("report", job_id, env=runs_env)
    assert text.returncode == 0 and text.stdout.startswith(f"job {job_id} (mpi): COMPLETED on node[1-3]")
    assert "node3" in text.stdout and "findings:" in text.stdout
    pytest.importorskip("matplotlib")
    png = tmp_path / "receipt.png"
    p = hpcjobs("report", job_id, "--plot", str(png), env=runs_env)
    assert p.returncode == 0, p.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_the_monitors_death_does_not_fail_a_direct_job(tmp_path):
    """A direct-use script (no run record): rank 0 SIGKILLs its node's monitor; the job still
    completes, its samples beside it (hpcjobs-monitor/ in the working directory) stay valid
    JSON, and `hpcjobs report JOBID` finds them through Slurm's WorkDir from elsewhere."""
    from hpcjobs.rendering import direct_script
    from hpcjobs.report.samples import read_dir

    script = tmp_path / "mpi.sbatch"
    script.write_text(direct_script("mpi"))
    import os

    env = {**os.environ, "HPCJOBS_PYTHON": sys.executable, "HPCJOBS_MONITOR_INTERVAL": "0.5"}
    job = run_job(["-N2", str(script), PROGRAM, "200", "0", "2.5", "--kill-monitor",
                   str(tmp_path / "hpcjobs-monitor")], cwd=tmp_path, env=env)
    assert job.ok, str(job)
    own = own_figures(job.output)
    assert own["node1"]["killed_monitor"], job.output
    samples = {ns.node: ns for ns in read_dir(tmp_path / "hpcjobs-monitor" / job.job_id)}
    assert sorted(samples) == ["node1", "node2"]
    assert samples["node1"].torn == 0 and samples["node1"].segments[-1].stop is None
    assert samples["node2"].segments[-1].stop is not None and len(samples["node2"].samples) >= 4
    rec = report_json(job.job_id)  # from the repository root: found through WorkDir
    assert rec["where"] == "Slurm's WorkDir" and rec["state"] == "COMPLETED"
    what = {f["what"] for f in rec["findings"] if "node1" in f["text"]}
    assert what & {"monitor_gap", "monitor_killed"}, rec["findings"]
