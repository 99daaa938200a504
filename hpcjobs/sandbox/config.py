"""What the sandbox changes relative to the repository's slurm.conf.d, and nothing else.

The sandbox's files come from the same generator (:mod:`hpcjobs.slurmconf`) as
``slurm.conf.d/``. Two inputs differ:

1. the **profile**: the built-in one with only the host side swapped (:data:`PROFILE_SWAPS`):
   node names, addresses, controller, cluster name and the network the jobs see. Node hardware,
   GPU model, partition and defaults are the built-in profile's;
2. the **site**: ``slurmconf.Site()`` with the fields in :func:`swaps` replaced, each with its
   reason. docs/sandbox.md lists the same swaps; tests/unit/test_slurmconf.py pins the list.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass

from hpcjobs.cluster import Cluster, builtin, parse_profile
from hpcjobs.sandbox.layout import Layout
from hpcjobs.slurmconf import Site

SUBNET = "10.200.0.0/24"
PREFIX = "10.200.0."
BRIDGE_ADDRESS = "10.200.0.100"  # the root namespace's address on the bridge
CONTROLLER = "slurmctl"
CONTROLLER_ADDRESS = "10.200.0.254"
INTERFACE = "sbx0"  # the veth end inside every namespace: what jobs see as their network
RATE_GBPS = 10.0  # what a veth reports in /sys/class/net/*/speed (10000 Mb/s): nominal
MAX_NODES = 99  # node K is 10.200.0.K, below the bridge's .100
DEFAULT_NODES = 3

# Profile keys the sandbox replaces (everything else is copied from the built-in profile).
PROFILE_SWAPS = {
    "name": "sandbox",
    "nodes.names / nodes.addresses": "node1..nodeN / 10.200.0.1..N",
    "slurm.controller / controller_address": f"{CONTROLLER} / {CONTROLLER_ADDRESS}",
    "fabric": f"ethernet on {INTERFACE} (the veth inside each namespace), {RATE_GBPS:g} Gb/s",
    "nodes.gpu.model": "marked fake (gres.conf File=/dev/null)",
}


@dataclass(frozen=True)
class Swap:
    value: object
    why: str


def swaps(lay: Layout, version: tuple[int, int], accounting: bool = False) -> dict[str, Swap]:
    """The :class:`~hpcjobs.slurmconf.Site` fields the sandbox replaces, with the reason
    (``accounting``: ``up --accounting``, two more)."""
    st = str(lay.root)
    one_fs = "all daemons share one filesystem: per-daemon paths under the state dir"
    out = {
        # --- addresses: node names resolve only inside the namespaces (their /etc/hosts), so
        # clients in the root namespace must be told the addresses.
        "node_addr": Swap(True, "node names resolve only inside the namespaces"),
        # --- paths
        "state_save_location": Swap(f"{st}/ctld", one_fs),
        "slurmd_spool_dir": Swap(f"{st}/spool/%n", one_fs),
        "slurmctld_pid_file": Swap(f"{st}/pid/slurmctld.pid", one_fs),
        "slurmd_pid_file": Swap(f"{st}/pid/slurmd-%n.pid", one_fs),
        "slurmctld_log_file": Swap(f"{st}/log/slurmctld.log", one_fs),
        "slurmd_log_file": Swap(f"{st}/log/slurmd-%n.log", one_fs),
        "job_comp_loc": Swap(f"{st}/log/jobcomp.txt", one_fs),
        "tmp_fs": Swap(f"{st}/tmp/%n", "PMIx creates spmix_appdir_<uid>_<job>.<step> there: "
                                       "a /tmp shared by all nodes collides (File exists)"),
        # --- plugins that cannot run once per namespace on one host
        "proctrack_type": Swap("proctrack/linuxproc",
                               "cgroups are per host, not per namespace: every slurmd would "
                               "share one cgroup tree"),
        "task_plugin": Swap("task/none", "same; and task/affinity would bind to CPUs the "
                                         "host does not have"),
        # --- hardware the host does not have
        "gpu_file": Swap("/dev/null", "no GPUs: a fake device file per node (one GPU each)"),
        "slurmd_parameters": Swap("config_overrides",
                                  "nodes promise the real cluster's CPUs and memory; slurmd "
                                  "must not compare them with this host's"),
        # --- timings: a test must not wait minutes for a dead node or a delayed start
        "slurmctld_timeout": Swap(10, "fast failure detection for tests"),
        "slurmd_timeout": Swap(10, "fast failure detection for tests"),
        "message_timeout": Swap(5, "fast failure detection for tests"),
        "kill_wait": Swap(2, "fast cancel for tests"),
        "scheduler_parameters": Swap("batch_sched_delay=0,sched_min_interval=0",
                                     "start batch jobs at once"),
        # --- job ids: `down` removes StateSaveLocation, so ids would restart at 1 with every
        # `up`, and run records (linked by job id) of earlier sandboxes would collide.
        "first_job_id": Swap(first_job_id(), "job ids must not restart at 1 on every `up`: "
                                             "run records are linked by job id"),
    }
    out.update(version_swaps(version))
    if accounting:
        why = "`up --accounting`: slurmdbd (and MariaDB) in the controller's namespace"
        out["accounting_storage_type"] = Swap("accounting_storage/slurmdbd", why)
        out["accounting_storage_host"] = Swap(
            CONTROLLER_ADDRESS, "clients (sacct, sacctmgr) in the root namespace cannot resolve "
                                "the controller's name")
    return out


def first_job_id(now: float | None = None) -> int:
    """Ten ids per second of the clock, below Slurm's MaxJobId (67,043,328); wraps in 69 days."""
    import time

    return int((now if now is not None else time.time()) % 6_000_000) * 10 + 1000


