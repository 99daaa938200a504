"""Fifty `hpcjobs submit` processes at once: fifty distinct jobs, fifty intact run records
(every file complete and parseable, every by-id link to its own record, no temporary left),
and every job ran its own command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

N = 50


def test_fifty_parallel_submits(sandbox, tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "HPCJOBS_RUNS_DIR": str(runs)}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "hpcjobs", "submit", "mpi", "--nodes", "1", "--json",
         "--job-name", f"par-{i}", "--", "sh", "-c", f"echo payload {i}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        for i in range(N)]
    results = [(*p.communicate(timeout=300), p.returncode) for p in procs]
    assert [rc for _, _, rc in results] == [0] * N, [e for _, e, rc in results if rc][:3]
    subs = [json.loads(out) for out, _, _ in results]
    ids = [s["job_id"] for s in subs]
    assert len(set(ids)) == N
    assert len({s["run_dir"] for s in subs}) == N

    # The records: exactly N, each complete, each linked from by-id under its own job id.
    dirs = sorted(p for p in runs.iterdir() if p.name != "by-id")
    assert len(dirs) == N and not [p for p in dirs if p.name.startswith(".")], dirs
    assert sorted(os.listdir(runs / "by-id")) == sorted(ids)
    for i, s in enumerate(subs):
        d = Path(s["run_dir"])
        meta = json.loads((d / "meta.json").read_text())
        spec = json.loads((d / "spec.json").read_text())
        assert meta["job_id"] == s["job_id"] and spec["job_name"] == f"par-{i}"
        assert spec["program"] == ["sh", "-c", f"echo payload {i}"]
        assert (d / "job.sbatch").read_text().startswith("#!/bin/bash\n")
        assert (runs / "by-id" / s["job_id"]).resolve() == d.resolve()
        assert not [p for p in d.iterdir() if p.name.startswith(".")], "temporary file left"

    # Every job ran its own command.
    for i, s in enumerate(subs):
        w = subprocess.run([sys.executable, "-m", "hpcjobs", "wait", s["job_id"]],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        assert w.returncode == 0, w.stdout + w.stderr
        out = (Path(s["run_dir"]) / f"slurm-{s['job_id']}.out").read_text()
        assert f"payload {i}\n" in out
    st = json.loads(subprocess.run([sys.executable, "-m", "hpcjobs", "status", "--all", "--json"],
                                   capture_output=True, text=True, env=env, cwd=ROOT).stdout)
    assert sorted(x["job_id"] for x in st) == sorted(ids)
    assert {x["state"] for x in st} == {"COMPLETED"}
