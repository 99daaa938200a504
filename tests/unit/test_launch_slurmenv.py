"""Rank variables from Slurm: recorded sandbox environments, hand-written odd forms, ports."""

from __future__ import annotations

import re

import hostlist
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcjobs.errors import BadInput
from hpcjobs.launch import environment, slurmenv
from tests.conftest import FIXTURES, ROOT

ENVS = FIXTURES / "slurmenv"
NO_RDMA = FIXTURES / "sysfs" / "no-rdma"
SANDBOX_PROFILE = """
name = "sandbox-like"
[fabric]
kind = "ethernet"
interface = "sbx0"
rate_gbps = 10
[[partitions]]
name = "gpu"
nodes = "node[1-3]"
[[nodes]]
names = "node[1-3]"
addresses = "10.200.0.[1-3]"
cpus = 32
memory_mb = 191000
"""


def read_env(name: str) -> dict:
    """A recorded (or hand-written) task environment: KEY=VALUE lines, # comments."""
    out = {}
    for line in (ENVS / name).read_text().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


@pytest.fixture
def base(tmp_path):
    """Isolation: a sandbox-like profile, a private cache, fixture sysfs without RDMA."""
    prof = tmp_path / "cluster.toml"
    prof.write_text(SANDBOX_PROFILE)
    return {"HPCJOBS_CLUSTER": str(prof), "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"), "HPCJOBS_SANDBOX_STATE": str(tmp_path / "none"),
            "HPCJOBS_SYSFS_ROOT": str(NO_RDMA)}


def added(base: dict, name_or_env) -> dict:
    env = dict(base)
    env.update(read_env(name_or_env) if isinstance(name_or_env, str) else name_or_env)
    return environment.build(env).additions()


def step_files(prefix: str) -> list[str]:
    files = sorted(p.name for p in ENVS.glob(prefix + "-rank*.env"))
    assert files, prefix
    return files


# --- recorded sandbox environments -------------------------------------------------------------

@pytest.mark.parametrize("prefix,world,per_node", [
    ("sandbox-srun-N3", 3, [1, 1, 1]),
    ("sandbox-srun-N3-tpn2", 6, [2, 2, 2]),
    ("sandbox-step-n5", 5, [3, 1, 1]),  # uneven: SLURM_STEP_TASKS_PER_NODE=3,1(x2)
    ("sandbox-step-N2-of-N3", 2, [1, 1]),  # a step on fewer nodes than the job
])
def test_recorded_steps_map_every_variable(base, prefix, world, per_node):
    seen = []
    for name in step_files(prefix):
        raw = read_env(name)
        a = added(base, name)
        node = int(raw["SLURM_NODEID"])
        assert a["RANK"] == raw["SLURM_PROCID"]
        assert a["LOCAL_RANK"] == raw["SLURM_LOCALID"]
        assert a["NODE_RANK"] == raw["SLURM_NODEID"]
        assert a["WORLD_SIZE"] == str(world)
        assert a["LOCAL_WORLD_SIZE"] == str(per_node[node])
        assert a["MASTER_ADDR"] == "10.200.0.1"  # node1's sandbox address, not "node1"
        seen.append((int(a["RANK"]), node, int(a["LOCAL_RANK"]), a["MASTER_PORT"]))
    assert sorted(r for r, *_ in seen) == list(range(world))
    assert len({p for *_, p in seen}) == 1  # every task agrees on the port
    for node, count in enumerate(per_node):
        assert sorted(lr for _, n, lr, _ in seen if n == node) == list(range(count))


def test_step_on_node3_only_masters_on_node3(base):
    a = added(base, "sandbox-step-node3-rank0.env")
    assert (a["MASTER_ADDR"], a["WORLD_SIZE"], a["LOCAL_WORLD_SIZE"]) == ("10.200.0.3", "1", "1")


def test_steps_of_one_job_get_distinct_ports(base):
    ports = {added(base, f)["MASTER_PORT"] for f in
             ("sandbox-step-n5-rank0.env", "sandbox-step-N2-of-N3-rank0.env",
              "sandbox-step-gpu-rank0.env", "sandbox-step-node3-rank0.env")}
    assert len(ports) == 4


def test_slurm_gpu_binding_is_kept(base):
    raw = read_env("sandbox-step-gpu-rank1.env")
    assert raw["CUDA_VISIBLE_DEVICES"] == "0"  # fake GRES, no GPU: still Slurm's binding
    assert "CUDA_VISIBLE_DEVICES" not in added(base, "sandbox-step-gpu-rank1.env")


