"""The ray kind and the Ray bring-up without Slurm: the port blocks (disjoint per job and step,
clear of Slurm's ports, every flag one that the pinned Ray's `ray start` has), moving off a block
that a real listener holds, the resources from Slurm, the refusals and the rendered script."""

import os
import socket
import subprocess
import sys

import pytest

from hpcjobs.api import prepare
from hpcjobs.cluster import builtin
from hpcjobs.errors import BadInput
from hpcjobs.launch import slurmenv
from hpcjobs.rendering import materialize
from hpcjobs.runners import ray as rayrun
from hpcjobs.spec import JobSpec
from tests.conftest import ROOT

PROG = [str(ROOT / "examples" / "ray_tasks.py")]


def block_of(job, step):
    p = rayrun.RayPorts(rayrun.home_block(job, step), rayrun.home_block(job, step))
    return range(rayrun.BLOCKS[p.home], rayrun.BLOCKS[p.home] + rayrun.BLOCK)


# --- ports ---------------------------------------------------------------------------------

def test_blocks_stay_below_the_ephemeral_range_and_off_slurms_ports():
    assert len(rayrun.BLOCKS) == 123
    for start in rayrun.BLOCKS:
        assert start >= slurmenv.PORT_MIN and start + rayrun.BLOCK - 1 <= slurmenv.PORT_MAX
        assert not set(range(start, start + rayrun.BLOCK)) & set(slurmenv.SLURM_PORTS)


@pytest.mark.parametrize("job", [1, 4242, 21624578, 99999999])
def test_every_port_of_a_node_is_inside_its_block(job):
    for step in range(4):
        p = rayrun.RayPorts(rayrun.home_block(job, step), rayrun.home_block(job, step))
        block = block_of(job, step)
        named = p.named(head=True)
        assert len(set(named.values())) == len(named) == len(rayrun.OFFSETS)
        lo, hi = p.workers
        assert hi - lo + 1 == 240 and not set(named.values()) & set(range(lo, hi + 1))
        assert set(named.values()) | set(range(lo, hi + 1)) <= set(block)
        assert p.gcs == block.start


def test_blocks_differ_between_jobs_and_steps():
    base = 21624578
    # the same step of 123 consecutive jobs; steps 0-3 of 30 consecutive jobs
    assert len({rayrun.home_block(base + i, 0) for i in range(123)}) == 123
    assert len({rayrun.home_block(base + i, s) for i in range(30) for s in range(4)}) == 120


def test_flags_are_ray_starts_own():
    click_start = pytest.importorskip("ray.scripts.scripts").start
    known = {o for p in click_start.params for o in p.opts}
    p = rayrun.RayPorts(3, 3)
    for head in (True, False):
        flags = [f for f in p.flags(head) if f.startswith("--")]
        assert set(flags) <= known, set(flags) - known
    assert "--port" in p.flags(True) and "--port" not in p.flags(False)
    # Ray reads the head's two metrics ports from the environment, not from flags.
    assert p.env(True) == {"AUTOSCALER_METRIC_PORT": str(p.port("autoscaler_metrics")),
                           "DASHBOARD_METRIC_PORT": str(p.port("dashboard_metrics"))}
    assert p.env(False) == {}


def test_ray_accepts_the_ports_of_every_block_on_head_and_workers():
    """Ray's own check (RayParams.update_pre_selected_port), fed as `ray start` feeds it: a
    worker's range once covered Ray's dashboard default 8265 (block 8192) and ray start
    refused to run there (CI, job 21764795)."""
    scripts = pytest.importorskip("ray.scripts.scripts")
    from ray._private.parameter import RayParams

    for b in range(len(rayrun.BLOCKS)):
        p = rayrun.RayPorts(b, b)
        for head in (True, False):
            args = p.flags(head) + (["--head"] if head else ["--address", "10.0.0.1:1"])
            v = scripts.start.make_context("start", args).params
            RayParams(
                redis_port=v["port"], min_worker_port=v["min_worker_port"],
                max_worker_port=v["max_worker_port"], object_manager_port=v["object_manager_port"],
                node_manager_port=v["node_manager_port"],
                ray_client_server_port=v["ray_client_server_port"] or 10001,  # as ray start does
                dashboard_port=v["dashboard_port"], metrics_agent_port=v["dashboard_agent_grpc_port"],
                dashboard_agent_listen_port=v["dashboard_agent_listen_port"],
                runtime_env_agent_port=v["runtime_env_agent_port"],
                metrics_export_port=v["metrics_export_port"],
            ).update_pre_selected_port()  # raises ValueError on any shared port


