"""`hpcjobs doctor` over sysfs trees and recorded command outputs (tests/fixtures/doctor/).

Each fixture host is the real code path with two things swapped: the sysfs root
(HPCJOBS_SYSFS_ROOT's job) and the command runner (recorded outputs of nvidia-smi, ip,
scontrol, munge). A command a test does not name answers "command not found", as on a host
without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from hpcjobs import doctor
from hpcjobs.cluster import builtin
from hpcjobs.doctor import FAIL, NO_RDMA, PASS, SKIP, WARN, CmdResult, Host
from tests.conftest import FIXTURES, ROOT

FIX = FIXTURES / "doctor"
SYSFS = FIX / "sysfs"
CMD = FIX / "cmd"


def out(name: str, rc: int = 0) -> CmdResult:
    return CmdResult(rc, (CMD / name).read_text())


# A healthy pve1: every command answers as on the real cluster.
HEALTHY = {
    "ip -o addr show": out("ip_addr_pve1.txt"),
    "nvidia-smi topo -m": out("topo_pix.txt"),
    "munge -n": CmdResult(0, "MUNGE:AwQFAAD...:\n"),
    "unmunge": out("unmunge_ok.txt"),
    "scontrol ping": out("scontrol_ping_up.txt"),
    "scontrol -o show node pve1": out("scontrol_node_pve1.txt"),
}


def make_host(tree: str = "ib_edr_gdr", commands: dict | None = None, *, env: dict | None = None,
              ulimit: str = "ulimit_unlimited.txt", hostname: str = "pve1", calls: list | None = None
              ) -> Host:
    cmds = {**HEALTHY, **(commands or {})}

    def run(argv, input=None):
        key = " ".join(argv)
        if calls is not None:
            calls.append((key, input))
        r = cmds.get(key)
        if r is None:
            return CmdResult(127, "", f"{argv[0]}: command not found")
        return r

    mem = doctor.parse_ulimit((CMD / ulimit).read_text())
    return Host(root=SYSFS / tree, run=run, hostname=hostname, env=env or {}, memlock=(mem, mem))


def by_name(report) -> dict:
    return {c.name: c for c in report.checks}


PVE = builtin()


def sandbox_profile():
    """Like the sandbox's: ethernet on sbx0, nodes node1..3 at 10.200.0.K, fake v100s GRES."""
    from hpcjobs.cluster import parse_profile

    return parse_profile({
        "name": "sandbox",
        "fabric": {"kind": "ethernet", "interface": "sbx0", "rate_gbps": 10},
        "partitions": [{"name": "debug", "nodes": "node[1-3]", "default": True}],
        "nodes": [{"names": "node[1-3]", "addresses": "10.200.0.[1-3]", "cpus": 2, "memory_mb": 2000,
                   "gpu": {"type": "v100s", "count": 1, "memory_gb": 32,
                           "compute_capability": "7.0"}}],
    }, "sandbox-test")


# --- the whole report -----------------------------------------------------------------------

def test_healthy_infiniband_node_passes_everything():
    report = doctor.diagnose(PVE, make_host())
    checks = by_name(report)
    assert {c.status for c in report.checks} == {PASS}, report.text()
    assert report.ok and report.failures == 0 and report.node == "pve1"
    assert report.fabric == "mlx5_0:1 ACTIVE (InfiniBand, 100 Gb/sec (4X EDR)): NCCL over RDMA, GPUDirect RDMA"
    assert "100 Gb/sec (4X EDR)" in checks["rdma"].summary
    assert checks["interface"].summary == "IPoIB interface ib0 up with 10.100.0.1"
    assert "/sys/module/nvidia_peermem/version (550.127.05)" in checks["gpudirect-rdma"].evidence
    assert checks["gpu-nic-path"].evidence == ["GPU0 -> mlx5_0: PIX"]
    assert checks["slurm-node"].summary == "node pve1 IDLE, Gres=gpu:v100s:1"


def test_no_rdma_on_an_ethernet_cluster_says_tcp_plainly_and_does_not_fail():
    host = make_host("none", {"ip -o addr show": out("ip_addr_node2_sandbox.txt"),
                              "ip -o link show dev sbx0": out("ip_link_sbx0.txt"),
                              "scontrol -o show node node2": out("scontrol_node_pve1.txt")},
                     hostname="node2")
    report = doctor.diagnose(sandbox_profile(), host)
    checks = by_name(report)
    assert report.fabric == NO_RDMA == "no RDMA device: NCCL and MPI will use TCP sockets"
    assert report.verdict.startswith(NO_RDMA)
    assert checks["rdma"].status == WARN and checks["rdma"].summary == NO_RDMA
    assert checks["gpudirect-rdma"].status == SKIP and checks["gpu-nic-path"].status == SKIP
    # /sys/class/net has no sbx0 (a namespace without its own /sys): netlink answers instead.
    assert checks["interface"].status == PASS, checks["interface"]
    assert checks["interface"].evidence[0] == "ip -o link show dev sbx0: operstate up, type ether"
    assert report.ok