def test_batch_script_is_not_a_step(base):
    env = dict(base, **read_env("sandbox-batch-script.env"))
    with pytest.raises(BadInput) as e:
        environment.build(env)
    assert e.value.field == "SLURM_STEP_ID" and "srun" in str(e.value)


def test_step_values_win_over_job_values(base):
    raw = read_env("sandbox-step-N2-of-N3-rank1.env")
    assert raw["SLURM_JOB_NUM_NODES"] == "3" and raw["SLURM_NODELIST"] == "node[1-3]"
    step = slurmenv.read(raw)
    assert (step.nnodes, step.world_size, step.source["nodelist"]) == (2, 2, "SLURM_STEP_NODELIST")


@pytest.mark.parametrize("doc", ["launch.md", "train.md"])
def test_docs_name_the_variables_the_code_reads(doc):
    """WORLD_SIZE and LOCAL_WORLD_SIZE rows of the docs' tables: the step's value first, then the
    job's, as slurmenv reads them (issue 11.21: train.md said SLURM_NTASKS)."""
    text = (ROOT / "docs" / doc).read_text()
    for var, sources in (("WORLD_SIZE", slurmenv.WORLD_SIZE_FROM[:2]),
                         ("LOCAL_WORLD_SIZE", slurmenv.TASKS_PER_NODE_FROM)):
        row = next(ln for ln in text.splitlines()
                   if ln.startswith("|") and f"`{var}`" in ln.split("|")[1])
        named = [n for n in re.findall(r"`(SLURM_[A-Z_]+)`", row.split("|", 2)[2])
                 if n in (*slurmenv.WORLD_SIZE_FROM, *slurmenv.TASKS_PER_NODE_FROM)]
        assert named == list(sources), (doc, row)


# --- hand-written forms ------------------------------------------------------------------------

def hand(nodelist: str, tpn: str, rank: int, node: int, local: int, with_name: bool = True) -> dict:
    per = slurmenv.tasks_per_node(tpn)
    env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": str(rank),
           "SLURM_LOCALID": str(local), "SLURM_NODEID": str(node), "SLURM_NTASKS": str(sum(per)),
           "SLURM_NNODES": str(len(per)), "SLURM_TASKS_PER_NODE": tpn,
           "SLURM_JOB_NODELIST": nodelist}
    if with_name:
        env["SLURMD_NODENAME"] = hostlist.expand_hostlist(nodelist)[node]
    return env


@pytest.mark.parametrize("fixture", ["hand-odd-order.env", "hand-padding.env", "hand-uneven.env"])
def test_hand_written_fixtures(base, fixture):
    """Each hand-written file states its expectations as `#expect KEY=VALUE` lines."""
    lines = (ENVS / fixture).read_text().splitlines()
    expect = dict(ln[len("#expect "):].split("=", 1) for ln in lines if ln.startswith("#expect "))
    assert expect
    a = added(base, fixture)
    assert {k: a[k] for k in expect} == expect


@pytest.mark.parametrize("nodelist,first", [
    ("compute-b2[1-3,5-6,8],compute-a1", "compute-b21"),  # a sorting expander says compute-a1
    ("gpu[01-04,07],login1", "gpu01"),
    ("login1,gpu[01-04,07]", "login1"),
    ("node[007-010]", "node007"),
    ("rack[2-3]-n[09-10]", "rack2-n09"),
    ("single", "single"),
    (",lead,x[1-2]", "lead"),
])
def test_first_host_keeps_slurms_order(nodelist, first):
    assert slurmenv.first_host(nodelist) == first == hostlist.expand_hostlist(nodelist)[0]


@pytest.mark.parametrize("nodelist,node,name", [
    ("gpu[01-04,07],login1", 4, "gpu07"), ("gpu[01-04,07],login1", 5, "login1"),
    ("compute-b2[1-3,5-6,8],compute-a1", 6, "compute-a1"),
])
def test_node_name_without_slurmd_nodename_expands_in_order(nodelist, node, name):
    n = len(hostlist.expand_hostlist(nodelist))
    step = slurmenv.read(hand(nodelist, f"1(x{n})", node, node, 0, with_name=False))
    assert step.node_name == name and step.first_node == hostlist.expand_hostlist(nodelist)[0]


@pytest.mark.parametrize("bad", ["gpu[01-", "gpu[3-1]", "a[]", "x[1-2]]", "gpu[a-b]"])
def test_bad_node_lists_name_the_variable(bad):
    with pytest.raises(BadInput) as e:
        slurmenv.first_host(bad, "SLURM_JOB_NODELIST")
    assert e.value.field == "SLURM_JOB_NODELIST"


