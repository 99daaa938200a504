"""``hpcjobs doctor``: is this node ready for fast distributed jobs? Each check says why.

A node can be "up" in Slurm and still run every NCCL job over TCP sockets (5x slower, silently)
because an InfiniBand port is down, nvidia-peermem is not loaded or a stale ``NCCL_*`` variable
is exported. Each check reads what the node really has (sysfs, a few commands), compares it with
the cluster profile and FACTS.md, and reports pass / warn / fail (or skip, when it does not apply)
with the evidence it saw and the fix.

Modules: ``host`` (what the checks read: :class:`Host`), ``parse`` (command output), ``result``
(:class:`Check`, :class:`Report`), ``context`` (what checks share), ``fabric`` / ``node`` /
``environment`` (the checks), ``run`` (:func:`diagnose`), ``cli`` (:func:`doctor_cmd`).

``hpcjobs --help`` imports this package to list the command. The names below are therefore
loaded on first use (PEP 562 module ``__getattr__``): listing the command imports ``cli`` (click
only), not the checks.
"""

from __future__ import annotations

import importlib

# public name -> the module that holds it
_EXPORTS = {
    **dict.fromkeys(("PASS", "WARN", "FAIL", "SKIP", "Check", "Report"), "result"),
    **dict.fromkeys(("CmdResult", "Runner", "run_command", "sysfs_root", "Host"), "host"),
    **dict.fromkeys(("parse_ip_addr", "parse_ip_link", "parse_topo", "parse_ulimit", "Topo",
                     "PATH_KINDS"), "parse"),
    **dict.fromkeys(("Context", "identify", "local_addresses"), "context"),
    **dict.fromkeys(("NO_RDMA", "rdma_ports", "gdr_sources", "nvidia_driver_loaded", "check_rdma",
                     "check_interface", "interface_state", "check_gdr", "check_gpu_nic",
                     "fabric_verdict"), "fabric"),
    **dict.fromkeys(("check_memlock", "check_munge", "check_slurmctld", "check_slurm_node"), "node"),
    "check_environment": "environment",
    **dict.fromkeys(("CHECK_NAMES", "diagnose"), "run"),
    "doctor_cmd": "cli",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 (built from the one table above)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