def test_no_rdma_where_the_profile_promises_infiniband_fails():
    report = doctor.diagnose(PVE, make_host("none"))
    rdma = by_name(report)["rdma"]
    assert rdma.status == FAIL and rdma.summary == NO_RDMA
    assert "modprobe mlx5_ib" in rdma.fix and not report.ok


# --- RDMA ports -------------------------------------------------------------------------------

def test_port_down_polling_names_the_cable():
    report = doctor.diagnose(PVE, make_host("ib_down"))
    rdma = by_name(report)["rdma"]
    assert rdma.status == FAIL
    assert rdma.summary.startswith("mlx5_0:1 is DOWN: no link: cable")
    assert rdma.evidence == ["mlx5_0:1: state DOWN, phys Polling, link layer InfiniBand, rate 100 Gb/sec (4X EDR)"]
    assert report.fabric.startswith("no ACTIVE RDMA port (mlx5_0:1 DOWN)")


def test_port_init_means_no_subnet_manager():
    rdma = by_name(doctor.diagnose(PVE, make_host("ib_init")))["rdma"]
    assert rdma.status == FAIL and "no subnet manager" in rdma.summary and "opensm" in rdma.fix


def test_profile_device_missing_names_what_is_there():
    rdma = by_name(doctor.diagnose(PVE, make_host("mlx5_1_only")))["rdma"]
    assert rdma.status == FAIL
    assert rdma.summary == "the profile's port mlx5_0:1 does not exist here (found mlx5_1:1)"


def test_slower_link_than_the_profile_warns():
    rdma = by_name(doctor.diagnose(PVE, make_host("ib_fdr_nogdr")))["rdma"]
    assert rdma.status == WARN and "trained at 56 Gb/s, below the profile's 100 Gb/s" in rdma.summary


def test_roce_port_on_an_infiniband_profile_fails_on_link_layer():
    rdma = by_name(doctor.diagnose(PVE, make_host("roce")))["rdma"]
    assert rdma.status == FAIL and "link layer is Ethernet" in rdma.summary and 'kind = "roce"' in rdma.fix


def test_roce_profile_passes():
    roce = replace(PVE, fabric=replace(PVE.fabric, kind="roce", interface="ens1f0"))
    rdma = by_name(doctor.diagnose(roce, make_host("roce")))["rdma"]
    assert rdma.status == PASS and "Ethernet" in rdma.summary


# --- GPUDirect RDMA ---------------------------------------------------------------------------

def test_gdr_missing_warns_with_modprobe():
    gdr = by_name(doctor.diagnose(PVE, make_host("ib_fdr_nogdr")))["gpudirect-rdma"]
    assert gdr.status == WARN and "modprobe nvidia-peermem" in gdr.fix
    assert "no /sys/module/nvidia_peermem/version" in gdr.evidence


def test_gdr_through_nv_mem_passes():
    gdr = by_name(doctor.diagnose(PVE, make_host("ib_nv_mem")))["gpudirect-rdma"]
    assert gdr.status == PASS
    assert gdr.evidence == ["/sys/kernel/mm/memory_peers/nv_mem/version (1.3-0)"]


def test_gdr_does_not_apply_without_an_nvidia_driver():
    gdr = by_name(doctor.diagnose(PVE, make_host("none")))["gpudirect-rdma"]
    assert gdr.status == SKIP and "no NVIDIA driver" in gdr.summary


# --- GPU-NIC path -----------------------------------------------------------------------------

@pytest.mark.parametrize("fixture,status,level", [
    ("topo_pix.txt", PASS, "PIX"),
    ("topo_pxb.txt", PASS, "PXB"),
    ("topo_phb_old.txt", WARN, "PHB"),
    ("topo_node.txt", WARN, "NODE"),
    ("topo_sys.txt", WARN, "SYS"),
])
def test_gpu_nic_path_levels(fixture, status, level):
    c = by_name(doctor.diagnose(PVE, make_host(commands={"nvidia-smi topo -m": out(fixture)})))["gpu-nic-path"]
    assert c.status == status, c
    assert c.summary.startswith(f"GPU-NIC path {level}")
    assert c.evidence == [f"GPU0 -> mlx5_0: {level}"]
    if status == WARN:
        assert "NCCL_NET_GDR_LEVEL defaults to PXB" in c.summary


