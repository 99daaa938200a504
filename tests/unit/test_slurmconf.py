"""slurm.conf.d is generated from the profile (one source of truth), and the sandbox differs
from it only by the swaps listed in hpcjobs.sandbox.config (and docs/sandbox.md)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcjobs import cluster as cl
from hpcjobs import slurmconf
from hpcjobs.sandbox import config, netns
from hpcjobs.sandbox.layout import Layout
from tests.conftest import FIXTURES, ROOT

CONF_D = ROOT / "slurm.conf.d"
LAY = Layout(Path("/run/hpcjobs-sandbox"))


def keyvals(text: str) -> dict[str, str]:
    """Key=value lines of a Slurm config (node/partition/gres lines keyed by their first word)."""
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, value = line.partition("=")
        if key in ("NodeName", "PartitionName"):
            name = value.split()[0]
            out[f"{key}={name}"] = value
        else:
            assert key not in out, f"{key} twice"
            out[key] = value
    return out


# --- the committed files -----------------------------------------------------------------------

@pytest.mark.parametrize("name", slurmconf.FILES)
def test_committed_files_are_the_generated_text(name):
    generated = slurmconf.generate(cl.builtin())[name]
    committed = (CONF_D / name).read_text()
    assert committed == generated, (
        f"slurm.conf.d/{name} differs from the profile; regenerate with "
        "`HPCJOBS_SANDBOX_STATE=/nonexistent hpcjobs cluster slurm-conf --out slurm.conf.d`")


def test_the_users_cluster():
    kv = keyvals((CONF_D / "slurm.conf").read_text())
    assert kv["SlurmctldHost"] == "pve1"
    assert kv["SelectType"] == "select/cons_tres"
    assert kv["MpiDefault"] == "pmix"
    assert kv["ProctrackType"] == "proctrack/cgroup"
    assert kv["TaskPlugin"] == "task/cgroup,task/affinity"
    assert kv["PropagateResourceLimitsExcept"] == "MEMLOCK"
    assert kv["GresTypes"] == "gpu"
    assert kv["NodeName=pve[1-3]"] == "pve[1-3] CPUs=32 RealMemory=191000 Gres=gpu:v100s:1 State=UNKNOWN"
    part = kv["PartitionName=gpu"]
    assert "Nodes=pve[1-3]" in part and "Default=YES" in part and "State=UP" in part
    assert "DefMemPerCPU=5968" in part and "MaxTime=2-00:00:00" in part
    assert "NodeAddr" not in (CONF_D / "slurm.conf").read_text()
    gres = keyvals((CONF_D / "gres.conf").read_text())
    assert gres["AutoDetect"] == "off"
    assert gres["NodeName=pve[1-3]"] == "pve[1-3] Name=gpu Type=v100s File=/dev/nvidia0"
    cg = keyvals((CONF_D / "cgroup.conf").read_text())
    assert cg["ConstrainDevices"] == "yes" and cg["CgroupPlugin"] == "autodetect"


def test_choices_are_commented():
    text = (CONF_D / "slurm.conf").read_text()
    for key in ("SelectTypeParameters", "ReturnToService", "MinJobAge", "AccountingStorageType"):
        before = text.split(f"\n{key}=")[0].splitlines()[-1]
        assert before.startswith("#"), f"{key} has no comment above it"


def test_other_profiles_keep_order_and_count_gpus():
    c = cl.load_file(FIXTURES / "profiles" / "mixed.toml")
    files = slurmconf.generate(c)
    kv = keyvals(files["slurm.conf"])
    # Slurm's node order is the order of the NodeName lines: never re-sorted.
    assert "NodeName=compute-b[21-23],compute-a1" in kv
    assert kv["PartitionName=a100"].startswith("a100 Nodes=compute-b[21-23],compute-a1 ")
    assert "Gres=gpu:a100:4" in kv["NodeName=compute-b[21-23],compute-a1"]
    assert "Gres" not in kv["NodeName=cpu[001-004]"]
    assert "DefMemPerCPU=4000" in kv["PartitionName=cpu"]
    assert "Default=NO" in kv["PartitionName=cpu"] and "MaxTime=INFINITE" in kv["PartitionName=cpu"]
    gres = keyvals(files["gres.conf"])
    assert gres["NodeName=compute-b[21-23],compute-a1"].endswith("File=/dev/nvidia[0-3]")
    assert not any(k.startswith("NodeName=cpu") for k in gres)


def test_cli_writes_the_files(tmp_path, isolated):
    out = tmp_path / "conf"
    proc = subprocess.run([sys.executable, "-m", "hpcjobs", "cluster", "slurm-conf", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in slurmconf.FILES:
        assert (out / name).read_text() == (CONF_D / name).read_text()
    printed = subprocess.run([sys.executable, "-m", "hpcjobs", "cluster", "slurm-conf"],
                             capture_output=True, text=True).stdout
    assert "# ===== gres.conf =====" in printed and "NodeName=pve[1-3]" in printed


# --- the sandbox: the same generator, an explicit list of swaps ---------------------------------

# Site field -> the slurm.conf key it writes.
FIELD_KEYS = {
    "state_save_location": "StateSaveLocation", "slurmd_spool_dir": "SlurmdSpoolDir",
    "slurmctld_pid_file": "SlurmctldPidFile", "slurmd_pid_file": "SlurmdPidFile",
    "slurmctld_log_file": "SlurmctldLogFile", "slurmd_log_file": "SlurmdLogFile",
    "job_comp_loc": "JobCompLoc", "tmp_fs": "TmpFS", "proctrack_type": "ProctrackType",
    "task_plugin": "TaskPlugin", "slurmd_parameters": "SlurmdParameters",
    "slurmctld_timeout": "SlurmctldTimeout", "slurmd_timeout": "SlurmdTimeout",
    "message_timeout": "MessageTimeout", "kill_wait": "KillWait",
    "scheduler_parameters": "SchedulerParameters", "first_job_id": "FirstJobId",
}

SWAPS_22_05 = {
    "node_addr",
    "state_save_location", "slurmd_spool_dir", "slurmctld_pid_file", "slurmd_pid_file",
    "slurmctld_log_file", "slurmd_log_file", "job_comp_loc", "tmp_fs",
    "proctrack_type", "task_plugin",
    "gpu_file", "slurmd_parameters",
    "slurmctld_timeout", "slurmd_timeout", "message_timeout", "kill_wait", "scheduler_parameters",
    "first_job_id",
}


def test_the_swap_list_is_pinned():
    assert set(config.swaps(LAY, (22, 5))) == SWAPS_22_05
    # 24.05+ (Debian 13 has 24.11) can and must switch the cgroup plugin off; 23.x cannot.
    assert set(config.swaps(LAY, (23, 11))) == SWAPS_22_05
    assert set(config.swaps(LAY, (24, 11))) == SWAPS_22_05 | {"cgroup_plugin"}
    assert config.swaps(LAY, (24, 11))["cgroup_plugin"].value == "disabled"
    assert all(s.why for s in config.swaps(LAY, (24, 11)).values())


@pytest.mark.parametrize("version", [(22, 5), (24, 11)])
def test_sandbox_differs_from_the_shipped_config_only_by_the_swaps(version):
    n = 4
    prof = config.profile(n)
    prod = slurmconf.generate(prof)  # the shipped settings for the sandbox's hosts
    sbx = config.generate(LAY, n, version)
    a, b = keyvals(prod["slurm.conf"]), keyvals(sbx["slurm.conf"])
    changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    nodes = {k for k in changed if k.startswith("NodeName=")}
    assert changed - nodes == {FIELD_KEYS[f] for f in config.swaps(LAY, version) if f in FIELD_KEYS}
    # Node lines gain NodeAddr (one line per node) and nothing else.
    for k in range(1, n + 1):
        line = b[f"NodeName=node{k}"]
        assert line == f"node{k} NodeAddr=10.200.0.{k} CPUs=32 RealMemory=191000 Gres=gpu:v100s:1 State=UNKNOWN"
    assert b["ProctrackType"] == "proctrack/linuxproc" and b["TaskPlugin"] == "task/none"
    assert b["TmpFS"] == "/run/hpcjobs-sandbox/tmp/%n" and b["SlurmdParameters"] == "config_overrides"
    assert b["SlurmctldHost"] == "slurmctl(10.200.0.254)"
    # Everything the user's cluster depends on is the shipped value.
    for key in ("MpiDefault", "SelectType", "SelectTypeParameters", "GresTypes",
                "PropagateResourceLimitsExcept", "AuthType", "SlurmUser", "ReturnToService",
                "AccountingStorageType", "JobCompType", "MinJobAge", "PartitionName=gpu"):
        assert a[key] == b[key], key
    ga, gb = keyvals(prod["gres.conf"]), keyvals(sbx["gres.conf"])
    assert ga["NodeName=node[1-4]"].replace("/dev/nvidia0", "/dev/null") == gb["NodeName=node[1-4]"]
    ca, cb = keyvals(prod["cgroup.conf"]), keyvals(sbx["cgroup.conf"])
    diff = {k for k in ca.keys() | cb.keys() if ca.get(k) != cb.get(k)}
    assert diff == ({"CgroupPlugin"} if version >= (24, 5) else set())


def test_sandbox_starts_from_the_shipped_files():
    """The sandbox's text is the committed slurm.conf.d text where no swap applies."""
    sbx = config.generate(LAY, 3, (22, 5))["slurm.conf"].splitlines()
    shipped = (CONF_D / "slurm.conf").read_text().splitlines()
    swapped_keys = set(FIELD_KEYS.values()) | {"SlurmctldHost", "ClusterName", "NodeName",
                                               "PartitionName"}
    comments = [ln for ln in shipped if ln.startswith("# ") and "generated" not in ln
                and not ln.startswith("# from")]
    assert [ln for ln in sbx if ln in comments] == comments
    settings = [ln for ln in shipped if "=" in ln and not ln.startswith("#")
                and ln.split("=")[0] not in swapped_keys]
    assert [ln for ln in sbx if ln in settings] == settings


