"""The sandbox is a real multi-node Slurm: nodes with their GRES, jobs spread over them,
PMIx for Open MPI, and a lifecycle that leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import run_job, srun

HPCJOBS = [sys.executable, "-m", "hpcjobs"]


def hpcjobs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*HPCJOBS, *args], capture_output=True, text=True, cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if k != "HPCJOBS_CLUSTER"})


def test_sinfo_shows_the_nodes_with_their_gpu(sandbox):
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %P %T %G"], capture_output=True,
                         text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()]
    assert [r[0] for r in rows] == sandbox.nodes
    assert all(r[1] == "gpu*" and r[3] == "gpu:v100s:1" for r in rows), out
    busy = subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip()
    states = {r[2] for r in rows}
    assert states == {"idle"} if not busy else states <= {"idle", "mixed", "allocated", "completing"}


def test_srun_spreads_over_three_nodes(sandbox):
    sandbox.need(3)
    p = srun(["-N3", "hostname"])
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.split()) == ["node1", "node2", "node3"]


def test_srun_pmix_gives_open_mpi_one_world(sandbox, shared_tmp):
    pytest.importorskip("mpi4py", reason="pip install 'hpcjobs[mpi]' (mpi4py)")
    sandbox.need(3)
    prog = shared_tmp / "world.py"
    prog.write_text(
        "import socket\n"
        "from mpi4py import MPI\n"
        "c = MPI.COMM_WORLD\n"
        "print('rank', c.Get_rank(), 'size', c.Get_size(), 'host', socket.gethostname(),\n"
        "      'sum', c.allreduce(c.Get_rank() + 1), flush=True)\n")
    p = srun(["-N3", "--mpi=pmix", sys.executable, str(prog)])
    assert p.returncode == 0, p.stderr
    rows = [line.split() for line in p.stdout.splitlines() if line.startswith("rank")]
    assert sorted(int(r[1]) for r in rows) == [0, 1, 2], p.stdout
    assert {r[3] for r in rows} == {"3"}, f"every rank must see size 3 (PMI mismatch?)\n{p.stdout}"
    assert sorted(r[5] for r in rows) == ["node1", "node2", "node3"]
    assert {r[7] for r in rows} == {"6"}


def test_batch_job_gets_its_gpu_and_runs_on_its_nodes(sandbox, shared_tmp):
    sandbox.need(2)
    script = shared_tmp / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        # -w: the nodes are pinned, since a GPU still held by another test's job would move it.
        "#SBATCH -N2 -w node[1-2] --gres=gpu:1 -t 1\n"
        "echo batch on $(hostname) nodes=$SLURM_JOB_NODELIST\n"
        "srun bash -c 'echo task $SLURM_PROCID on $(hostname) gpu=$CUDA_VISIBLE_DEVICES "
        "addr=$(ip -4 -o addr show sbx0 | awk \"{print \\$4}\") "
        "routes=$(ip route | grep -c default)'\n"
        f"echo written > {shared_tmp}/from-job\n")
    job = run_job(["-o", f"{shared_tmp}/out-%j.txt", str(script)], cwd=shared_tmp)
    assert job.ok, job
    assert job.nodes == "node[1-2]"
    assert "batch on node1 nodes=node[1-2]" in job.output
    tasks = sorted(re.findall(r"task (\d) on (\S+) gpu=(\S*) addr=(\S+) routes=(\d)", job.output))
    assert tasks == [("0", "node1", "0", "10.200.0.1/24", "0"),
                     ("1", "node2", "0", "10.200.0.2/24", "0")], job.output
    # The nodes share this host's filesystem.
    assert (shared_tmp / "from-job").read_text() == "written\n"


def test_job_resolves_the_other_nodes(sandbox):
    sandbox.need(2)
    p = srun(["-N1", "-w", "node1", "getent", "hosts", "node2", "slurmctl"])
    assert p.returncode == 0, p.stderr
    assert "10.200.0.2" in p.stdout and "10.200.0.254" in p.stdout


def test_hpcjobs_uses_the_sandbox_profile(sandbox):
    p = hpcjobs("cluster", "show", "--json")
    assert p.returncode == 0, p.stderr
    prof = json.loads(p.stdout)
    assert prof["name"] == "sandbox" and prof["sandbox"] is True
    assert [n["name"] for n in prof["nodes"]] == sandbox.nodes
    assert prof["fabric"]["kind"] == "ethernet" and prof["fabric"]["interface"] == "sbx0"
    assert prof["source"] == str(sandbox.profile_path)


def test_status_and_idempotent_up(sandbox):
    st = hpcjobs("sandbox", "status")
    assert st.returncode == 0, st.stderr
    assert all(n in st.stdout for n in sandbox.nodes) and "healthy" in st.stdout
    again = hpcjobs("sandbox", "up")
    assert again.returncode == 0 and "already up" in again.stdout, again.stderr
    other = hpcjobs("sandbox", "up", "--nodes", str(sandbox.n + 1))
    assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1, other.stderr


def test_status_says_what_works_without_accounting_and_where_the_host_is(sandbox):
    from hpcjobs.sandbox import lifecycle

    st = hpcjobs("sandbox", "status")
    assert st.returncode == 0, st.stderr
    if lifecycle.health().accounting:
        assert "accounting: on" in st.stdout and "sacct answers" in st.stdout
    else:
        line = next(x for x in st.stdout.splitlines() if x.startswith("accounting: off"))
        assert "UNKNOWN" in line and "hpcjobs sandbox up --accounting" in line
        assert "scripts/install --accounting" in line
        # What it says: sacct knows no job (it says why), the job is in scontrol and jobcomp.
        job = run_job(["-N1", "-o", "/dev/null", "--wrap", "true"])
        assert job.ok, job
        sacct = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", job.job_id],
                               capture_output=True, text=True)
        assert job.job_id not in sacct.stdout
        assert "accounting storage is disabled" in sacct.stdout + sacct.stderr
        from hpcjobs.sandbox.layout import layout

        deadline = time.monotonic() + 10  # slurmctld appends the line as the job completes
        comp = ""
        while f"JobId={job.job_id} " not in comp and time.monotonic() < deadline:
            # Other tests' hostile job names are not all UTF-8.
            comp = (layout().log / "jobcomp.txt").read_text(errors="replace")
            time.sleep(0.1)
        assert re.search(rf"JobId={job.job_id} .*JobState=COMPLETED", comp), comp[-500:]
    assert "this host, seen from jobs: 10.200.0.100 (bridge hpcjobs-br0)" in st.stdout


def _serve_once(host: str) -> tuple[socket.socket, dict]:
    """A one-shot TCP server on host:ephemeral port: answers a token, records who came."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, 0))
    srv.listen(1)
    srv.settimeout(60)
    seen: dict = {"token": f"tok-{os.getpid()}-{time.monotonic_ns()}"}

    def serve():
        try:
            conn, addr = srv.accept()
        except OSError:
            return
        with conn:
            seen["peer"] = addr[0]
            seen["said"] = conn.recv(200).decode()
            conn.sendall(seen["token"].encode())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    seen["thread"] = t
    return srv, seen


