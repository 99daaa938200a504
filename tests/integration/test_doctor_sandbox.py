"""`hpcjobs doctor` on the real sandbox: no RDMA there, and it must say so plainly, pass the
Slurm checks, and work inside a job step on every node."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from hpcjobs.doctor import NO_RDMA
from tests.conftest import ROOT
from tests.integration.conftest import run_job, srun

ENV = {k: v for k, v in os.environ.items()
       if k != "HPCJOBS_CLUSTER" and not k.startswith(("NCCL_", "UCX_", "OMPI_MCA_"))}


def checks(doc: dict) -> dict:
    return {c["name"]: c for c in doc["checks"]}


def test_doctor_on_the_submit_host(sandbox):
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "doctor", "--json"], capture_output=True,
                       text=True, cwd=ROOT, env=ENV, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(r.stdout)
    c = checks(d)
    assert d["cluster"] == "sandbox" and d["fabric"] == NO_RDMA and d["ok"] is True
    assert c["rdma"]["status"] == "warn" and c["rdma"]["summary"] == NO_RDMA
    assert c["munge"]["status"] == "pass" and c["slurmctld"]["status"] == "pass"
    # The submit host is not a node: said so, not failed.
    assert c["slurm-node"]["status"] == "skip" and c["interface"]["status"] == "skip"


def test_doctor_in_a_job_step_on_every_node(sandbox):
    p = srun(["-l", f"-N{sandbox.n}", "--ntasks-per-node=1", sys.executable, "-m", "hpcjobs",
              "doctor", "--json"], env=ENV)
    assert p.returncode == 0, p.stdout + p.stderr
    per_task: dict[int, list[str]] = {}
    for line in p.stdout.splitlines():
        m = re.match(r"^\s*(\d+): ?(.*)$", line)
        assert m, line
        per_task.setdefault(int(m.group(1)), []).append(m.group(2))
    assert sorted(per_task) == list(range(sandbox.n))
    seen = set()
    for lines in per_task.values():
        d = json.loads("\n".join(lines))
        c = checks(d)
        node = d["node"]
        k = int(node.removeprefix("node"))
        seen.add(node)
        assert d["fabric"] == NO_RDMA and d["ok"] is True, d
        assert c["interface"]["status"] == "pass", c["interface"]
        assert c["interface"]["summary"] == f"fast-network interface sbx0 up with 10.200.0.{k}"
        assert c["slurm-node"]["status"] == "pass", c["slurm-node"]
        assert f"node {node} " in c["slurm-node"]["summary"] and "Gres=gpu:v100s:1" in c["slurm-node"]["summary"]
        assert "in this job step" in c["memlock"]["summary"] or c["memlock"]["status"] == "pass"
    assert seen == set(sandbox.nodes)


def test_doctor_in_a_job_flags_the_old_guides_environment(sandbox):
    bad = {**ENV, "NCCL_IB_DISABLE": "0", "NCCL_DEBUG": "INFO", "OMPI_MCA_btl": "openib,self,vader"}
    p = srun(["-N1", sys.executable, "-m", "hpcjobs", "doctor", "--json"], env=bad)
    assert p.returncode == 1, p.stderr
    c = checks(json.loads(p.stdout))
    assert c["env:OMPI_MCA_btl"]["status"] == "fail"
    assert c["env:NCCL_IB_DISABLE"]["status"] == "warn" and c["env:NCCL_DEBUG"]["status"] == "warn"


def test_doctor_text_verdict_in_a_batch_job(sandbox, shared_tmp):
    job = run_job(["-N1", "-o", str(shared_tmp / "doctor-%j.out"),
                   "--wrap", f"{sys.executable} -m hpcjobs doctor"], env=ENV)
    assert job.ok, job
    assert f"verdict: {NO_RDMA}; 0 failure(s)" in job.output
    assert re.search(r"PASS  slurm-node +node node\d+ ", job.output), job.output