def test_sandbox_profile():
    c = config.profile(8)
    assert c.sandbox and c.name == "sandbox"
    assert [n.name for n in c.nodes] == [f"node{k}" for k in range(1, 9)]
    assert [n.address for n in c.nodes] == [f"10.200.0.{k}" for k in range(1, 9)]
    assert (c.fabric.kind, c.fabric.interface, c.fabric.device) == ("ethernet", "sbx0", None)
    assert c.partition(None).name == "gpu" and c.partition(None).default
    assert c.partition(None).nodes == tuple(f"node{k}" for k in range(1, 9))
    gpu = c.nodes[0].gpu
    assert (gpu.type, gpu.count, gpu.memory_gb, gpu.compute_capability) == ("v100s", 1, 32, "7.0")
    assert (c.slurm.controller, c.slurm.controller_address) == ("slurmctl", "10.200.0.254")
    # Same hardware as the user's nodes: a job that fits the sandbox fits the cluster.
    assert (c.nodes[0].cpus, c.nodes[0].memory_mb) == (cl.builtin().nodes[0].cpus,
                                                      cl.builtin().nodes[0].memory_mb)


def test_hosts_file():
    text = config.hosts_file(3)
    assert "10.200.0.254\tslurmctl" in text and "10.200.0.3\tnode3" in text
    assert "::ffff:10.200.0.2\tnode2" in text and "::ffff:10.200.0.254\tslurmctl" in text
    assert "node4" not in text