def _free_job_id() -> int:
    """A job id whose home block and the next one are free here (a real bind test)."""
    for job in range(1000, 1200):
        home = rayrun.home_block(job, 0)
        nxt = (home + 1) % len(rayrun.BLOCKS)
        ports = [*rayrun.RayPorts(home, home).local(True), *rayrun.RayPorts(home, nxt).local(True)]
        if not any(rayrun.port_in_use(p) for _, p in ports):
            return job
    pytest.skip("no two free port blocks on this machine")


def test_a_taken_block_moves_the_nodes_ports_to_the_next_free_one():
    job = _free_job_id()
    home = rayrun.home_block(job, 0)
    p, note = rayrun.choose_ports(job, 0, head=False)
    assert (p.home, p.block, note) == (home, home, None)
    held = rayrun.RayPorts(home, home).port("object_manager")
    with socket.socket() as s:
        s.bind(("", held))
        s.listen(1)
        p, note = rayrun.choose_ports(job, 0, head=False)
        assert p.block == (home + 1) % len(rayrun.BLOCKS) and p.gcs == rayrun.BLOCKS[home]
        assert f"port {held}, object_manager" in note and f"uses {rayrun.BLOCKS[p.block]}-" in note


def test_a_taken_gcs_port_stops_the_head_with_a_clear_line():
    job = _free_job_id()
    gcs = rayrun.BLOCKS[rayrun.home_block(job, 0)]
    with socket.socket() as s:
        s.bind(("", gcs))
        s.listen(1)
        with pytest.raises(BadInput) as e:
            rayrun.choose_ports(job, 0, head=True)
        assert f"{gcs} (job {job} step 0's) is in use" in str(e.value)
        assert rayrun.choose_ports(job, 0, head=False)[0].gcs == gcs  # workers only connect to it


def test_ports_command():
    r = subprocess.run([sys.executable, "-m", "hpcjobs.runners.ray", "ports", "4242", "1"],
                       capture_output=True, text=True, check=True)
    block = block_of(4242, 1)
    assert r.stdout.splitlines()[0] == f"job 4242 step 1: block {block.start}-{block.stop - 1}"
    assert f"{block.start}  gcs (head only)" in r.stdout
    assert f"{block.start + 16}-{block.stop - 1}  workers" in r.stdout


# --- what Ray gets from Slurm -----------------------------------------------------------------

@pytest.mark.parametrize("env, flags", [
    ({}, []),
    ({"SLURM_CPUS_ON_NODE": "8"}, ["--num-cpus", "8"]),
    ({"SLURM_CPUS_ON_NODE": "4", "SLURM_MEM_PER_NODE": "10000"},
     ["--num-cpus", "4", "--object-store-memory", str(int(10000 * 1024 * 1024 * 0.3))]),
    ({"SLURM_CPUS_ON_NODE": "4", "SLURM_MEM_PER_CPU": "100"},
     ["--num-cpus", "4", "--object-store-memory", str(int(400 * 1024 * 1024 * 0.3))]),
    ({"SLURM_CPUS_ON_NODE": "1", "SLURM_MEM_PER_CPU": "10"},
     ["--num-cpus", "1", "--object-store-memory", str(75 * 1024 * 1024)]),
])
def test_resources_from_slurm(env, flags):
    assert rayrun.resources(env, node_mb=1_000_000) == flags