CLIENT = ("import socket, sys\n"
          "try:\n"
          "    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)\n"
          "except OSError as e:\n"
          "    print('refused', type(e).__name__); sys.exit(0)\n"
          "s.sendall(socket.gethostname().encode())\n"
          "print('got', s.recv(200).decode())\n")


def test_a_job_reaches_a_service_on_the_host_through_the_bridge(sandbox):
    """What dask-jobqueue and Ray users need: a server on the host's bridge address answers a
    job on a node; the same server on the host's 127.0.0.1 is out of a job's reach."""
    srv, seen = _serve_once("10.200.0.100")
    try:
        port = srv.getsockname()[1]
        node = sandbox.nodes[-1]
        p = srun(["-N1", "-w", node, sys.executable, "-c", CLIENT, "10.200.0.100", str(port)])
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == ["got", seen["token"]], p.stdout
        seen["thread"].join(10)
        k = int(node.removeprefix("node"))
        assert (seen["peer"], seen["said"]) == (f"10.200.0.{k}", node)
    finally:
        srv.close()
    lo, _ = _serve_once("127.0.0.1")
    try:
        p = srun(["-N1", "-w", sandbox.nodes[0], sys.executable, "-c", CLIENT, "127.0.0.1",
                  str(lo.getsockname()[1])])
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == ["refused", "ConnectionRefusedError"], p.stdout
    finally:
        lo.close()


