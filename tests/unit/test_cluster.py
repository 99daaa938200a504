"""Cluster profile: the built-in default, the lookup order, and errors that name key and file."""

import json
import subprocess
import sys

import pytest

from hpcjobs import cluster as cl
from hpcjobs.errors import BadInput
from tests.conftest import FIXTURES

BASE = """
name = "t"
[fabric]
kind = "infiniband"
device = "mlx5_0"
interface = "ib0"
rate_gbps = 100
[[partitions]]
name = "p"
nodes = "n[1-2]"
default = true
[[nodes]]
names = "n[1-2]"
addresses = "10.0.0.[1-2]"
cpus = 8
memory_mb = 1000
"""


def test_builtin_is_the_users_cluster():
    c = cl.builtin()
    assert [n.name for n in c.nodes] == ["pve1", "pve2", "pve3"]
    assert [n.address for n in c.nodes] == ["10.100.0.1", "10.100.0.2", "10.100.0.3"]
    assert all(n.gpu.type == "v100s" and n.gpu.count == 1 and n.gpu.memory_gb == 32 for n in c.nodes)
    assert c.nodes[0].gpu.cc == (7, 0) and not c.nodes[0].gpu.bf16
    assert (c.fabric.kind, c.fabric.device, c.fabric.port, c.fabric.interface) == \
        ("infiniband", "mlx5_0", 1, "ib0")
    assert c.fabric.rate_gbytes == 12.5
    assert c.partition(None).name == "gpu" and c.source == "built-in"


def test_node_order_is_kept_not_sorted():
    c = cl.load_file(FIXTURES / "profiles" / "mixed.toml")
    names = [n.name for n in c.partition_nodes("a100")]
    assert names == ["compute-b21", "compute-b22", "compute-b23", "compute-a1"]
    assert c.node("compute-a1").address == "10.1.0.1"
    assert c.node("cpu003").gpu is None and c.node("cpu003").address is None


def test_lookup_order(isolated, tmp_path, monkeypatch):
    assert cl.load_cluster().source == "built-in"
    user = cl.user_profile_path()
    user.parent.mkdir(parents=True)
    user.write_text(BASE.replace('name = "t"', 'name = "user"'))
    assert cl.load_cluster().name == "user"
    cl.SANDBOX_PROFILE.parent.mkdir(parents=True)
    cl.SANDBOX_PROFILE.write_text(BASE.replace('name = "t"', 'name = "sandbox"'))
    assert cl.load_cluster().name == "sandbox"
    env = tmp_path / "env.toml"
    env.write_text(BASE.replace('name = "t"', 'name = "env"'))
    monkeypatch.setenv("HPCJOBS_CLUSTER", str(env))
    assert cl.load_cluster().name == "env"
    explicit = tmp_path / "explicit.toml"
    explicit.write_text(BASE.replace('name = "t"', 'name = "explicit"'))
    assert cl.load_cluster(str(explicit)).name == "explicit"


BAD = [
    # (edit of BASE, key the error must name, words the error must contain)
    (lambda s: s.replace('name = "t"\n', ""), "name", "missing"),
    (lambda s: s.replace('cpus = 8', 'cpus = "eight"'), "nodes[0].cpus", "expected int"),
    (lambda s: s.replace('cpus = 8', 'cpus = 0'), "nodes[0].cpus", "at least 1"),
    (lambda s: s.replace('memory_mb = 1000', 'memory_mb = -5'), "nodes[0].memory_mb", "negative"),
    (lambda s: s.replace('kind = "infiniband"', 'kind = "omnipath"'), "fabric.kind", "not one of"),
    (lambda s: s.replace('device = "mlx5_0"\n', ""), "fabric.device", "required"),
    (lambda s: s.replace('10.0.0.[1-2]', '10.0.0.[1-3]'), "nodes[0].addresses", "3 addresses for 2 nodes"),
    (lambda s: s.replace('names = "n[1-2]"', 'names = "n[1-"'), "nodes[0].names", "bad host list"),
    (lambda s: s.replace('nodes = "n[1-2]"', 'nodes = "n[1-3]"'), "partitions[0].nodes", "not in [[nodes]]"),
    (lambda s: s + '[[nodes]]\nname = "n1"\ncpus = 1\nmemory_mb = 1\n', "nodes", "listed twice"),
    (lambda s: 'colour = "blue"\n' + s, "colour", "unknown key"),
    (lambda s: s + '[nodes.gpu]\ntype = "v100s"\nmemory_gb = 32\ncompute_capability = "seven"\n',
     "nodes[0].gpu.compute_capability", "like \"7.0\""),
    (lambda s: s + '[nodes.gpu]\ntype = "v100s"\nmemory_gb = 32\ncompute_capability = "7.0"\ncount = 0\n',
     "nodes[0].gpu.count", "at least 1"),
    (lambda s: s + '[defaults]\npartition = "nope"\n', "defaults.partition", "no partition"),
    (lambda s: s.replace('[fabric]', '[fabrik]'), "fabrik", "unknown key"),
    (lambda s: s.replace("[[nodes]]", "[nodes]"), "nodes", "expected one or more"),
    (lambda s: s + "this is not toml\n", "(syntax)", ""),
]


@pytest.mark.parametrize("edit,key,words", BAD)
def test_bad_profile_names_key_and_file(tmp_path, edit, key, words):
    p = tmp_path / "bad.toml"
    p.write_text(edit(BASE))
    with pytest.raises(BadInput) as e:
        cl.load_file(p)
    msg = str(e.value)
    assert f"cluster profile {p}: {key}" in msg
    assert words in msg
    assert "\n" not in msg


def test_missing_profile_file(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        cl.load_file(tmp_path / "nope.toml")


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "hpcjobs", *args], capture_output=True, text=True,
                          env=env)


def test_cli_cluster_show_json(isolated):
    import os

    r = run_cli("cluster", "show", "--json", env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["name"] == "pve" and len(data["nodes"]) == 3
    assert data["nodes"][0]["gpu"]["compute_capability"] == "7.0"


def test_cli_bad_profile_is_one_line_exit_2(isolated, tmp_path):
    import os

    p = tmp_path / "bad.toml"
    p.write_text(BASE.replace('cpus = 8', 'cpus = "x"'))
    r = run_cli("--cluster", str(p), "cluster", "show", env=dict(os.environ))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "nodes[0].cpus" in r.stderr and str(p) in r.stderr
    assert "Traceback" not in r.stderr
