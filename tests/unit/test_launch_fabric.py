"""Fabric environment from sysfs fixture trees: exact variables for each case (tests/fixtures/sysfs)."""

from __future__ import annotations

import pytest

from hpcjobs.launch import environment, fabric, gpus
from tests.conftest import FIXTURES

SYSFS = FIXTURES / "sysfs"


def variables(case: str, **kw) -> dict:
    return {k: v for k, v, _ in fabric.detect(str(SYSFS / case), **kw).vars}


# The built-in profile's preferences (mlx5_0 port 1, ib0) and pve2's address, as on the cluster.
PVE2 = {"pref_device": "mlx5_0", "pref_port": 1, "pref_iface": "ib0", "node_addr": "10.100.0.2"}


def test_native_ib_active():
    assert variables("ib-active", **PVE2) == {
        "NCCL_IB_HCA": "=mlx5_0:1",
        "NCCL_SOCKET_IFNAME": "=ib0",
        "GLOO_SOCKET_IFNAME": "ib0",
        "UCX_NET_DEVICES": "mlx5_0:1",
        "OMPI_MCA_pml": "ucx",
        "HPCJOBS_GPUDIRECT_RDMA": "nvidia_peermem",
        "NCCL_DEBUG": "WARN",
    }  # no NCCL_IB_GID_INDEX (RoCE-only), no NCCL_IB_DISABLE at all


def test_ib_profile_device_wins_else_first_active():
    v = variables("ib-active", pref_device="mlx5_1", pref_port=1)
    assert (v["NCCL_IB_HCA"], v["UCX_NET_DEVICES"], v["NCCL_SOCKET_IFNAME"]) == ("=mlx5_1:1", "mlx5_1:1", "=ib1")
    v = variables("ib-active", pref_device="mlx5_9", pref_port=1)  # not on this node
    assert v["NCCL_IB_HCA"] == "=mlx5_0:1"
    env = fabric.detect(str(SYSFS / "ib-active"))
    assert env.port.name == "mlx5_0:1" and any("also ACTIVE: mlx5_1:1" in n for n in env.notes)


def test_roce_v2_gid_of_the_nodes_address():
    assert variables("roce-v2", node_addr="10.100.0.2") == {
        "NCCL_IB_HCA": "=mlx5_0:1",
        "NCCL_IB_GID_INDEX": "5",  # RoCE v2 + ::ffff:10.100.0.2 (index 4 is the v1 twin)
        "UCX_IB_GID_INDEX": "5",
        "NCCL_SOCKET_IFNAME": "=ens1f0",
        "GLOO_SOCKET_IFNAME": "ens1f0",
        "UCX_NET_DEVICES": "mlx5_0:1",
        "OMPI_MCA_pml": "ucx",
        "HPCJOBS_GPUDIRECT_RDMA": "none",
        "NCCL_DEBUG": "WARN",
    }


@pytest.mark.parametrize("kw,index,iface", [
    ({"node_addr": "192.168.5.2"}, "3", "ens1f0.100"),  # the VLAN netdev's address
    ({"pref_iface": "ens1f0"}, "5", "ens1f0"),  # no address: the profile's interface
    ({"node_addr": "10.9.9.9", "pref_iface": "ens1f0.100"}, "3", "ens1f0.100"),
    ({}, "3", "ens1f0.100"),  # nothing known: the lowest RoCE v2 IPv4-mapped index
])
def test_roce_v2_gid_choice(kw, index, iface):
    v = variables("roce-v2", **kw)
    assert (v["NCCL_IB_GID_INDEX"], v["NCCL_SOCKET_IFNAME"]) == (index, "=" + iface)


def test_ib_port_down_falls_back_to_tcp_with_one_warning():
    env = fabric.detect(str(SYSFS / "ib-down"), **PVE2)
    assert {k: v for k, v, _ in env.vars} == {
        "NCCL_IB_DISABLE": "1",
        # ib0 carries 10.100.0.2 but is down: the default route's interface
        "NCCL_SOCKET_IFNAME": "=eth0",
        "GLOO_SOCKET_IFNAME": "eth0",
        "OMPI_MCA_btl_tcp_if_include": "eth0",
        "HPCJOBS_GPUDIRECT_RDMA": "none",
        "NCCL_DEBUG": "WARN",
    }
    assert "\n" not in env.warning and "mlx5_0:1 DOWN" in env.warning and "TCP" in env.warning


def test_no_rdma_uses_the_interface_of_the_profile_address():
    assert variables("no-rdma", **PVE2) == {
        "NCCL_IB_DISABLE": "1",
        "NCCL_SOCKET_IFNAME": "=enp2s0",
        "GLOO_SOCKET_IFNAME": "enp2s0",
        "OMPI_MCA_btl_tcp_if_include": "enp2s0",
        "HPCJOBS_GPUDIRECT_RDMA": "none",
        "NCCL_DEBUG": "WARN",
    }
    assert variables("no-rdma")["NCCL_SOCKET_IFNAME"] == "=eth0"  # else the default route's