# --- lifecycle: restarts the shared sandbox, so only in CI or when asked --------------------

LIFECYCLE = os.environ.get("CI") == "true" or os.environ.get("HPCJOBS_SANDBOX_LIFECYCLE") == "1"


MARK = "6543.21"  # `sleep 6543.21`: the job tasks of the lifecycle test, found by their argv


def _marked() -> list[int]:
    """Live (not zombie) processes running `sleep MARK`."""
    found = []
    for p in Path("/proc").iterdir():
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"sleep") and argv[1:2] == [MARK.encode()] and \
                    (p / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(p.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _leftovers() -> list[str]:
    from hpcjobs.sandbox import lifecycle
    from hpcjobs.sandbox.layout import layout

    return lifecycle.leftovers(layout())


@pytest.mark.skipif(not LIFECYCLE, reason="restarts the shared sandbox: runs in CI (CI=true) or "
                                          "with HPCJOBS_SANDBOX_LIFECYCLE=1")
def test_lifecycle_half_up_down_refusal_up(sandbox):
    from hpcjobs.sandbox import daemons
    from hpcjobs.sandbox.layout import layout

    lay = layout()
    n = str(sandbox.n)
    try:
        # A dead slurmd (a zombie until init reaps it) makes the sandbox half-up ...
        recorded, _ = daemons.load(lay)
        victim = next(d for d in recorded if d.name == "slurmd-node1")
        os.kill(victim.pid, 9)
        deadline = time.monotonic() + 5
        while victim.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        st = hpcjobs("sandbox", "status")
        assert st.returncode == 1 and "slurmd-node1" in st.stderr, st.stderr
        # ... and `up` cleans it and starts again.
        up = hpcjobs("sandbox", "up", "--nodes", n)
        assert up.returncode == 0, up.stderr
        assert "cleaning up a half-up sandbox" in up.stdout and "idle" in up.stdout

        # `down` leaves nothing: no daemons, job processes, namespaces, bridge, files, client
        # config -- even with a job running on every node.
        job = subprocess.run(["sbatch", "--parsable", "-N", n, "-o", "/dev/null", "--wrap",
                              f"srun sleep {MARK}"], capture_output=True, text=True, check=True)
        deadline = time.monotonic() + 30
        while len(_marked()) < sandbox.n and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_marked()) >= sandbox.n, f"job {job.stdout.strip()} did not start its tasks"
        recorded, _ = daemons.load(lay)
        down = hpcjobs("sandbox", "down")
        assert down.returncode == 0, down.stderr
        assert _leftovers() == []
        assert not any(d.alive() for d in recorded)
        assert _marked() == []
        assert not Path("/etc/slurm/slurm.conf").is_symlink()
        assert hpcjobs("sandbox", "status").returncode == 1
        assert hpcjobs("sandbox", "down").returncode == 0  # nothing to do is not an error

        # A subnet routed by something else: one line, exit 2, nothing created.
        blocker = "hjtest-br0"  # a bridge (the dummy module may be missing)
        subprocess.run(["ip", "link", "add", blocker, "type", "bridge"], check=True)
        try:
            subprocess.run(["ip", "addr", "add", "10.200.0.50/24", "dev", blocker], check=True)
            subprocess.run(["ip", "link", "set", blocker, "up"], check=True)
            refused = hpcjobs("sandbox", "up")
            assert refused.returncode == 2, refused.stderr
            assert refused.stderr.strip().count("\n") == 0 and "10.200.0.0/24" in refused.stderr
            assert _leftovers() == []
        finally:
            subprocess.run(["ip", "link", "del", blocker], capture_output=True)
    finally:
        again = hpcjobs("sandbox", "up", "--nodes", n)
    assert again.returncode == 0, again.stdout + again.stderr
    assert hpcjobs("sandbox", "status").returncode == 0
