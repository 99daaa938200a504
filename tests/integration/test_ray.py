"""The ray kind on the real sandbox (Ray from PyPI, pinned in scripts/install): a Ray cluster
over 3 nodes whose tasks ran on all of them; two Ray jobs at once on the same nodes, every port
their Ray processes listen on read from /proc and found inside each job's own block, the cluster
closed to a client without the job's token, and the job's exit code the driver's; and a node
whose Ray cannot start, named by the job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import FINAL, hpcjobs, scontrol_job, wait_job

pytest.importorskip("ray", reason="Ray is installed by scripts/install --frameworks")

EXAMPLE = str(ROOT / "examples" / "ray_tasks.py")
SANDBOX_IPS = "10.200.0.1, 10.200.0.2, 10.200.0.3"
PORTS_LINE = re.compile(r"^hpcjobs: Ray ports of job (\d+) step (\d+): (\d+)-(\d+), GCS (\d+)", re.M)

# A driver that works across the nodes, says it is ready, and keeps the cluster up until the
# test lets it go; it exits with the code it is given.
HOLD = '''
import os, sys, time
import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
ray.init()
n = len([x for x in ray.nodes() if x["Alive"]])
pg = placement_group([{"CPU": 1}] * n, strategy="STRICT_SPREAD")
ray.get(pg.ready(), timeout=120)
ip = ray.remote(lambda: ray.util.get_node_ip_address())
ips = sorted(set(ray.get([ip.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
    pg, placement_group_bundle_index=b)).remote() for b in range(n)])))
print("hold: tasks ran on", ", ".join(ips), flush=True)
d, code, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
open(os.path.join(d, "ready-" + os.environ["SLURM_JOB_ID"]), "w").close()
end = time.monotonic() + limit
while not os.path.exists(os.path.join(d, "release")) and time.monotonic() < end:
    time.sleep(0.5)
sys.exit(code)
'''


def test_submit_ray_three_nodes(sandbox, runs_env):
    """The issue's command: hpcjobs submit ray --nodes 3 --wait -- examples/ray_tasks.py."""
    sandbox.need(3)
    r = hpcjobs("submit", "ray", "--nodes", "3", "--wait", "--json", "--", EXAMPLE, env=runs_env)
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = json.loads(r.stdout.splitlines()[0])["job_id"]
    out = hpcjobs("logs", job_id, env=runs_env).stdout
    assert "hpcjobs: Ray cluster up: `ray status` shows 3 of 3 nodes active; head 10.200.0.1:" in out
    assert re.search(r"^driver on node1 \(10\.200\.0\.1\): Ray [\d.]+, 3 nodes alive", out, re.M), out
    assert f"12 tasks ran on 3 nodes: {SANDBOX_IPS} (expected 3): OK" in out, out
    assert re.search(r"^ray\.get of 3 arrays of 8\.0 MB made on 3 nodes: sums match .*: OK$", out, re.M)
    assert re.search(r"^actor Counter on 10\.200\.0\.\d: sum of 1\.\.10 = 55 \(expected 55\): OK$",
                     out, re.M), out
    assert "hpcjobs: Ray driver exited with code 0; stopping the Ray cluster" in out


