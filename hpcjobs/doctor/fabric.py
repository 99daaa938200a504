"""Fabric checks: RDMA port, IPoIB / fast-network interface, GPUDirect RDMA, GPU-NIC PCIe path,
and the one-line fabric verdict.

Ports, GIDs and GPUDirect come from hpcjobs.launch.fabric, the reader the launcher uses for the
NCCL environment, so that the doctor and the launcher never disagree about what a port is; the
port and GPU-NIC rules are hpcjobs.runners.checks', which the preflight step uses too.
"""

from __future__ import annotations

from hpcjobs.doctor.context import Context
from hpcjobs.doctor.host import Host
from hpcjobs.doctor.parse import parse_ip_link
from hpcjobs.doctor.result import FAIL, PASS, SKIP, WARN, Check
from hpcjobs.launch import fabric as launch_fabric
from hpcjobs.launch.fabric import Port
# The port and GPU-NIC rules are the job side's, shared with the preflight step.
from hpcjobs.runners.checks import (NO_RDMA, describe, gpu_nic_check,  # noqa: F401
                                    rate_gbps, rdma_check)


def rdma_ports(host: Host) -> list[Port]:
    """This host's RDMA ports, read by the launcher's own reader (phys_state and rate included)."""
    return launch_fabric.rdma_ports(str(host.root))


def gdr_sources(host: Host) -> list[str]:
    """The file NCCL finds before it uses GPUDirect RDMA (nccl net_ib/gdr.cc), with its text."""
    name, _why = launch_fabric.gpudirect(str(host.root))
    rel = dict(launch_fabric.GDR_MODULES).get(name)
    return [f"/{rel} ({host.read(rel[4:]) or 'present'})"] if rel else []


def nvidia_driver_loaded(host: Host) -> bool:
    return host.exists("module/nvidia")


def check_rdma(ctx: Context) -> Check:
    return rdma_check(ctx.ports, ctx.fabric)


def check_interface(ctx: Context) -> Check:
    f, host = ctx.fabric, ctx.host
    ifname = f.interface
    label = "IPoIB interface" if f.kind == "infiniband" else "fast-network interface"
    if not ifname:
        return Check("interface", SKIP, "the profile names no fast-network interface",
                     fix="set [fabric] interface (e.g. \"ib0\") in the profile")
    if ctx.node is None:
        return Check("interface", SKIP, f"{host.hostname} is not a node of cluster "
                     f"{ctx.cluster.name!r}: nothing to compare",
                     [f"profile nodes: {', '.join(n.name for n in ctx.cluster.nodes)}"],
                     "run it on a compute node: srun -N1 hpcjobs doctor")
    link = interface_state(host, ifname)
    if link is None:
        present = ", ".join(host.listdir("class/net")) or "none"
        return Check("interface", FAIL, f"{label} {ifname} does not exist",
                     [f"/sys/class/net: {present}", f"ip -o link show {ifname}: no such device"],
                     "modprobe ib_ipoib and configure the interface" if f.kind == "infiniband"
                     else "fix [fabric] interface in the profile")
    oper, typ, source = link
    evidence = [f"{source}: operstate {oper}, type {typ}"]
    on_if = [a for i, a in ctx.addresses if i == ifname]
    evidence.append(f"{ifname} addresses ({ctx.addr_source}): {', '.join(on_if) or 'none'}")
    want = ctx.node.address
    if oper not in ("up", "unknown"):
        return Check("interface", FAIL, f"{label} {ifname} is {oper}", evidence,
                     f"ip link set {ifname} up (IPoIB also needs an ACTIVE port)")
    if want and want not in on_if:
        elsewhere = [i for i, a in ctx.addresses if a == want]
        problem = (f"{want} is on {elsewhere[0]}, not {ifname}" if elsewhere
                   else f"the profile's address {want} is not on {ifname}")
        return Check("interface", FAIL, f"{problem}: rendezvous (MASTER_ADDR) would not use the "
                     "fast network", evidence,
                     f"configure {want} on {ifname}, or fix the node's address in the profile")
    if f.kind == "infiniband" and typ not in ("32", "infiniband", "?"):
        return Check("interface", WARN, f"{ifname} is up with {want} but is not IPoIB "
                     f"(type {typ}; IPoIB is 32, link/infiniband)", evidence,
                     "check [fabric] interface in the profile")
    status = PASS if oper == "up" else WARN
    return Check("interface", status, f"{label} {ifname} {oper} with {want or ', '.join(on_if)}"
                 + ("" if oper == "up" else " (the driver reports no operstate)"), evidence)


def interface_state(host: Host, ifname: str) -> tuple[str, str, str] | None:
    """(operstate, type, where it was read) of an interface, or None if it does not exist.

    sysfs first. In a network namespace that did not remount /sys (the sandbox's nodes, some
    containers) /sys/class/net shows another namespace's interfaces, so ask netlink via
    ``ip -o link show`` when sysfs has no such interface.
    """
    base = f"class/net/{ifname}"
    if host.exists(base):
        return (host.read(f"{base}/operstate") or "?", host.read(f"{base}/type") or "?",
                f"/sys/class/net/{ifname}")
    r = host.run(["ip", "-o", "link", "show", "dev", ifname], None)
    if r.rc != 0:
        return None
    return (*parse_ip_link(r.out), f"ip -o link show dev {ifname}")


def check_gdr(ctx: Context) -> Check:
    host = ctx.host
    if not nvidia_driver_loaded(host):
        return Check("gpudirect-rdma", SKIP, "no NVIDIA driver loaded (/sys/module/nvidia): "
                     "GPUDirect RDMA does not apply")
    if ctx.usable_port is None:
        return Check("gpudirect-rdma", SKIP, "no usable RDMA port: GPUDirect RDMA does not apply")
    found = gdr_sources(host)
    if found:
        return Check("gpudirect-rdma", PASS, "GPUDirect RDMA available: NCCL can use "
                     "NET/IB/.../GDRDMA", found)
    return Check("gpudirect-rdma", WARN, "GPUDirect RDMA off: no nvidia_peermem / nv_mem, so NCCL "
                 "stages every transfer through host memory (log: via NET/IB/0, not GDRDMA)",
                 [f"no /{rel}" for _name, rel in launch_fabric.GDR_MODULES],
                 "modprobe nvidia-peermem (persist it in /etc/modules-load.d/); on V100 it needs the "
                 "proprietary kernel module flavour, not the open one")


def check_gpu_nic(ctx: Context) -> Check:
    if not ctx.ports:
        return Check("gpu-nic-path", SKIP, "no RDMA device: no GPU-NIC path to judge")
    device = ctx.fabric.device or (ctx.usable_port.dev if ctx.usable_port else None)
    return gpu_nic_check(ctx.host.run(["nvidia-smi", "topo", "-m"], None), device)


def fabric_verdict(ctx: Context, gdr: Check) -> str:
    if not ctx.ports:
        return NO_RDMA
    port = ctx.usable_port
    if port is None:
        states = ", ".join(f"{p.name} {p.state or '?'}" for p in ctx.ports)
        return f"no ACTIVE RDMA port ({states}): NCCL and MPI will use TCP sockets"
    how = "GPUDirect RDMA" if gdr.status == PASS else (
        "no GPUDirect RDMA" if gdr.status == WARN else "host memory (no GPU)")
    if ctx.env_forces_tcp:
        return f"{port.name} ACTIVE but NCCL_IB_DISABLE=1: NCCL will use TCP sockets"
    return f"{port.name} ACTIVE ({port.link_layer}, {port.rate or 'rate ?'}): NCCL over RDMA, {how}"
