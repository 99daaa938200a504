"""``hpcjobs doctor``: is this node ready for fast distributed jobs? Each check says why.

A node can be "up" in Slurm and still run every NCCL job over TCP sockets (5x slower, silently)
because an InfiniBand port is down, nvidia-peermem is not loaded or a stale ``NCCL_*`` variable
is exported. Each check reads what the node really has (sysfs, a few commands), compares it with
the cluster profile and the upstream rules each check cites (NCCL's source, the kernel's sysfs ABI,
the Slurm FAQ), and reports pass / warn / fail (or skip, when it does not apply)
with the evidence it saw and the fix.

Modules: ``host`` (what the checks read: :class:`Host`), ``parse`` (command output), ``result``
(:class:`Check`, :class:`Report`), ``context`` (what checks share), ``fabric`` / ``node`` /
``environment`` (the checks), ``run`` (:func:`diagnose`); the command is hpcjobs/cli/doctor.py.
"""

from hpcjobs.doctor.context import Context, identify, local_addresses
from hpcjobs.doctor.environment import check_environment
from hpcjobs.doctor.fabric import (NO_RDMA, check_gdr, check_gpu_nic, check_interface, check_rdma,
                                   fabric_verdict, gdr_sources, interface_state,
                                   nvidia_driver_loaded, rdma_ports)
from hpcjobs.doctor.host import CmdResult, Host, Runner, run_command, sysfs_root
from hpcjobs.doctor.node import check_memlock, check_munge, check_slurm_node, check_slurmctld
from hpcjobs.doctor.parse import (PATH_KINDS, Topo, parse_ip_addr, parse_ip_link, parse_topo,
                                  parse_ulimit)
from hpcjobs.doctor.result import FAIL, PASS, SKIP, WARN, Check, Report
from hpcjobs.doctor.run import CHECK_NAMES, diagnose

__all__ = [
    "CHECK_NAMES", "FAIL", "NO_RDMA", "PASS", "PATH_KINDS", "SKIP", "WARN", "Check", "CmdResult",
    "Context", "Host", "Report", "Runner", "Topo", "check_environment", "check_gdr",
    "check_gpu_nic", "check_interface", "check_memlock", "check_munge", "check_rdma",
    "check_slurm_node", "check_slurmctld", "diagnose", "fabric_verdict", "gdr_sources", "identify",
    "interface_state", "local_addresses", "nvidia_driver_loaded", "parse_ip_addr",
    "parse_ip_link", "parse_topo", "parse_ulimit", "rdma_ports", "run_command", "sysfs_root",
]