def test_the_object_store_never_exceeds_the_nodes_memory():
    # The sandbox: slurm.conf promises 191000 MB a node, the host has 24 GB for all of them.
    env = {"SLURM_CPUS_ON_NODE": "16", "SLURM_MEM_PER_CPU": "5968"}
    assert rayrun.resources(env, node_mb=24000)[-1] == str(int(24000 * 1024 * 1024 * 0.3))
    assert rayrun.node_memory_mb() > 0


def test_expected_nodes_use_the_profiles_addresses(isolated):
    step = slurmenv.Step(nodelist="pve[1-3]")
    assert rayrun.expected_nodes(dict(os.environ), step) == [("pve1", "10.100.0.1"), ("pve2", "10.100.0.2"),
                                               ("pve3", "10.100.0.3")]


def test_ray_active_nodes_reads_ray_status():
    status = ("Node status\n----\nActive:\n 1 node_da2f50d0\n 1 node_0d126f4a\nPending:\n"
              " (no pending nodes)\n")
    assert rayrun.ray_active_nodes(status) == ["node_da2f50d0", "node_0d126f4a"]
    assert rayrun.ray_active_nodes("Active:\n (no active nodes)\nPending:\n") == []


# --- the kind --------------------------------------------------------------------------------

def prep(**kw):
    options = {k: kw.pop(k) for k in ("nodes_timeout",) if k in kw}
    return prepare(JobSpec(kind="ray", program=PROG, options=options, **kw), builtin())


@pytest.mark.parametrize("kw, field, needle", [
    ({"ntasks_per_node": 2}, "--ntasks-per-node", "one node per Slurm node"),
    ({"signal_handler": "program"}, "--signal-handler", "end Ray's own processes"),
    ({"nodes_timeout": 0}, "--nodes-timeout", "at least 1 second"),
])
def test_refusals(isolated, kw, field, needle):
    with pytest.raises(BadInput) as e:
        prep(nodes=3, **kw)
    assert e.value.field == field and needle in str(e.value)


def test_rendered_script(isolated):
    text = materialize(prep(nodes=3, gpus_per_node=0, nodes_timeout=120), run_dir="/tmp/run").script
    assert "export HPCJOBS_KIND=ray" in text and "export HPCJOBS_RAY_NODES_TIMEOUT=120" in text
    assert "#SBATCH --ntasks-per-node=1" in text and "--gres" not in text
    step = next(line for line in text.splitlines() if line.startswith("hpcjobs_step "))
    assert step == "hpcjobs_step --wait=60 --ntasks-per-node=1 \\"  # no --kill-on-bad-exit
    assert '"$HPCJOBS_PYTHON" -m hpcjobs.runners.ray cluster -- "$@"' in text
    # A per-job token, made when the job runs: never in the script itself.
    assert "export RAY_AUTH_MODE=token" in text and "od -An -tx1 -N32 /dev/urandom" in text
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


def test_the_per_job_token_is_fresh_and_a_given_mode_wins():
    text = (ROOT / "job_templates" / "ray.sbatch").read_text()
    block = text[text.index('if [ -z "${RAY_AUTH_MODE:-}" ]'):text.index("fi\n", text.index(
        'if [ -z "${RAY_AUTH_MODE:-}" ]')) + 3]
    show = block + 'echo "$RAY_AUTH_MODE ${RAY_AUTH_TOKEN:-none}"\n'
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    one, two = (subprocess.run(["bash", "-c", show], capture_output=True, text=True, env=env,
                               check=True).stdout.split() for _ in range(2))
    assert one[0] == "token" and len(one[1]) == 64 and one[1] != two[1]
    off = subprocess.run(["bash", "-c", show], capture_output=True, text=True, check=True,
                         env={**env, "RAY_AUTH_MODE": "disabled"}).stdout.split()
    assert off == ["disabled", "none"]


def test_runner_usage_errors_exit_2():
    r = subprocess.run([sys.executable, "-m", "hpcjobs.runners.ray", "cluster"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no driver given" in r.stderr
    r = subprocess.run([sys.executable, "-m", "hpcjobs.runners.ray", "ports", "x"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "usage:" in r.stderr