def test_gpu_nic_path_reports_each_gpu_and_its_nearest_nic():
    c = by_name(doctor.diagnose(PVE, make_host(commands={"nvidia-smi topo -m": out("topo_2gpu_2nic.txt")})))
    c = c["gpu-nic-path"]
    assert c.status == WARN and c.summary.startswith("GPU-NIC path SYS")
    assert c.evidence == ["GPU0 -> mlx5_0: PXB", "GPU1 -> mlx5_0: SYS (nearest NIC: mlx5_1, PXB)"]


def test_gpu_nic_path_without_nvidia_smi_or_nic():
    cmds = dict(HEALTHY)
    del cmds["nvidia-smi topo -m"]
    host = make_host()
    host.run = lambda argv, input=None: cmds.get(" ".join(argv), CmdResult(127, "", "not found"))
    assert by_name(doctor.diagnose(PVE, host))["gpu-nic-path"].status == SKIP
    c = by_name(doctor.diagnose(PVE, make_host(commands={"nvidia-smi topo -m": out("topo_no_nic.txt")})))
    assert c["gpu-nic-path"].status == WARN and "does not show mlx5_0" in c["gpu-nic-path"].summary


def test_parse_topo_both_formats():
    new = doctor.parse_topo((CMD / "topo_2gpu_2nic.txt").read_text())
    assert new.gpus == ["GPU0", "GPU1"] and new.nics == {"NIC0": "mlx5_0", "NIC1": "mlx5_1"}
    assert new.path == {"GPU0": {"NIC0": "PXB", "NIC1": "SYS"}, "GPU1": {"NIC0": "SYS", "NIC1": "PXB"}}
    old = doctor.parse_topo((CMD / "topo_phb_old.txt").read_text())
    assert old.nics == {"mlx5_0": "mlx5_0"} and old.path_to("GPU0", "mlx5_0") == "PHB"
    assert doctor.parse_topo("No devices were found\n").gpus == []


# --- IPoIB interface --------------------------------------------------------------------------

def test_address_on_the_wrong_interface_fails():
    c = by_name(doctor.diagnose(PVE, make_host(commands={"ip -o addr show": out("ip_addr_pve1_wrong_if.txt")})))
    c = c["interface"]
    assert c.status == FAIL and c.summary.startswith("10.100.0.1 is on eno1, not ib0")


def test_interface_down_fails():
    c = by_name(doctor.diagnose(PVE, make_host("ib_down")))["interface"]
    assert c.status == FAIL and c.summary == "IPoIB interface ib0 is down"


def test_login_host_is_not_a_node():
    report = doctor.diagnose(PVE, make_host(commands={
        "ip -o addr show": CmdResult(0, ""),
        "scontrol -o show node login1": CmdResult(1, "", "Node login1 not found\n")}, hostname="login1"))
    checks = by_name(report)
    assert report.node is None
    assert checks["interface"].status == SKIP and "not a node of cluster 'pve'" in checks["interface"].summary
    assert checks["slurm-node"].status == SKIP and "srun -N1 hpcjobs doctor" in checks["slurm-node"].fix


def test_node_found_by_its_address_when_the_hostname_differs():
    report = doctor.diagnose(PVE, make_host(hostname="gpu-a.cluster.example"))
    assert report.node == "pve1" and by_name(report)["interface"].status == PASS


def test_parse_ip_addr():
    pairs = doctor.parse_ip_addr((CMD / "ip_addr_pve1.txt").read_text())
    assert ("ib0", "10.100.0.1") in pairs and ("lo", "127.0.0.1") in pairs
    assert ("ib0", "fe80::ec4:7aff:fe65:4f1a") in pairs


# --- memlock ----------------------------------------------------------------------------------

def test_memlock_limited_with_rdma_fails():
    c = by_name(doctor.diagnose(PVE, make_host(ulimit="ulimit_64.txt")))["memlock"]
    assert c.status == FAIL and "64 KiB" in c.summary and "ibv_reg_mr" in c.summary
    assert c.evidence == ["RLIMIT_MEMLOCK soft 64 KiB, hard 64 KiB"]


def test_memlock_limited_without_rdma_warns_and_inside_a_job_names_slurm_conf():
    host = make_host("none", ulimit="ulimit_8192.txt", env={"SLURM_JOB_ID": "7"})
    c = by_name(doctor.diagnose(PVE, host))["memlock"]
    assert c.status == WARN and "8 MiB in this job step" in c.summary
    assert "PropagateResourceLimitsExcept=MEMLOCK" in c.fix