def test_interface_names_fit_the_kernel_limit():
    names = [netns.BRIDGE, netns._veth(netns.CONTROLLER_NS),
             netns._veth(netns.node_ns(config.MAX_NODES)), config.INTERFACE]
    assert all(len(n) <= 15 for n in names), names


def test_subnet_check_ignores_its_own_and_broader_routes(monkeypatch):
    routes = [
        {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
        {"dst": "10.0.0.0/8", "dev": "tun0"},  # a VPN's broad route: only shadowed
        {"dst": "10.200.0.0/24", "dev": "hpcjobs-br0"},  # our own
        {"type": "local", "dst": "10.200.0.100", "dev": "hpcjobs-br0"},
    ]

    def fake_run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 0, json.dumps(routes), "")

    monkeypatch.setattr(netns.subprocess, "run", fake_run)
    assert netns.subnet_users() == []
    routes.append({"dst": "10.200.0.0/16", "dev": "docker0"})
    assert netns.subnet_users() == []
    routes.append({"dst": "10.200.0.0/24", "dev": "br-1234"})
    assert netns.subnet_users() == ["10.200.0.0/24 dev br-1234"]


def test_node_states():
    from hpcjobs.sandbox.lifecycle import _healthy_state

    for s in ("idle", "mixed", "allocated", "completing", "idle+", "IDLE"):
        assert _healthy_state(s), s
    for s in ("idle*", "down", "down*", "drained", "inval", "unknown", "allocated*", "fail"):
        assert not _healthy_state(s), s


