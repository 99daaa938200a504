"""NCCL's init log: what NCCL chose per peer, and the fabric-truth verdict with its cause.

Recorded logs (h200_1rank_*: one rank of NCCL 2.28.9 on an H200) and hand-made ones that follow
NCCL's format strings (tests/fixtures/nccl/README.md says which lines come from which file).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcjobs.cluster import Fabric
from hpcjobs.launch.fabric import Port
from hpcjobs.runners import fabric_truth, nccllog

FIX = Path(__file__).parent.parent / "fixtures" / "nccl"
IB = Fabric(kind="infiniband", device="mlx5_0", port=1, interface="ib0", rate_gbps=100)
ETH = Fabric(kind="ethernet", device=None, port=1, interface="sbx0", rate_gbps=10)
ACTIVE_PORT = Port("mlx5_0", 1, "ACTIVE", "InfiniBand", "LinkUp", "100 Gb/sec (4X EDR)")


def log(name: str) -> nccllog.NcclLog:
    return nccllog.parse((FIX / name).read_text().splitlines())


def rank_log(name: str, key: str) -> nccllog.NcclLog:
    """One rank's NCCL_DEBUG_FILE: the lines of one rank ("HOST:" or "HOST:PID:") in a joined
    fixture."""
    lines = (FIX / name).read_text().splitlines()
    return nccllog.parse([ln for ln in lines if key in ln])


# --- recorded: one rank on an H200 -----------------------------------------------------------

@pytest.mark.parametrize("case", ["default", "socket", "ibdisable", "badhca"])
def test_recorded_h200_one_rank_shows_the_net_plugin_choice(case):
    lg = log(f"h200_1rank_{case}.log")
    assert lg.version == "2.28.9+cuda13.0"
    assert lg.hosts == ["vm"]
    assert lg.network == "Socket"  # "Assigned NET plugin Socket to comm", "Using network Socket"
    assert lg.net_failed == ["IB"]  # no IB device on that machine
    assert lg.socket_ifaces == ["lo:127.0.0.1<0>"]
    assert lg.connections == [] and lg.warnings == []
    assert any("GPU Direct RDMA Disabled for HCA 0 'lo'" in g for g in lg.gdr_disabled)
    assert nccllog.peers(lg, 0, ["vm"]) == []
    assert nccllog.summary([]) == "no peer connection (one rank)"


def test_recorded_env_lines():
    assert log("h200_1rank_socket.log").env == {"NCCL_P2P_DISABLE": "1"}


def test_one_rank_is_no_verdict_on_the_fabric():
    lg = log("h200_1rank_default.log")
    c = fabric_truth.judge([], lg, fabric=IB, env={}, ports=[ACTIVE_PORT], has_gpu=True)
    assert c.status == "skip" and "no connection crossed nodes" in c.summary


# --- hand-made, after NCCL's source ----------------------------------------------------------

def test_ib_with_gdr_two_nodes():
    lg = rank_log("handmade_ib_gdr_2node_2.21.log", "pve1:")
    assert lg.version == "2.21.5+cuda12.4" and lg.network == "IB"
    assert lg.ib_devices == ["mlx5_0:1/IB"]
    assert {c.label for c in lg.connections} == {"NET/IB/0/GDRDMA"}
    assert {c.direction for c in lg.connections} == {"send", "receive"}
    (p,) = nccllog.peers(lg, 0, ["pve1", "pve2"])
    assert (p.peer, p.host, p.transport, p.inter_node, p.channels) == (1, "pve2", "NET/IB/0/GDRDMA",
                                                                       True, 4)
    assert nccllog.summary([p]) == "NET/IB/0/GDRDMA between nodes"
    c = fabric_truth.judge([p], lg, fabric=IB, env={}, ports=[ACTIVE_PORT], has_gpu=True,
                           gdr_module="nvidia_peermem", gpu_nic_path="PIX")
    assert c.status == "pass" and c.summary == "NET/IB/0/GDRDMA between nodes"


def test_ib_without_gdr_is_a_warning_with_the_path_as_cause():
    lg = rank_log("handmade_ib_nogdr_3node_2.18.log", "pve2:")
    hosts = ["pve1", "pve2", "pve3"]
    ps = nccllog.peers(lg, 1, hosts)
    assert [(p.peer, p.transport) for p in ps] == [(0, "NET/IB/0"), (2, "NET/IB/0")]
    assert lg.gdr_disabled == ["GPU Direct RDMA Disabled for GPU 3b000 / HCA 0 (distance 4 > 3)"]
    c = fabric_truth.judge(ps, lg, fabric=IB, env={}, ports=[ACTIVE_PORT], has_gpu=True,
                           gdr_module="nvidia_peermem", gpu_nic_path="PHB")
    assert c.status == "warn" and "without GPUDirect RDMA" in c.summary
    assert any("GPU-NIC path PHB" in e for e in c.evidence)
    no_module = fabric_truth.judge(ps, lg, fabric=IB, env={}, ports=[ACTIVE_PORT], has_gpu=True,
                                   gdr_module="none", gpu_nic_path="PIX")
    assert "nvidia-peermem" in no_module.fix
    # CPU-only nodes: host memory is all there is, no warning.
    cpu = fabric_truth.judge(ps, lg, fabric=IB, env={}, ports=[ACTIVE_PORT], has_gpu=False)
    assert cpu.status == "pass"


def test_sockets_on_ib_because_of_nccl_ib_disable():
    lg = rank_log("handmade_socket_ibdisable_2node_2.28.log", "pve1:")
    assert lg.env == {"NCCL_IB_DISABLE": "1"}
    ps = nccllog.peers(lg, 0, ["pve1", "pve2"])
    assert [p.transport for p in ps] == ["NET/Socket"]
    c = fabric_truth.judge(ps, lg, fabric=IB, env={"NCCL_IB_DISABLE": "1"}, ports=[ACTIVE_PORT],
                           has_gpu=True)
    assert c.status == "fail"
    assert "TCP sockets between nodes" in c.summary and "NCCL_IB_DISABLE=1" in c.summary
    assert c.fix.startswith("unset NCCL_IB_DISABLE")
    # On an Ethernet profile the same log is what is expected.
    ok = fabric_truth.judge(ps, lg, fabric=ETH, env={}, ports=[], has_gpu=True)
    assert ok.status == "pass" and "ethernet" in ok.summary


def test_sockets_because_the_port_is_down_comes_first():
    lg = rank_log("handmade_socket_ibdisable_2node_2.28.log", "pve1:")
    ps = nccllog.peers(lg, 0, ["pve1", "pve2"])
    down = Port("mlx5_0", 1, "DOWN", "InfiniBand", "Polling", "10 Gb/sec (4X SDR)")
    # hpcjobs.launch set NCCL_IB_DISABLE=1 because of the port: the port is the cause.
    c = fabric_truth.judge(ps, lg, fabric=IB, env={"NCCL_IB_DISABLE": "1"}, ports=[down],
                           has_gpu=True)
    assert c.status == "fail" and "port mlx5_0:1 is DOWN" in c.summary
    assert any("state DOWN, phys Polling" in e for e in c.evidence)
    none = fabric_truth.judge(ps, lg, fabric=IB, env={}, ports=[], has_gpu=True)
    assert "no RDMA device" in none.summary


def test_sockets_in_a_container_without_libibverbs():
    lg = rank_log("handmade_socket_noverbs_2node_2.23.log", "pve2:")
    assert lg.ibverbs_missing and lg.ib_no_device
    assert lg.warnings == ["Net : Connection closed by remote peer"]  # WARN with a timestamp
    ps = nccllog.peers(lg, 1, ["pve1", "pve2"])
    c = fabric_truth.judge(ps, lg, fabric=IB, env={}, ports=[ACTIVE_PORT], has_gpu=True,
                           ibverbs=(False, "libibverbs.so.1: cannot open shared object file"))
    assert c.status == "fail" and "no libibverbs visible to the process" in c.summary
    assert "NCCL: Failed to open libibverbs.so[.1]" in c.evidence
    assert "libibverbs1" in c.fix


def test_sockets_because_nccl_ib_hca_names_no_such_device():
    lg = rank_log("handmade_socket_ibdisable_2node_2.28.log", "pve1:")
    lg.env.clear()
    ps = nccllog.peers(lg, 0, ["pve1", "pve2"])
    c = fabric_truth.judge(ps, lg, fabric=IB, env={"NCCL_IB_HCA": "=mlx5_9:1"},
                           ports=[ACTIVE_PORT], has_gpu=True, ibverbs=(True, "ok"))
    assert c.status == "fail" and "NCCL_IB_HCA==mlx5_9:1 names mlx5_9" in c.summary


def test_no_ib_device_seen_by_nccl_although_sysfs_has_one():
    lg = rank_log("handmade_socket_noverbs_2node_2.23.log", "pve1:")
    lg.ibverbs_missing = False
    ps = nccllog.peers(lg, 0, ["pve1", "pve2"])
    c = fabric_truth.judge(ps, lg, fabric=IB, env={}, ports=[ACTIVE_PORT], has_gpu=True,
                           ibverbs=(True, "ok"), dev_infiniband=False)
    assert "NCCL found no IB device although sysfs shows mlx5_0:1" in c.summary
    assert "/dev/infiniband: missing in this process's view" in c.evidence


def test_p2p_and_shm_within_a_node():
    lg = rank_log("handmade_p2p_shm_1node_4gpu_2.26.log", "gpu01:900:")
    labels = [c.label for c in lg.connections]
    assert labels == ["P2P", "P2P", "SHM", "P2P"]
    assert lg.connections[-1].via == "P2P/direct pointer"  # old hex bus id form parsed too
    ps = nccllog.peers(lg, 0, ["gpu01"] * 4)
    assert [(p.peer, p.transport, p.inter_node) for p in ps] == [(1, "P2P+SHM", False)]
    assert nccllog.summary(ps) == "P2P+SHM within a node"
    c = fabric_truth.judge(ps, lg, fabric=IB, env={}, ports=[ACTIVE_PORT], has_gpu=True)
    assert c.status == "pass" and "no connection crossed nodes" in c.summary


def test_forced_socket_within_one_node_is_not_a_fabric_failure():
    lg = rank_log("handmade_socket_forced_1node_2gpu_2.28.log", "vm:600:")
    ps = nccllog.peers(lg, 0, ["vm", "vm"])
    assert [(p.transport, p.inter_node) for p in ps] == [("NET/Socket", False)]
    assert lg.env == {"NCCL_P2P_DISABLE": "1", "NCCL_SHM_DISABLE": "1"}
    c = fabric_truth.judge(ps, lg, fabric=IB, env={}, ports=[ACTIVE_PORT], has_gpu=True)
    assert c.status == "pass"
    # Without the hosts NCCL's log alone cannot say where the peer is.
    assert nccllog.summary(nccllog.peers(lg, 0)) == "NET/Socket between ranks"


def test_pxn_and_gdr_over_pci():
    lg = log("handmade_ib_pxn_2.24.log")
    assert lg.ib_devices == ["mlx5_0:1/IB", "mlx5_1:1/RoCE"]
    send, recv = lg.connections
    assert (send.label, send.net, send.gdr) == ("NET/IB/1/GDRDMA", "IB", True)
    assert recv.label == "NET/IB/0/GDRDMA"
    (p,) = nccllog.peers(lg, 0, ["pve1", "x", "pve3"])
    assert p.transport == "NET/IB/1/GDRDMA+NET/IB/0/GDRDMA" and p.inter_node


def test_no_log_is_a_skip():
    c = fabric_truth.judge([], None, fabric=IB, env={}, ports=[ACTIVE_PORT], has_gpu=False)
    assert c.status == "skip" and "gloo or MPI" in c.summary


def test_hca_devices():
    assert fabric_truth.hca_devices("=mlx5_0:1,mlx5_1") == ["mlx5_0", "mlx5_1"]
    assert fabric_truth.hca_devices("^mlx5_2") == []
