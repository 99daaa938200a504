"""Fabric checks: RDMA port, IPoIB / fast-network interface, GPUDirect RDMA, GPU-NIC PCIe path,
and the one-line fabric verdict.

Ports, GIDs and GPUDirect come from hpcjobs.launch.fabric, the reader the launcher uses for the
NCCL environment, so that the doctor and the launcher never disagree about what a port is.
"""

from __future__ import annotations

import re

from hpcjobs.doctor.context import Context
from hpcjobs.doctor.host import Host
from hpcjobs.doctor.parse import PATH_KINDS, parse_ip_link, parse_topo, tail
from hpcjobs.doctor.result import FAIL, PASS, SKIP, WARN, Check
from hpcjobs.launch import fabric as launch_fabric
from hpcjobs.launch.fabric import ACTIVE, Port

NO_RDMA = "no RDMA device: NCCL and MPI will use TCP sockets"


def rdma_ports(host: Host) -> list[Port]:
    """This host's RDMA ports, read by the launcher's own reader (phys_state and rate included)."""
    return launch_fabric.rdma_ports(str(host.root))


def describe(port: Port) -> str:
    return (f"{port.name}: state {port.state or '?'}, phys {port.phys_state or '?'}, "
            f"link layer {port.link_layer or '?'}, rate {port.rate or '?'}")


def rate_gbps(port: Port) -> float | None:
    """``"100 Gb/sec (4X EDR)"`` -> 100.0, as the kernel prints the rate."""
    m = re.match(r"\s*([\d.]+)\s*Gb/sec", port.rate)
    return float(m.group(1)) if m else None


def gdr_sources(host: Host) -> list[str]:
    """The file NCCL finds before it uses GPUDirect RDMA (nccl net_ib/gdr.cc), with its text."""
    name, _why = launch_fabric.gpudirect(str(host.root))
    rel = dict(launch_fabric.GDR_MODULES).get(name)
    return [f"/{rel} ({host.read(rel[4:]) or 'present'})"] if rel else []


def nvidia_driver_loaded(host: Host) -> bool:
    return host.exists("module/nvidia")


def check_rdma(ctx: Context) -> Check:
    f = ctx.fabric
    want = f"{f.device}:{f.port}" if f.device else None
    evidence = [describe(p) for p in ctx.ports] or ["/sys/class/infiniband: no devices"]
    expects_rdma = f.kind in ("infiniband", "roce")
    if not ctx.ports:
        return Check("rdma", FAIL if expects_rdma else WARN, NO_RDMA, evidence,
                     f"the profile says {f.kind} on {want}: load the driver (modprobe mlx5_ib), "
                     "then check `ibstat` / `ibv_devinfo`" if expects_rdma else
                     "expected on a cluster without InfiniBand/RoCE; bandwidth is bounded by TCP")
    port = ctx.wanted_port
    if want and port is None:
        others = ", ".join(p.name for p in ctx.ports)
        return Check("rdma", FAIL if expects_rdma else WARN,
                     f"the profile's port {want} does not exist here (found {others})", evidence,
                     "fix [fabric] device/port in the cluster profile, or the NIC's driver")
    if port is None:  # ethernet profile, RDMA ports present anyway
        active = [p for p in ctx.ports if p.state == ACTIVE]
        return Check("rdma", PASS if active else WARN,
                     f"RDMA ports present ({', '.join(p.name for p in ctx.ports)}) but the profile "
                     "names none", evidence,
                     "set [fabric] kind/device/port in the profile so the launcher uses them")
    if port.state != ACTIVE:
        why = {"Polling": "no link: cable, switch port or the peer is down",
               "Disabled": "the port is disabled (ibportstate / switch)",
               "Sleep": "no link partner yet"}.get(port.phys_state, "")
        if port.state == "INIT":
            why = "physical link is up but no subnet manager has configured it"
        fix = ("start a subnet manager (opensm on one node, or the switch's SM) and wait for ACTIVE"
               if port.state == "INIT" else "check the cable and switch port; `ibstat` shows the same")
        return Check("rdma", FAIL, f"{port.name} is {port.state or 'not ACTIVE'}"
                     f"{': ' + why if why else ''}; NCCL and MPI will fall back to TCP sockets",
                     evidence, fix)
    layer_ok = {"infiniband": "InfiniBand", "roce": "Ethernet"}.get(f.kind)
    if layer_ok and port.link_layer and port.link_layer != layer_ok:
        return Check("rdma", FAIL, f"{port.name} link layer is {port.link_layer}, the profile says "
                     f"{f.kind}", evidence,
                     f"set [fabric] kind = \"{_kind_of(port)}\""
                     " in the profile (RoCE needs NCCL_IB_GID_INDEX, native IB must not have it)")
    rate = rate_gbps(port)
    if rate is not None and f.rate_gbps and rate < f.rate_gbps * 0.99:
        return Check("rdma", WARN, f"{port.name} ACTIVE but trained at {rate:g} Gb/s, below the "
                     f"profile's {f.rate_gbps:g} Gb/s", evidence,
                     "reseat or replace the cable / check the switch port speed (ibstat, "
                     "ibportstate); or correct [fabric] rate_gbps in the profile")
    return Check("rdma", PASS, f"{port.name} ACTIVE, {port.link_layer}, {port.rate}", evidence)