def test_no_rdma_and_no_route_sets_no_interface(tmp_path):
    env = fabric.detect(str(tmp_path), node_addr="10.0.0.1")
    v = {k: v for k, v, _ in env.vars}
    assert v["NCCL_IB_DISABLE"] == "1" and "NCCL_SOCKET_IFNAME" not in v
    assert env.warning and any("NCCL_SOCKET_IFNAME not set" in n for n in env.notes)


@pytest.mark.parametrize("case", ["ib-active", "roce-v2", "ib-down", "no-rdma"])
def test_never_the_old_guides_mistakes(case):
    v = variables(case, **PVE2)
    assert v.get("NCCL_IB_DISABLE") != "0"
    assert "NCCL_IB_GID_INDEX" not in v or case == "roce-v2"
    assert v["NCCL_DEBUG"] == "WARN"


def test_nccl_debug():
    v = variables("ib-active", debug=True)
    assert (v["NCCL_DEBUG"], v["NCCL_DEBUG_SUBSYS"]) == ("INFO", "INIT,NET,GRAPH")


def test_sysfs_gid_forms():
    assert fabric.ipv4_mapped("0000:0000:0000:0000:0000:ffff:0a64:0002") == "10.100.0.2"
    assert fabric.ipv4_mapped("::ffff:10.100.0.2") == "10.100.0.2"
    assert fabric.ipv4_mapped("fe80:0000:0000:0000:0ac0:ebff:fe12:3456") is None
    assert fabric.ipv4_mapped("0000:0000:0000:0000:0000:0000:0000:0000") is None


def test_rdma_ports_read_state_and_link_layer():
    ports = fabric.rdma_ports(str(SYSFS / "roce-v2"))
    assert [(p.name, p.state, p.link_layer) for p in ports] == [("mlx5_0:1", "ACTIVE", "Ethernet")]
    assert [p.state for p in fabric.rdma_ports(str(SYSFS / "ib-down"))] == ["DOWN"]
    assert fabric.rdma_ports(str(SYSFS / "no-rdma")) == []


# --- GPU binding -------------------------------------------------------------------------------

@pytest.mark.parametrize("local_rank,gpu", [(0, "0"), (1, "1"), (2, "0"), (3, "1")])
def test_gpu_bound_by_local_rank_when_slurm_did_not(local_rank, gpu):
    out, _ = gpus.binding({}, str(SYSFS / "ib-active"), local_rank, 4)  # 2 GPUs on the node
    assert {k: v for k, v, _ in out} == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": gpu}


@pytest.mark.parametrize("env", [{"CUDA_VISIBLE_DEVICES": "0"}, {"SLURM_STEP_GPUS": "1"}])
def test_gpu_binding_left_to_slurm(env):
    out, notes = gpus.binding(env, str(SYSFS / "ib-active"), 1, 2)
    assert [k for k, *_ in out] == ["CUDA_DEVICE_ORDER"] and "bound by Slurm" in notes[0]


def test_no_gpu_no_binding():
    out, notes = gpus.binding({}, str(SYSFS / "no-rdma"), 0, 1)
    assert [k for k, *_ in out] == ["CUDA_DEVICE_ORDER"] and "no NVIDIA GPU" in notes[0]


# --- through the whole launcher: built-in profile (pve cluster), fixture sysfs ----------------

def test_build_on_pve2_with_native_ib(tmp_path):
    env = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
           "SLURM_NODEID": "1", "SLURM_NTASKS": "3", "SLURM_NNODES": "3",
           "SLURM_TASKS_PER_NODE": "1(x3)", "SLURM_JOB_NODELIST": "pve[1-3]", "SLURMD_NODENAME": "pve2",
           "HPCJOBS_SYSFS_ROOT": str(SYSFS / "ib-active"), "HPCJOBS_SANDBOX_STATE": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "HPCJOBS_KIND": "vllm"}
    task = environment.build(env)
    a = task.additions()
    assert task.profile.chosen_by == "built-in"
    assert a["MASTER_ADDR"] == "10.100.0.1"  # pve1's IPoIB address: rendezvous over ib0
    assert a["VLLM_HOST_IP"] == "10.100.0.2"
    assert (a["NCCL_IB_HCA"], a["NCCL_SOCKET_IFNAME"]) == ("=mlx5_0:1", "=ib0")
    assert "CUDA_VISIBLE_DEVICES" not in a  # vLLM's one task per node needs all the node's GPUs
    assert not task.warnings