def test_version_parse(monkeypatch):
    outputs = {"slurm-wlm 22.05.8": (22, 5), "slurm 24.11.5": (24, 11)}
    for out, want in outputs.items():
        monkeypatch.setattr(config.subprocess, "run",
                            lambda *a, out=out, **k: subprocess.CompletedProcess(a, 0, out, ""))
        assert config.slurm_version() == want


def test_no_version_branches_outside_version_swaps():
    """Version differences live in one place (config.version_swaps)."""
    src = (ROOT / "hpcjobs" / "sandbox").glob("*.py")
    hits = [p.name for p in src if re.search(r"version\s*>=|version\s*<", p.read_text())]
    assert hits == ["config.py"]


def test_docs_list_every_swap():
    doc = (ROOT / "docs" / "sandbox.md").read_text()
    table = doc.split("## What is swapped, and why", 1)[1].split("## Slurm versions", 1)[0]
    other = {"node_addr": "NodeAddr", "gpu_file": "File", "cgroup_plugin": "CgroupPlugin"}
    for field in config.swaps(LAY, (24, 11)):
        key = FIELD_KEYS.get(field) or other[field]
        assert f"`{key}" in table or f" `{key}`" in table, f"docs/sandbox.md does not list {key}"
    for value in ("proctrack/linuxproc", "task/none", "config_overrides", "/dev/null", "disabled"):
        assert value in table


@pytest.mark.skipif(not shutil.which("scontrol"), reason="Slurm's client is not installed")
def test_installed_slurm_parses_the_shipped_slurm_conf(tmp_path):
    """Slurm's own parser reads every key (a misspelt key is fatal: "unrecognized key")."""
    env = {**os.environ, "SLURM_CONF": str(CONF_D / "slurm.conf")}
    p = subprocess.run(["scontrol", "show", "hostnames", "pve[1-3]"], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 0 and p.stdout.split() == ["pve1", "pve2", "pve3"], p.stderr
    bad = tmp_path / "slurm.conf"
    bad.write_text((CONF_D / "slurm.conf").read_text().replace("MinJobAge=", "MinJobAg="))
    p = subprocess.run(["scontrol", "show", "hostnames", "pve1"], capture_output=True, text=True,
                       env={**os.environ, "SLURM_CONF": str(bad)})
    assert p.returncode != 0 and "MinJobAg" in p.stderr