def _kind_of(port: Port) -> str:
    return "roce" if port.link_layer == "Ethernet" else "infiniband"


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


_PATH_GOOD = ("PIX", "PXB")  # NCCL_NET_GDR_LEVEL defaults to PXB (nccl src/graph/paths.cc)


def check_gpu_nic(ctx: Context) -> Check:
    host = ctx.host
    if not ctx.ports:
        return Check("gpu-nic-path", SKIP, "no RDMA device: no GPU-NIC path to judge")
    r = host.run(["nvidia-smi", "topo", "-m"], None)
    if r.rc == 127:
        return Check("gpu-nic-path", SKIP, "nvidia-smi not found: no NVIDIA GPU here")
    if r.rc != 0:
        return Check("gpu-nic-path", WARN, "nvidia-smi topo -m failed", tail(r.text),
                     "check the NVIDIA driver (nvidia-smi)")
    topo = parse_topo(r.out)
    if not topo.gpus:
        return Check("gpu-nic-path", SKIP, "nvidia-smi shows no GPU", tail(r.out))
    device = ctx.fabric.device or (ctx.usable_port.dev if ctx.usable_port else None)
    if not topo.nics or device not in topo.nics.values():
        return Check("gpu-nic-path", WARN, f"nvidia-smi topo -m does not show {device}",
                     [f"NICs shown: {', '.join(topo.nics.values()) or 'none'}"],
                     "check that the NIC's driver is loaded and [fabric] device in the profile")
    worst, evidence = None, []
    for gpu in topo.gpus:
        p = topo.path_to(gpu, device) or "?"
        line = f"{gpu} -> {device}: {p}"
        near = min(((v, label) for label, v in topo.path[gpu].items() if v in PATH_KINDS),
                   key=lambda x: PATH_KINDS.index(x[0]), default=None)
        if near and p in PATH_KINDS and PATH_KINDS.index(near[0]) < PATH_KINDS.index(p):
            line += f" (nearest NIC: {topo.nics[near[1]]}, {near[0]})"
        evidence.append(line)
        if p in PATH_KINDS and (worst is None or PATH_KINDS.index(p) > PATH_KINDS.index(worst)):
            worst = p
    if worst is None:
        return Check("gpu-nic-path", WARN, "could not read the GPU-NIC path", evidence)
    if worst in _PATH_GOOD:
        return Check("gpu-nic-path", PASS, f"GPU-NIC path {worst}: GPUDirect RDMA is used by "
                     "default (NCCL_NET_GDR_LEVEL defaults to PXB)", evidence)
    meaning = {"PHB": "through the CPU's host bridge", "NODE": "across host bridges of one NUMA node",
               "SYS": "across CPU sockets over QPI/UPI"}[worst]
    fix = ("put the GPU and the NIC under one PCIe switch or at least one socket; on a "
           "single-socket host NCCL_NET_GDR_LEVEL=PHB can be worth a bench-allreduce run"
           if worst != "SYS" else
           "move the NIC or the GPU to slots of the same CPU socket; crossing sockets is slow "
           "with or without GDR")
    return Check("gpu-nic-path", WARN, f"GPU-NIC path {worst} ({meaning}): NCCL does not use "
                 "GPUDirect RDMA by default (NCCL_NET_GDR_LEVEL defaults to PXB)", evidence, fix)


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