def test_10000_node_list_fragmented():
    nodes = [f"gpu{i:05d}" for i in range(1, 20001, 2)]
    nodelist = "gpu[" + ",".join(n[3:] for n in nodes) + "]"
    env = hand(nodelist, "1(x10000)", 9999, 9999, 0, with_name=False)
    env["SLURMD_NODENAME"] = nodes[-1]
    step = slurmenv.read(env)
    assert (step.first_node, step.node_name, step.world_size) == ("gpu00001", "gpu19999", 10000)


# Host lists as Slurm writes them: items of a prefix and optional bracketed ranges.
_num = st.integers(0, 300)
_range = st.tuples(_num, st.integers(0, 5), st.integers(1, 3)).map(
    lambda t: (f"{t[0]:0{t[2]}d}" if t[1] == 0 else f"{t[0]:0{t[2]}d}-{t[0] + t[1]:0{t[2]}d}"))
_prefix = st.text("abcxyz019-_.", min_size=1, max_size=6)
_item = st.one_of(
    _prefix,
    st.tuples(_prefix, st.lists(_range, min_size=1, max_size=4), st.text("abz-", max_size=3)).map(
        lambda t: f"{t[0]}[{','.join(t[1])}]{t[2]}"),
    st.tuples(_prefix, st.lists(_range, min_size=1, max_size=2), _prefix,
              st.lists(_range, min_size=1, max_size=2)).map(
        lambda t: f"{t[0]}[{','.join(t[1])}]{t[2]}[{','.join(t[3])}]"),
)


@given(st.lists(_item, min_size=1, max_size=5).map(",".join))
def test_first_host_agrees_with_python_hostlist(nodelist):
    assert slurmenv.first_host(nodelist) == hostlist.expand_hostlist(nodelist)[0]


@given(st.lists(st.one_of(_item, st.just(""), st.sampled_from(["n1", "n[1-2]", "gpu[01-02]"])),
                min_size=1, max_size=6).map(",".join))
def test_expand_agrees_with_python_hostlist(nodelist):
    """The hand path, empty items and duplicates included (python-hostlist drops them)."""
    if not hostlist.expand_hostlist(nodelist):
        return  # nothing but empty items: BadInput, checked below
    assert slurmenv.expand(nodelist) == hostlist.expand_hostlist(nodelist)


@given(st.text("ab01-[],", max_size=14))
def test_hand_expand_never_disagrees_with_python_hostlist(text):
    """On any string the hand path either gives python-hostlist's answer or steps aside (None):
    so errors and odd forms are always python-hostlist's."""
    mine = slurmenv._hand_expand(text)
    try:
        theirs = hostlist.expand_hostlist(text)
    except hostlist.BadHostlist:
        assert mine is None, text
        return
    assert mine is None or mine == theirs, text


def test_expand_of_an_empty_list_names_the_variable():
    with pytest.raises(BadInput) as e:
        slurmenv.expand(",,", "SLURM_JOB_NODELIST")
    assert e.value.field == "SLURM_JOB_NODELIST" and "empty" in str(e.value)


def test_10000_node_list_without_slurmd_nodename():
    """The whole fragmented list is expanded by hand to find this task's node."""
    nodes = [f"gpu{i:05d}" for i in range(1, 20001, 2)]
    nodelist = "gpu[" + ",".join(n[3:] for n in nodes) + "]"
    assert slurmenv.expand(nodelist) == nodes == hostlist.expand_hostlist(nodelist)
    step = slurmenv.read(hand(nodelist, "1(x10000)", 9998, 9998, 0, with_name=False))
    assert (step.first_node, step.node_name) == ("gpu00001", "gpu19997")


@given(st.lists(st.tuples(st.integers(0, 64), st.integers(1, 40)), min_size=1, max_size=8))
def test_tasks_per_node_agrees_with_python_hostlist(parts):
    text = ",".join(f"{c}(x{r})" if r > 1 else str(c) for c, r in parts)
    assert slurmenv.tasks_per_node(text) == hostlist.parse_slurm_tasks_per_node(text)


@pytest.mark.parametrize("bad", ["2(x3", "2x3", "", "a", "2(x)", "-1"])
def test_bad_tasks_per_node(bad):
    with pytest.raises(BadInput) as e:
        slurmenv.tasks_per_node(bad)
    assert e.value.field == "SLURM_TASKS_PER_NODE"


# --- MASTER_PORT -------------------------------------------------------------------------------

def test_port_range_and_slurm_ports():
    ports = [slurmenv.master_port(j, s) for j in range(0, 40000, 7) for s in range(0, 40, 3)]
    assert all(1024 <= p <= 32767 for p in ports)
    assert not set(ports) & set(range(6817, 6821))
    assert slurmenv.master_port(4294967290, 4294967291) in range(1024, 32768)  # extreme ids


