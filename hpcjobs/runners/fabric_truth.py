"""Fabric truth: did NCCL get the fabric the cluster profile promises, and if not, why?

The launcher predicts the transport from sysfs (hpcjobs.launch.fabric); this judges what NCCL's
own log says it chose (hpcjobs.runners.nccllog) against the profile. When the profile says
InfiniBand/RoCE and NCCL went over sockets between nodes, the likely cause is named from
evidence, in this order (the first that holds is the one to fix first):

1. the profile's port is not ACTIVE or the node has no RDMA device (sysfs; hpcjobs.launch then
   sets NCCL_IB_DISABLE=1 itself);
2. ``NCCL_IB_DISABLE=1`` in the job's environment although the port is ACTIVE;
3. ``NCCL_IB_HCA`` names a device this node does not have (NCCL matches names, nccl
   src/transport/net_ib: no match, no device);
4. no ``libibverbs`` for the process (NCCL: "Failed to open libibverbs.so[.1]"; a container
   without the RDMA user space);
5. NCCL found no IB device though sysfs has one: ``/dev/infiniband`` not visible (a container
   without the device files).

IB without GPUDirect RDMA (``NET/IB/0``, not ``/GDRDMA``) on GPU nodes is a warning with its
cause: nvidia-peermem not loaded (nccl src/transport/net_ib/gdr.cc), or the GPU-NIC path farther
than PXB (``NCCL_NET_GDR_LEVEL`` default; nccl src/graph/paths.cc).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from hpcjobs.launch.fabric import ACTIVE, Port
from hpcjobs.outcome import FAIL, PASS, SKIP, WARN
from hpcjobs.runners.checks import GDR_PATHS, Check, describe
from hpcjobs.runners.nccllog import NcclLog, Peer, summary

NAME = "fabric-truth"


def hca_devices(value: str) -> list[str]:
    """The device names an ``NCCL_IB_HCA`` value asks for (``=`` exact, ``^`` excludes:
    an exclusion list names what is not used, so none)."""
    v = value.lstrip("=")
    if v.startswith("^"):
        return []
    return [item.split(":")[0] for item in v.split(",") if item]


def ibverbs_loadable() -> tuple[bool, str]:
    """Can this process load libibverbs, as NCCL does (dlopen libibverbs.so, then .so.1)?"""
    import ctypes

    errors = []
    for name in ("libibverbs.so", "libibverbs.so.1"):
        try:
            ctypes.CDLL(name)
            return True, f"{name} loads"
        except OSError as e:
            errors.append(str(e))
    return False, "; ".join(errors)


def judge(peers: list[Peer], log: NcclLog | None, *, fabric, env: Mapping[str, str],
          ports: list[Port], has_gpu: bool, gdr_module: str = "none",
          gpu_nic_path: str | None = None, ibverbs: tuple[bool, str] | None = None,
          dev_infiniband: bool | None = None) -> Check:
    """One check for the transport NCCL chose. ``fabric``: the profile's (kind, device, port);
    ``gdr_module``: hpcjobs.launch.fabric.gpudirect's answer; ``gpu_nic_path``: the worst
    GPU-NIC path (checks.worst_path), None when unknown."""
    if log is None or not log.lines:
        return Check(NAME, SKIP, "no NCCL log: this job does not use NCCL (gloo or MPI)")
    what = summary(peers)
    inter = [p for p in peers if p.inter_node]
    evidence = [f"NCCL {log.version or '?'}: {what}"] + [
        f"rank {p.rank} -> {p.peer} ({p.host or '?'}): {', '.join(p.via)}" for p in inter[:4]]
    if not inter:
        return Check(NAME, SKIP if not peers else PASS, f"no connection crossed nodes ({what})",
                     evidence + log.evidence(r"Using network|NET/"))
    if fabric.kind not in ("infiniband", "roce"):
        return Check(NAME, PASS, f"{what}, as expected on a {fabric.kind} fabric", evidence)
    socket = [p for p in inter if "NET/Socket" in p.transport]
    if socket:
        summary_, cause, fix = _socket_cause(log, fabric, env, ports, ibverbs, dev_infiniband)
        return Check(NAME, FAIL, f"NCCL chose TCP sockets between nodes although the profile "
                     f"says {fabric.kind}: {summary_}", evidence + cause, fix)
    no_gdr = [p for p in inter if "/GDRDMA" not in p.transport and p.transport.startswith("NET/")]
    if no_gdr and has_gpu:
        cause, fix = _gdr_cause(log, gdr_module, gpu_nic_path)
        return Check(NAME, WARN, f"{what}: InfiniBand without GPUDirect RDMA, so every transfer "
                     "is staged through host memory", evidence + cause, fix)
    return Check(NAME, PASS, what, evidence)


def _socket_cause(log: NcclLog, fabric, env: Mapping[str, str], ports: list[Port],
                  ibverbs: tuple[bool, str] | None,
                  dev_infiniband: bool | None) -> tuple[str, list[str], str]:
    want = next((p for p in ports if p.dev == fabric.device and p.port == fabric.port), None)
    nccl_says = log.evidence(r"NET/IB|libibverbs|Using network|NET plugin")
    if not ports:
        return ("this node has no RDMA device", ["/sys/class/infiniband: no devices", *nccl_says],
                "load the HCA driver (modprobe mlx5_ib) and check `ibstat`; in a container, the "
                "host's /sys/class/infiniband and /dev/infiniband must be visible")
    if want is None or want.state != ACTIVE:
        shown = describe(want) if want else f"{fabric.device}:{fabric.port} not present"
        return (f"the profile's port {fabric.device}:{fabric.port} is "
                f"{want.state if want else 'missing'}", [shown, *nccl_says],
                "bring the port to ACTIVE (cable, switch port, subnet manager: `ibstat`); "
                "hpcjobs.launch sets NCCL_IB_DISABLE=1 while no port is ACTIVE")
    if env.get("NCCL_IB_DISABLE", "").strip() == "1":
        return ("NCCL_IB_DISABLE=1 is set in the job's environment",
                [f"NCCL_IB_DISABLE={env['NCCL_IB_DISABLE']}", describe(want)],
                "unset NCCL_IB_DISABLE (a stale export in ~/.bashrc, a module, or --env)")
    if "NCCL_IB_HCA" in env:
        names = {p.dev for p in ports}
        missing = [d for d in hca_devices(env["NCCL_IB_HCA"]) if d not in names]
        if missing:
            return (f"NCCL_IB_HCA={env['NCCL_IB_HCA']} names {', '.join(missing)}, which this "
                    "node does not have", [f"RDMA devices: {', '.join(sorted(names))}",
                                           *nccl_says],
                    "unset NCCL_IB_HCA (hpcjobs.launch sets it from sysfs) or name a real device")
    if log.ibverbs_missing or (ibverbs is not None and not ibverbs[0]):
        seen = ["NCCL: Failed to open libibverbs.so[.1]"] if log.ibverbs_missing else []
        if ibverbs is not None and not ibverbs[0]:
            seen.append(f"this process: {ibverbs[1][:200]}")
        return ("no libibverbs visible to the process", seen,
                "install the RDMA user space where the job runs (Debian: libibverbs1 "
                "ibverbs-providers; in a container image too, or bind it in) and make "
                "/dev/infiniband visible")
    if log.ib_no_device or "IB" in log.net_failed:
        seen = [*nccl_says, describe(want)]
        if dev_infiniband is False:
            seen.append("/dev/infiniband: missing in this process's view")
        return ("NCCL found no IB device although sysfs shows " + want.name, seen,
                "make /dev/infiniband visible to the job (containers: --device /dev/infiniband "
                "or the runtime's RDMA option) and check `ibv_devinfo` inside the job")
    return ("no cause found in the evidence", [describe(want), *nccl_says],
            "rerun with --nccl-debug and read the NET/IB lines; `srun -N1 hpcjobs doctor`")


def _gdr_cause(log: NcclLog, gdr_module: str, path: str | None) -> tuple[list[str], str]:
    if gdr_module == "none":
        return (["no /sys/module/nvidia_peermem, no /sys/kernel/mm/memory_peers/nv_mem(_nc)",
                 *log.gdr_disabled[:2]],
                "modprobe nvidia-peermem (and persist it in /etc/modules-load.d/)")
    if path and path not in GDR_PATHS:
        return ([f"GPU-NIC path {path} (NCCL_NET_GDR_LEVEL defaults to PXB)",
                 *log.gdr_disabled[:2]],
                "put the GPU and the NIC under one PCIe switch; on a single-socket host "
                "NCCL_NET_GDR_LEVEL=PHB may be worth a bench-allreduce run")
    return (log.gdr_disabled[:2] or ["NCCL printed no reason"],
            "read NCCL's 'GPU Direct RDMA Disabled' lines (--nccl-debug)")


def dev_infiniband_visible() -> bool:
    return os.path.isdir("/dev/infiniband")