def version_swaps(version: tuple[int, int]) -> dict[str, Swap]:
    """The only place where the Slurm version matters (Debian 12: 22.05; Debian 13: 24.11).

    Before 24.05 there is no way to switch the cgroup plugin off: 22.05 loads it but, with
    proctrack/linuxproc and task/none, never puts a job in a cgroup (checked on Debian 12).
    ``CgroupPlugin=disabled`` came with 24.05 (SchedMD commit 369e137db4); 24.x slurmd sets
    up its own cgroup scope at start (with systemd or IgnoreSystemd), which N slurmds on one
    host would share, so the sandbox turns it off there. Everything else in the sandbox's
    files reads the same on 24.11 (task/none and accounting_storage/none are taken as "unset"
    there). Checked on Debian 13 (24.11.5) with scripts/trixie-check.
    """
    if version >= (24, 5):
        return {"cgroup_plugin": Swap("disabled", "slurmd >= 24.05 sets up cgroups at start; "
                                                  "one host cannot give each slurmd its own")}
    return {}


def site(lay: Layout, version: tuple[int, int], accounting: bool = False) -> Site:
    return Site().replace(**{k: s.value for k, s in swaps(lay, version, accounting).items()})


def node_names(n: int) -> list[str]:
    return [f"node{k}" for k in range(1, n + 1)]


def profile_toml(n: int, base: Cluster | None = None) -> str:
    """The sandbox's cluster profile: the built-in one with the host side swapped."""
    base = base or builtin()
    part = base.partition(None)
    hw = base.node(part.nodes[0])
    q = json.dumps  # a JSON string is a valid TOML basic string for these values
    lines = [
        "# The running hpcjobs sandbox (written by `hpcjobs sandbox up`, removed by `down`).",
        "# The built-in profile with only names, addresses and the network swapped.",
        f"name = {q(PROFILE_SWAPS['name'])}",
        "sandbox = true",
        "",
        "[slurm]",
        f"controller = {q(CONTROLLER)}",
        f"controller_address = {q(CONTROLLER_ADDRESS)}",
        "",
        "[fabric]",
        'kind = "ethernet"',
        f"interface = {q(INTERFACE)}",
        f"port = {base.fabric.port}",
        f"rate_gbps = {RATE_GBPS}",
        "",
        "[defaults]",
        f"partition = {q(part.name)}",
        f"time = {q(base.defaults.time)}",
        "",
        "[[partitions]]",
        f"name = {q(part.name)}",
        f'nodes = "node[1-{n}]"',
        "default = true",
    ]
    if part.default_time:
        lines.append(f"default_time = {q(part.default_time)}")
    if part.max_time:
        lines.append(f"max_time = {q(part.max_time)}")
    lines += [
        "",
        "[[nodes]]",
        f'names = "node[1-{n}]"',
        f'addresses = "{PREFIX}[1-{n}]"',
        f"cpus = {hw.cpus}",
        f"memory_mb = {hw.memory_mb}",
    ]
    if hw.gpu:
        g = hw.gpu
        lines += [
            "",
            "[nodes.gpu]",
            f"type = {q(g.type)}",
            f"model = {q((g.model or g.type) + ' (fake)')}",
            "count = 1",
            f"memory_gb = {g.memory_gb:g}",
            f"compute_capability = {q(g.compute_capability)}",
        ]
    return "\n".join(lines) + "\n"


def profile(n: int) -> Cluster:
    import tomllib

    return parse_profile(tomllib.loads(profile_toml(n)), "sandbox")


def generate(lay: Layout, n: int, version: tuple[int, int],
             accounting: bool = False) -> dict[str, str]:
    """The sandbox's slurm.conf, gres.conf and cgroup.conf."""
    from hpcjobs import slurmconf

    return slurmconf.generate(profile(n), site(lay, version, accounting))


def hosts_file(n: int) -> str:
    """The /etc/hosts every daemon (and so every job) sees; ::ffff: lines keep reverse lookups
    of IPv4-mapped addresses (torch's TCPStore) quiet."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{CONTROLLER_ADDRESS}\t{CONTROLLER}"]
    lines += [f"{PREFIX}{k}\t{name}" for k, name in enumerate(node_names(n), 1)]
    lines += [f"::ffff:{CONTROLLER_ADDRESS}\t{CONTROLLER}"]
    lines += [f"::ffff:{PREFIX}{k}\t{name}" for k, name in enumerate(node_names(n), 1)]
    return "\n".join(lines) + "\n"


def slurm_version() -> tuple[int, int]:
    """(major, minor) of the installed slurmd, e.g. (22, 5)."""
    out = subprocess.run(["slurmd", "-V"], capture_output=True, text=True).stdout
    m = re.search(r"(\d+)\.(\d+)", out)
    if not m:
        raise RuntimeError(f"cannot read the Slurm version from `slurmd -V`: {out.strip()!r}")
    return int(m.group(1)), int(m.group(2))
