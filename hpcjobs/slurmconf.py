"""slurm.conf, gres.conf and cgroup.conf generated from a cluster profile.

One source of truth: the profile says what the cluster has (nodes, CPUs, memory, GPUs,
partitions, controller); :class:`Site` holds every other choice (plugins, paths, timeouts).
The repository's ``slurm.conf.d/`` is ``generate(builtin profile, Site())`` (a unit test checks
the committed files are byte for byte this text), and the sandbox is
``generate(sandbox profile, sandbox site)`` where the sandbox site is ``Site()`` with a short,
explicit list of fields replaced (see :mod:`hpcjobs.sandbox.config`).

``hpcjobs cluster slurm-conf [--out DIR]`` prints or writes the files for the profile in use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from hpcjobs.cluster import Cluster, Node, Partition

FILES = ("slurm.conf", "gres.conf", "cgroup.conf")


@dataclass(frozen=True)
class Site:
    """Everything in the files that is a choice rather than a fact of the profile.

    The defaults are the production values for a small GPU cluster on Debian's Slurm packages.
    """

    # Where the daemons keep state, pid files and logs (Debian's package layout).
    state_save_location: str = "/var/lib/slurm/slurmctld"
    slurmd_spool_dir: str = "/var/lib/slurm/slurmd"
    slurmctld_pid_file: str = "/run/slurmctld.pid"
    slurmd_pid_file: str = "/run/slurmd.pid"
    slurmctld_log_file: str = "/var/log/slurm/slurmctld.log"
    slurmd_log_file: str = "/var/log/slurm/slurmd.log"
    job_comp_loc: str = "/var/log/slurm/jobcomp.log"
    tmp_fs: str = "/tmp"
    # Process tracking and task containment through cgroups: a job's processes are found and
    # killed reliably, and it only sees the CPUs, memory and GPUs it was given.
    proctrack_type: str = "proctrack/cgroup"
    task_plugin: str = "task/cgroup,task/affinity"
    cgroup_plugin: str = "autodetect"
    # GPU device files of a node, "{i}" = index; one file per GPU.
    gpu_file: str = "/dev/nvidia{i}"
    # Empty = slurmd checks the node's real hardware against the NodeName line.
    slurmd_parameters: str = ""
    # Write NodeAddr (the profile's addresses) on the node lines. Off: Slurm resolves the node
    # names (DNS or /etc/hosts), so its own traffic does not depend on the fast network.
    node_addr: bool = False
    # Slurm's defaults, written out so that the values are visible.
    slurmctld_timeout: int = 120
    slurmd_timeout: int = 300
    message_timeout: int = 10
    tcp_timeout: int = 2
    kill_wait: int = 30
    scheduler_parameters: str = ""
    # 0 = not written (Slurm starts at 1 and keeps counting in StateSaveLocation).
    first_job_id: int = 0
    # No slurmdbd by default (see the comment written above AccountingStorageType).
    accounting_storage_type: str = "accounting_storage/none"
    accounting_storage_host: str = ""

    def replace(self, **changes) -> Site:
        return dataclasses.replace(self, **changes)


def _collect(names: list[str]) -> str:
    """A Slurm host list for ``names`` that expands back in the same order."""
    import hostlist  # python-hostlist; its collect_hostlist sorts, so check

    def ok(chunk: list[str]) -> bool:
        return hostlist.expand_hostlist(hostlist.collect_hostlist(chunk)) == chunk

    chunks: list[list[str]] = []
    for name in names:  # greedy: the longest runs that compress without reordering
        if chunks and ok(chunks[-1] + [name]):
            chunks[-1].append(name)
        else:
            chunks.append([name])
    return ",".join(hostlist.collect_hostlist(c) for c in chunks)


def _node_runs(nodes: tuple[Node, ...]) -> list[list[Node]]:
    """Consecutive nodes with the same hardware, to share one NodeName line."""
    runs: list[list[Node]] = []
    for n in nodes:
        if runs and _hw(runs[-1][0]) == _hw(n):
            runs[-1].append(n)
        else:
            runs.append([n])
    return runs


def _hw(n: Node) -> tuple:
    return (n.cpus, n.memory_mb, n.gpu.type if n.gpu else None, n.gpus)


def _node_lines(cluster: Cluster, site: Site) -> list[str]:
    lines = []
    runs = [[n] for n in cluster.nodes] if site.node_addr else _node_runs(cluster.nodes)
    for run in runs:
        n = run[0]
        words = [f"NodeName={_collect([x.name for x in run])}"]
        if site.node_addr and n.address:
            words.append(f"NodeAddr={n.address}")
        words += [f"CPUs={n.cpus}", f"RealMemory={n.memory_mb}"]
        if n.gpu:
            words.append(f"Gres=gpu:{n.gpu.type}:{n.gpu.count}")
        words.append("State=UNKNOWN")
        lines.append(" ".join(words))
    return lines


def _def_mem_per_cpu(cluster: Cluster, p: Partition) -> int:
    nodes = [cluster.node(x) for x in p.nodes]
    return min(n.memory_mb // n.cpus for n in nodes if n)


def _partition_line(cluster: Cluster, p: Partition) -> str:
    words = [f"PartitionName={p.name}", f"Nodes={_collect(list(p.nodes))}",
             f"Default={'YES' if p.default else 'NO'}"]
    if p.default_time:
        words.append(f"DefaultTime={p.default_time}")
    words.append(f"MaxTime={p.max_time or 'INFINITE'}")
    words += [f"DefMemPerCPU={_def_mem_per_cpu(cluster, p)}", "State=UP"]
    return " ".join(words)


def _header(cluster: Cluster, name: str) -> list[str]:
    src = "the built-in profile (hpcjobs/data/default_cluster.toml)" \
        if cluster.source == "built-in" else f"the profile {cluster.source}"
    return [f"# {name} for cluster {cluster.name!r}, generated by `hpcjobs cluster slurm-conf`",
            f"# from {src}.",
            "# Edit the profile and regenerate rather than this file; docs/cluster-setup.md says",
            "# how to install and verify it."]


def slurm_conf(cluster: Cluster, site: Site = Site()) -> str:
    ctl = cluster.slurm.controller
    if cluster.slurm.controller_address:
        ctl += f"({cluster.slurm.controller_address})"
    s = site
    out = _header(cluster, "slurm.conf") + [
        "",
        f"ClusterName={cluster.name}",
        f"SlurmctldHost={ctl}",
        "AuthType=auth/munge",
        "# slurmctld drops to this user; slurmd stays root.",
        "SlurmUser=slurm",
        "SlurmctldPort=6817",
        "SlurmdPort=6818",
        "",
        "# --- where the daemons keep state, pid files and logs",
        f"StateSaveLocation={s.state_save_location}",
        f"SlurmdSpoolDir={s.slurmd_spool_dir}",
        f"SlurmctldPidFile={s.slurmctld_pid_file}",
        f"SlurmdPidFile={s.slurmd_pid_file}",
        f"SlurmctldLogFile={s.slurmctld_log_file}",
        f"SlurmdLogFile={s.slurmd_log_file}",
        "# Per-node scratch; PMIx puts its per-step directories here.",
        f"TmpFS={s.tmp_fs}",
        "",
        "# --- processes, tasks and MPI",
        "# cgroups track every process of a job and confine it to its CPUs, memory and GPUs",
        "# (cgroup.conf ConstrainDevices=yes hides the GPUs a job was not given).",
        f"ProctrackType={s.proctrack_type}",
        f"TaskPlugin={s.task_plugin}",
        "# Open MPI and PMIx-aware programs start under plain `srun` (MPICH: srun --mpi=pmi2).",
        "MpiDefault=pmix",
        "# Jobs inherit the submitting shell's limits, except the locked-memory limit, which stays",
        "# slurmd's (LimitMEMLOCK=infinity): RDMA and pinned CUDA memory need it unlimited.",
        "PropagateResourceLimitsExcept=MEMLOCK",
    ]
    if s.slurmd_parameters:
        out.append(f"SlurmdParameters={s.slurmd_parameters}")
    out += [
        "",
        "# --- scheduling",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "# Choice: cores and memory are the consumable resources, so several jobs can share a",
        "# node; CR_Core alone would let one job take all of a node's memory.",
        "SelectTypeParameters=CR_Core_Memory",
        "GresTypes=gpu",
    ]
    if s.scheduler_parameters:
        out.append(f"SchedulerParameters={s.scheduler_parameters}")
    out += [
        "# Choice: a node that went DOWN only because it stopped answering comes back by itself",
        "# when its slurmd registers again (2 would also undo an admin's DOWN).",
        "ReturnToService=1",
        "# Choice: without accounting, finished jobs stay visible to scontrol (and to",
        "# `hpcjobs status`) for this many seconds (default 300).",
        "MinJobAge=600",
        "",
        "# --- timeouts (Slurm's defaults, written out)",
        f"SlurmctldTimeout={s.slurmctld_timeout}",
        f"SlurmdTimeout={s.slurmd_timeout}",
        f"MessageTimeout={s.message_timeout}",
        f"TCPTimeout={s.tcp_timeout}",
        f"KillWait={s.kill_wait}",
        "InactiveLimit=0",
        *([f"FirstJobId={s.first_job_id}"] if s.first_job_id else []),
        "",
        "# --- accounting",
        "# Choice: no slurmdbd/MariaDB on a three-node cluster; each finished job is one line in",
        "# JobCompLoc (state, exit code, nodes). For sacct and fair share, run slurmdbd and set",
        "# AccountingStorageType=accounting_storage/slurmdbd.",
        f"AccountingStorageType={s.accounting_storage_type}",
    ]
    if s.accounting_storage_host:
        out.append(f"AccountingStorageHost={s.accounting_storage_host}")
    out += [
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={s.job_comp_loc}",
        "JobAcctGatherType=jobacct_gather/none",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "",
        "# --- nodes: CPUs and RealMemory as `slurmd -C` prints them on each node (the profile's",
        "# cpus and memory_mb); a node that has less than this line promises is set INVALID.",
        "# The GRES type must be the one gres.conf gives (check with `slurmd -G`).",
        *_node_lines(cluster, site),
        "",
        "# --- partitions. DefMemPerCPU = RealMemory / CPUs: a job that asks for no memory gets",
        "# its share per CPU instead of the whole node.",
        *(_partition_line(cluster, p) for p in cluster.partitions),
    ]
    return "\n".join(out) + "\n"


def _gpu_files(site: Site, n: Node) -> str:
    files = [site.gpu_file.format(i=i) for i in range(n.gpus)]
    if len(set(files)) != len(files):
        raise ValueError(f"gpu_file {site.gpu_file!r} gives the same file for {n.gpus} GPUs of "
                         f"{n.name}: Slurm counts one GPU per file")
    if n.gpus > 1 and "{i}" in site.gpu_file:
        import hostlist

        files = [hostlist.collect_hostlist(files)]
    return ",".join(files)


def gres_conf(cluster: Cluster, site: Site = Site()) -> str:
    out = _header(cluster, "gres.conf") + [
        "",
        "# Devices are listed, not detected: Debian's Slurm is built without NVML (there is no",
        "# gpu_nvml plugin), so AutoDetect=nvml would fail. `slurmd -G` shows what slurmd reads.",
        "AutoDetect=off",
    ]
    runs: list[tuple[list[str], str]] = []
    for n in cluster.nodes:
        if not n.gpu:
            continue
        line = f"Name=gpu Type={n.gpu.type} File={_gpu_files(site, n)}"
        if runs and runs[-1][1] == line:
            runs[-1][0].append(n.name)
        else:
            runs.append(([n.name], line))
    out += [f"NodeName={_collect(names)} {line}" for names, line in runs]
    return "\n".join(out) + "\n"


def cgroup_conf(cluster: Cluster, site: Site = Site()) -> str:
    out = _header(cluster, "cgroup.conf") + [
        "",
        "# autodetect picks cgroup v1 or v2 from what the node mounts.",
        f"CgroupPlugin={site.cgroup_plugin}",
        "# A job sees only the cores, memory and GPUs (/dev/nvidiaN) it was given: with",
        "# ConstrainDevices a job that asked for no GPU cannot touch one.",
        "ConstrainCores=yes",
        "ConstrainRAMSpace=yes",
        "ConstrainDevices=yes",
    ]
    return "\n".join(out) + "\n"


def generate(cluster: Cluster, site: Site = Site()) -> dict[str, str]:
    """The three files' text, by file name."""
    return {"slurm.conf": slurm_conf(cluster, site), "gres.conf": gres_conf(cluster, site),
            "cgroup.conf": cgroup_conf(cluster, site)}


def write(files: dict[str, str], out: str | Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        p = out / name
        tmp = p.with_name(f".{name}.tmp")
        tmp.write_text(text)
        tmp.replace(p)
        paths.append(p)
    return paths