def ray_listeners(job_id: str) -> list[tuple[int, str, int]]:
    """(pid, command, port) of every TCP listener of the job's Ray processes on any node.

    The job's processes are those whose environment holds SLURM_JOB_ID; Ray's are the ones that
    run Ray's code (gcs_server, raylet, ray::... workers, Python under ray/) and the driver.
    Sockets that every Slurm task inherits from its slurmstepd are Slurm's, not Ray's, and are
    left out with the launcher's and runner's processes that hold them."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if f"SLURM_JOB_ID={job_id}".encode() not in environ:
            continue
        ray_code = any("/site-packages/ray/" in a or a.endswith("/bin/ray") or a.startswith("ray.")
                       for a in argv[1:3])  # python [-u] .../ray/x.py, bin/ray start, -m ray.y
        driver = len(argv) > 1 and argv[1].endswith("/hold.py")
        if not (comm in ("gcs_server", "raylet") or comm.startswith("ray::") or ray_code or driver):
            continue
        inodes = set()
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
            for table in ("tcp", "tcp6"):
                for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                    f = line.split()
                    if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                        out.append((int(pid), comm, int(f[1].rsplit(":", 1)[1], 16)))
        except OSError:
            continue
    return out


def wait_ready(jobs: dict[str, Path], ready_dir: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not all((ready_dir / f"ready-{j}").exists() for j in jobs):
        for j, out in jobs.items():
            f = scontrol_job(j)
            if f.get("JobState") in FINAL:
                pytest.fail(f"job {j} ended {f['JobState']} before its driver was ready:\n"
                            + (out.read_text(errors="replace")[-4000:] if out.exists() else ""))
        assert time.monotonic() < deadline, f"drivers not ready after {timeout:.0f} s"
        time.sleep(1)


def test_two_ray_jobs_on_the_same_nodes_use_their_own_ports(sandbox, shared_tmp):
    """One job from the direct script, one from hpcjobs submit, on the same 3 nodes at once."""
    sandbox.need(3)
    (shared_tmp / "hold.py").write_text(HOLD)
    env = {k: v for k, v in os.environ.items() if k != "HPCJOBS_CLUSTER"}
    env.update(HPCJOBS_PYTHON=sys.executable, HPCJOBS_RUNS_DIR=str(shared_tmp / "runs"))
    # --gres=none: the sandbox's nodes have one (placeholder) GPU each, which two jobs cannot share.
    a = subprocess.run(["sbatch", "--parsable", "--nodes=3", "--gres=none", "--time=10",
                        f"--output={shared_tmp}/slurm-%j.out", str(ROOT / "job_templates" / "ray.sbatch"),
                        str(shared_tmp / "hold.py"), str(shared_tmp), "0", "240"],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert a.returncode == 0, a.stderr
    job_a = a.stdout.strip().split(";")[0]
    out_a = shared_tmp / f"slurm-{job_a}.out"
    # The second job starts once the first one's cluster is up: its nodes then find the first
    # job's Ray listening on the same nodes (and the 2 cores are not asked to start 6 Ray
    # nodes at once).
    try:
        wait_ready({job_a: out_a}, shared_tmp)
    except BaseException:
        (shared_tmp / "release").touch()
        raise
    b = hpcjobs("submit", "ray", "--nodes", "3", "--gpus-per-node", "0", "--time", "10", "--json",
                "--", str(shared_tmp / "hold.py"), str(shared_tmp), "3", "240", env=env)
    assert b.returncode == 0, b.stderr
    sub = json.loads(b.stdout.splitlines()[0])
    job_b, out_b = sub["job_id"], Path(sub["run_dir"]) / f"slurm-{sub['job_id']}.out"
    outputs = {job_a: out_a, job_b: out_b}
    try:
        wait_ready(outputs, shared_tmp)
        blocks, seen = {}, {}
        for job, path in outputs.items():
            text = path.read_text(errors="replace")
            assert scontrol_job(job)["NodeList"] == "node[1-3]", text
            assert f"hold: tasks ran on {SANDBOX_IPS}" in text, text
            m = PORTS_LINE.search(text)
            assert m and m[1] == job, text
            lo, hi, gcs = int(m[3]), int(m[4]), int(m[5])
            blocks[job] = range(lo, hi + 1)
            seen[job] = ray_listeners(job)
            ports = {p for _, _, p in seen[job]}
            outside = [x for x in seen[job] if x[2] not in blocks[job]]
            assert not outside, f"job {job}: Ray listens outside its block {lo}-{hi}: {outside}"
            # Ray used the ports it was given: the GCS, each node's node and object managers
            # (3 nodes, one port number each: the nodes are separate network namespaces).
            assert {gcs, lo + 4, lo + 5} <= ports, (job, sorted(ports))
            assert len({pid for pid, comm, _ in seen[job] if comm == "raylet"}) == 3, seen[job]
            # The cluster is closed to a client without the job's Ray token.
            stranger = {k: v for k, v in env.items() if not k.startswith("RAY_")}
            r = subprocess.run([str(Path(sys.executable).parent / "ray"), "status", "--address",
                                f"10.200.0.1:{gcs}"], capture_output=True, text=True,
                               env=stranger, timeout=120)
            assert r.returncode != 0 or "Active:" not in r.stdout, r.stdout
            assert "Authentication token is missing or incorrect" in r.stdout + r.stderr, r.stderr[-3000:]
        assert not set(blocks[job_a]) & set(blocks[job_b]), blocks
        print({j: sorted({p for _, _, p in s}) for j, s in seen.items()})
    finally:
        (shared_tmp / "release").touch()
    fa, fb = wait_job(job_a, 180), wait_job(job_b, 180)
    text_a, text_b = outputs[job_a].read_text(), out_b.read_text()
    assert (fa["JobState"], fa["ExitCode"]) == ("COMPLETED", "0:0"), text_a[-4000:]
    # The job's exit code is the driver's.
    assert (fb["JobState"], fb["ExitCode"]) == ("FAILED", "3:0"), text_b[-4000:]
    assert "hpcjobs: Ray driver exited with code 3; stopping the Ray cluster" in text_b


def test_a_node_whose_ray_cannot_start_is_named(sandbox, shared_tmp):
    """A real fault: node3's Ray session directory cannot be made (a file is in its way)."""
    sandbox.need(3)
    env = {k: v for k, v in os.environ.items() if k != "HPCJOBS_CLUSTER"}
    env.update(HPCJOBS_PYTHON=sys.executable, HPCJOBS_RAY_NODES_TIMEOUT="30")
    r = subprocess.run(["sbatch", "--parsable", "--hold", "--nodes=3", "--gres=none", "--time=5",
                        f"--output={shared_tmp}/slurm-%j.out", str(ROOT / "job_templates" / "ray.sbatch"),
                        EXAMPLE], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    blockers = [Path(f"/tmp/ray-{job}-{step}-2") for step in range(4)]  # node rank 2, any step
    try:
        for p in blockers:
            p.write_text("in the way\n")
        subprocess.run(["scontrol", "release", job], check=True, capture_output=True)
        f = wait_job(job, 240)
    finally:
        for p in blockers:
            p.unlink(missing_ok=True)
    out = (shared_tmp / f"slurm-{job}.out").read_text(errors="replace")
    assert f["JobState"] == "FAILED", out[-4000:]
    assert "hpcjobs: node3: `ray start` ended with exit code 1 while the head" in out, out[-4000:]
    m = re.search(r"^hpcjobs: Ray cluster: (.+) did not join within 30 s \((\d) of 3 nodes up", out, re.M)
    assert m and "node3 (10.200.0.3)" in m[1].split(", "), out[-4000:]
    assert "tasks ran on" not in out  # the driver never started