def test_memlock_soft_below_hard_suggests_ulimit():
    host = make_host(ulimit="ulimit_64.txt")
    host.memlock = (65536, -1)
    assert "ulimit -l unlimited" in by_name(doctor.diagnose(PVE, host))["memlock"].fix


# --- munge and Slurm --------------------------------------------------------------------------

def test_munge_pipes_the_credential_into_unmunge():
    calls = []
    doctor.diagnose(PVE, make_host(calls=calls))
    assert ("unmunge", "MUNGE:AwQFAAD...:\n") in calls


@pytest.mark.parametrize("commands,summary", [
    ({"munge -n": out("munge_no_daemon.txt", rc=1)}, "munge cannot make a credential"),
    ({"unmunge": out("unmunge_expired.txt", rc=15)}, "unmunge refused this host's credential: STATUS:"),
    ({"munge -n": CmdResult(127, "", "munge: command not found")}, "munge is not installed"),
])
def test_munge_failures(commands, summary):
    c = by_name(doctor.diagnose(PVE, make_host(commands=commands)))["munge"]
    assert c.status == FAIL and c.summary.startswith(summary) and c.fix


def test_controller_down_fails_and_the_node_check_skips():
    report = doctor.diagnose(PVE, make_host(commands={"scontrol ping": out("scontrol_ping_down.txt", 1)}))
    checks = by_name(report)
    assert checks["slurmctld"].status == FAIL
    assert checks["slurmctld"].evidence == ["Slurmctld(primary) at pve1 is DOWN"]
    assert checks["slurm-node"].status == SKIP


@pytest.mark.parametrize("fixture,rc,status,summary", [
    ("scontrol_node_pve1_drain.txt", 0, FAIL, "node pve1 is IDLE+DRAIN"),
    ("scontrol_node_pve1_notresponding.txt", 0, FAIL, "node pve1 is IDLE*"),
    ("scontrol_node_pve1_nogres.txt", 0, FAIL, "node pve1 has Gres=(null), the profile says gpu:v100s:1"),
    ("scontrol_node_pve1_wrong_type.txt", 0, FAIL, "node pve1 has Gres=gpu:tesla:1(S:0), the profile"),
    ("scontrol_node_notfound.txt", 1, FAIL, "Slurm does not know node pve1"),
])
def test_slurm_node_states(fixture, rc, status, summary):
    c = by_name(doctor.diagnose(PVE, make_host(commands={"scontrol -o show node pve1": out(fixture, rc)})))
    c = c["slurm-node"]
    assert c.status == status and c.summary.startswith(summary), c


def test_drained_node_shows_slurms_reason():
    c = by_name(doctor.diagnose(PVE, make_host(
        commands={"scontrol -o show node pve1": out("scontrol_node_pve1_drain.txt")})))["slurm-node"]
    assert "Reason=ib0 down after reboot [root@2024-05-02T10:05:11]" in c.evidence
    assert "state=resume" in c.fix


def test_slurmd_nodename_wins_inside_a_job():
    calls = []
    doctor.diagnose(PVE, make_host(env={"SLURMD_NODENAME": "pve1"}, hostname="whatever", calls=calls))
    assert ("scontrol -o show node pve1", None) in calls


# --- environment ------------------------------------------------------------------------------

@pytest.mark.parametrize("env,name,status,words", [
    ({"NCCL_IB_GID_INDEX": "3"}, "env:NCCL_IB_GID_INDEX", WARN, "on native InfiniBand: NCCL ignores it"),
    ({"NCCL_IB_DISABLE": "0"}, "env:NCCL_IB_DISABLE", WARN, "no-op"),
    ({"NCCL_IB_DISABLE": "1"}, "env:NCCL_IB_DISABLE", FAIL, "forces TCP sockets although mlx5_0:1 is ACTIVE"),
    ({"NCCL_DEBUG": "INFO"}, "env:NCCL_DEBUG", WARN, "left on"),
    ({"OMPI_MCA_btl": "openib,self,vader"}, "env:OMPI_MCA_btl", FAIL, "openib BTL is gone in Open MPI 5"),
    ({"OMPI_MCA_btl": "self,vader,tcp"}, "env:OMPI_MCA_btl", WARN, "vader is called sm"),
    ({"NCCL_IB_HCA": "=mlx5_2:1"}, "env:NCCL_IB_HCA", FAIL, "names mlx5_2, which this node does not have"),
    ({"UCX_NET_DEVICES": "mlx5_3:1"}, "env:UCX_NET_DEVICES", FAIL, "names mlx5_3"),
])
def test_environment_contradicting_facts(env, name, status, words):
    report = doctor.diagnose(PVE, make_host(env=env))
    c = by_name(report)[name]
    assert c.status == status and words in c.summary, c
    assert c.fix