def test_ports_distinct_across_steps_and_nearby_jobs():
    for job in (1, 362, 9999, 123456):
        assert len({slurmenv.master_port(job, s) for s in range(16)}) == 16
    # Steps 0-15 of 1983 consecutive jobs: 31728 ports, no collision at all.
    for start in (0, 7000, 123456789):
        allp = {slurmenv.master_port(j, s) for j in range(start, start + 1983) for s in range(16)}
        assert len(allp) == 1983 * 16


@pytest.mark.parametrize("job", [1, 4242, 123456, 99999999])
def test_ports_distinct_for_job_ids_equal_mod_10000(job):
    # Lightning (15000 + last 4 digits) and others collide exactly here.
    ports = {slurmenv.master_port(job + k * 10000, s) for k in range(5) for s in (0, 1)}
    assert len(ports) == 10


# --- the user wins; errors name the variable ---------------------------------------------------

def test_user_set_variables_are_kept(base):
    env = dict(read_env("sandbox-srun-N3-tpn2-rank0.env"), MASTER_PORT="29500",
               MASTER_ADDR="head", NCCL_SOCKET_IFNAME="=ib1", NCCL_DEBUG="TRACE", RANK="7")
    task = environment.build(dict(base, **env))
    a = task.additions()
    for key in ("MASTER_PORT", "MASTER_ADDR", "NCCL_SOCKET_IFNAME", "NCCL_DEBUG", "RANK"):
        assert key not in a
        assert any(k == key for k, *_ in task.kept)
    assert task.value("MASTER_PORT") == "29500" and task.check_port is None  # not our master


REQUIRED = ["SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID",
            "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NUM_NODES", "SLURM_STEP_TASKS_PER_NODE",
            "SLURM_STEP_NODELIST"]
ALIASES = {"SLURM_JOB_ID": ["SLURM_JOBID"], "SLURM_STEP_ID": ["SLURM_STEPID"],
           "SLURM_STEP_NUM_TASKS": ["SLURM_NTASKS", "SLURM_NPROCS"],
           "SLURM_STEP_NUM_NODES": ["SLURM_NNODES", "SLURM_JOB_NUM_NODES"],
           "SLURM_STEP_TASKS_PER_NODE": ["SLURM_TASKS_PER_NODE"],
           "SLURM_STEP_NODELIST": ["SLURM_JOB_NODELIST", "SLURM_NODELIST"]}


@pytest.mark.parametrize("var", REQUIRED)
def test_missing_variable_is_named(base, var):
    env = read_env("sandbox-srun-N3-rank1.env")
    for k in [var] + ALIASES.get(var, []):
        env.pop(k, None)
    with pytest.raises(BadInput) as e:
        environment.build(dict(base, **env))
    assert e.value.field == var and e.value.exit_code == 2


@pytest.mark.parametrize("change,field", [
    ({"SLURM_PROCID": "3"}, "SLURM_PROCID"),  # 3 tasks: ranks 0..2
    ({"SLURM_PROCID": "one"}, "SLURM_PROCID"),
    ({"SLURM_LOCALID": "1"}, "SLURM_LOCALID"),  # one task on this node
    ({"SLURM_NODEID": "3"}, "SLURM_NODEID"),
    ({"SLURM_STEP_TASKS_PER_NODE": "1(x2)"}, "SLURM_STEP_TASKS_PER_NODE"),  # 2 nodes listed, 3 in step
    ({"SLURM_STEP_TASKS_PER_NODE": "2,1(x2)"}, "SLURM_STEP_TASKS_PER_NODE"),  # adds up to 4, not 3
    ({"SLURM_STEP_NUM_TASKS": "0"}, "SLURM_STEP_NUM_TASKS"),
    ({"SLURM_STEP_NODELIST": "node[3-1]"}, "SLURM_STEP_NODELIST"),
])
def test_inconsistent_variables_are_named(base, change, field):
    env = dict(read_env("sandbox-srun-N3-rank1.env"), **change)
    with pytest.raises(BadInput) as e:
        environment.build(dict(base, **env))
    assert e.value.field == field


def test_rank0_off_the_first_node_is_refused_unless_master_addr_set(base):
    env = hand("node[1-3]", "1(x3)", 0, 1, 0)  # e.g. srun --distribution=arbitrary
    with pytest.raises(BadInput) as e:
        environment.build(dict(base, **env))
    assert e.value.field == "SLURM_NODEID" and "MASTER_ADDR" in str(e.value)
    assert environment.build(dict(base, MASTER_ADDR="10.200.0.2", **env)).additions()["RANK"] == "0"