def test_environment_that_is_fine():
    env = {"OMPI_MCA_btl": "^openib", "NCCL_IB_HCA": "=mlx5_0:1", "NCCL_DEBUG": "WARN",
           "UCX_NET_DEVICES": "mlx5_0:1"}
    c = by_name(doctor.diagnose(PVE, make_host(env=env)))["environment"]
    assert c.status == PASS
    assert c.evidence == ["set: NCCL_DEBUG, NCCL_IB_HCA, OMPI_MCA_btl, UCX_NET_DEVICES"]


def test_ib_disable_forcing_tcp_shows_in_the_fabric_verdict():
    report = doctor.diagnose(PVE, make_host(env={"NCCL_IB_DISABLE": "1"}))
    assert report.fabric == "mlx5_0:1 ACTIVE but NCCL_IB_DISABLE=1: NCCL will use TCP sockets"


@pytest.mark.parametrize("index,status", [("3", PASS), ("1", FAIL), ("2", FAIL)])
def test_gid_index_on_roce_must_be_roce_v2_ipv4(index, status):
    roce = replace(PVE, fabric=replace(PVE.fabric, kind="roce", interface="ens1f0"))
    c = by_name(doctor.diagnose(roce, make_host("roce", env={"NCCL_IB_GID_INDEX": index})))
    assert c["env:NCCL_IB_GID_INDEX"].status == status


# --- output and the command -------------------------------------------------------------------

def test_json_shape():
    d = doctor.diagnose(PVE, make_host("ib_down")).to_dict()
    assert set(d) == {"host", "node", "cluster", "profile", "ok", "failures", "warnings", "fabric",
                      "verdict", "checks"}
    assert d["ok"] is False and d["failures"] >= 1
    assert [c["name"] for c in d["checks"]][:8] == list(doctor.CHECK_NAMES[:8])
    assert all(set(c) == {"name", "status", "summary", "evidence", "fix"} for c in d["checks"])
    json.dumps(d)


def test_text_report_shows_evidence_and_fix():
    text = doctor.diagnose(PVE, make_host("ib_down")).text()
    assert "FAIL  rdma" in text and "seen: mlx5_0:1: state DOWN" in text and "fix:  check the cable" in text
    assert text.splitlines()[-1].startswith("verdict: no ACTIVE RDMA port")


def _cli(monkeypatch, host, *args):
    from click.testing import CliRunner

    from hpcjobs.cli import main

    monkeypatch.setattr(doctor.Host, "real", classmethod(lambda cls: host))
    return CliRunner().invoke(main, ["doctor", *args])


def test_cli_exit_codes_and_json(isolated, monkeypatch):
    ok = _cli(monkeypatch, make_host(), "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["ok"] is True
    bad = _cli(monkeypatch, make_host("ib_down"), "--json")
    assert bad.exit_code == 1 and json.loads(bad.output)["failures"] >= 1
    text = _cli(monkeypatch, make_host("none"))
    assert text.exit_code == 1 and "verdict: no RDMA device: NCCL and MPI will use TCP sockets" in text.output


def test_cli_bad_node_is_bad_input(isolated):
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "doctor", "--node", "pve9"], check=False,
                       capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
    assert r.returncode == 2 and r.stderr.startswith("hpcjobs: error: --node: no node 'pve9'")
    assert r.stderr.count("\n") == 1


def test_sysfs_root_from_the_environment_in_a_real_process(isolated):
    """The real command (real getrlimit, real munge/scontrol whatever state they are in) over a
    fixture sysfs tree: the RDMA verdict must come from the tree."""
    env = {**os.environ, "HPCJOBS_SYSFS_ROOT": str(SYSFS / "ib_down")}
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "doctor", "--json"], check=False,
                       capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 1, r.stderr
    d = json.loads(r.stdout)
    rdma = next(c for c in d["checks"] if c["name"] == "rdma")
    assert rdma["status"] == FAIL and "mlx5_0:1 is DOWN" in rdma["summary"]


def test_help_lists_doctor():
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "--help"], check=False, capture_output=True,
                       text=True, cwd=ROOT)
    assert "doctor" in r.stdout
