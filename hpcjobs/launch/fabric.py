"""NCCL, UCX and Open MPI environment from what the node really has, read from sysfs.

Facts used (sources: the kernel's Documentation/ABI/stable/sysfs-class-infiniband; NVIDIA/nccl
src/transport/net_ib (connect.cc ncclIbGetGidIndex, init.cc, gdr.cc); docs.open-mpi.org v5.0.x
"InfiniBand and RoCE"):
- ``/sys/class/infiniband/<dev>/ports/<n>/state`` reads e.g. ``4: ACTIVE``; ``link_layer`` reads
  ``InfiniBand`` or ``Ethernet`` (RoCE). GIDs: ``ports/<n>/gids/<i>`` printed in full
  (``0000:0000:0000:0000:0000:ffff:0a64:0002`` for the RoCE v2 GID of 10.100.0.2), type in
  ``gid_attrs/types/<i>`` (``IB/RoCE v1`` or ``RoCE v2``), netdev in ``gid_attrs/ndevs/<i>``.
- ``NCCL_IB_GID_INDEX`` matters only on RoCE; on native IB NCCL uses GID 0 and ignores it.
- ``NCCL_IB_DISABLE=0`` is NCCL's default (a no-op): never set; ``=1`` forces TCP sockets.
- GPUDirect RDMA is available only where nvidia_peermem or nv_mem(_nc) is loaded (nccl gdr.cc).

Interfaces come from ``/proc/net/route`` (per network namespace, so right inside the sandbox's
namespaces too) and from the RDMA device's own ``device/net/``. ``HPCJOBS_SYSFS_ROOT=DIR`` reads
``DIR/sys/...`` and ``DIR/proc/...`` instead (tests/fixtures/sysfs/).
"""

import os
import sys

ACTIVE = "ACTIVE"
GDR_MODULES = (
    ("nvidia_peermem", "sys/module/nvidia_peermem/version"),
    ("nv_mem", "sys/kernel/mm/memory_peers/nv_mem/version"),
    ("nv_mem_nc", "sys/kernel/mm/memory_peers/nv_mem_nc/version"),
)
_DOWN = ("down", "lowerlayerdown", "notpresent", "dormant")
_RTF_GATEWAY = 0x2


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _natural(name: str) -> tuple[str, int]:
    """mlx5_2 before mlx5_10."""
    i = len(name)
    while i and name[i - 1].isdigit():
        i -= 1
    return name[:i], int(name[i:]) if i < len(name) else -1


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


class Port:
    __slots__ = ("dev", "link_layer", "phys_state", "port", "rate", "state")

    def __init__(self, dev: str, port: int, state: str, link_layer: str, phys_state: str = "",
                 rate: str = "") -> None:
        self.dev, self.port, self.state, self.link_layer = dev, port, state, link_layer
        # Not used by the launcher; hpcjobs doctor reports them ("Polling": no cable/peer).
        self.phys_state, self.rate = phys_state, rate

    @property
    def name(self) -> str:
        return f"{self.dev}:{self.port}"

    @property
    def roce(self) -> bool:
        return self.link_layer == "Ethernet"


def rdma_ports(root: str) -> list[Port]:
    """Every RDMA port with its state word (ACTIVE, DOWN, INIT, ...), link layer, physical state
    (LinkUp, Polling, ...) and rate as the kernel prints it ("100 Gb/sec (4X EDR)"; "" if absent)."""
    base = os.path.join(root, "sys/class/infiniband")
    out = []
    for dev in sorted(_listdir(base), key=_natural):
        pdir = os.path.join(base, dev, "ports")
        for p in sorted((x for x in _listdir(pdir) if x.isdigit()), key=int):
            state = _read(os.path.join(pdir, p, "state")) or "?"
            state = state.partition(":")[2].strip() or state  # "4: ACTIVE" -> "ACTIVE"
            link = _read(os.path.join(pdir, p, "link_layer")) or "InfiniBand"
            phys = _read(os.path.join(pdir, p, "phys_state")) or ""
            phys = phys.partition(":")[2].strip() if ":" in phys else phys  # "5: LinkUp" -> "LinkUp"
            rate = _read(os.path.join(pdir, p, "rate")) or ""
            out.append(Port(dev, int(p), state, link, phys, rate))
    return out


def ipv4_mapped(gid: str) -> str | None:
    """``0000:0000:0000:0000:0000:ffff:0a64:0002`` (sysfs form) or ``::ffff:10.100.0.2`` -> IPv4."""
    g = gid.strip().lower()
    if g.startswith("0000:0000:0000:0000:0000:ffff:"):
        h = g[30:].replace(":", "")
        if len(h) == 8:
            try:
                return ".".join(str(int(h[i:i + 2], 16)) for i in (0, 2, 4, 6))
            except ValueError:
                return None
    if g.startswith("::ffff:") and g.count(".") == 3:
        return g[7:]
    return None


def roce_v2_ipv4_gids(root: str, port: Port) -> list[tuple[int, str, str | None]]:
    """(index, IPv4, netdev) of each RoCE v2 GID that is an IPv4-mapped address, by index."""
    pdir = os.path.join(root, "sys/class/infiniband", port.dev, "ports", str(port.port))
    out = []
    for i in sorted((x for x in _listdir(os.path.join(pdir, "gids")) if x.isdigit()), key=int):
        ip = ipv4_mapped(_read(os.path.join(pdir, "gids", i)) or "")
        if not ip:
            continue  # empty entries read as the zero GID; IPv6 and link-local GIDs don't map
        if _read(os.path.join(pdir, "gid_attrs/types", i)) != "RoCE v2":
            continue
        out.append((int(i), ip, _read(os.path.join(pdir, "gid_attrs/ndevs", i))))
    return out


def iface_down(root: str, iface: str) -> bool:
    """True only when sysfs says so (inside a network namespace the file may be absent)."""
    return (_read(os.path.join(root, "sys/class/net", iface, "operstate")) or "") in _DOWN


def ipoib_ifaces(root: str, port: Port) -> list[str]:
    """IPoIB netdevs of an IB port: the device's own net/ entries for that port (dev_port)."""
    ndir = os.path.join(root, "sys/class/infiniband", port.dev, "device/net")
    out = []
    for name in sorted(_listdir(ndir)):
        dev_port = _read(os.path.join(ndir, name, "dev_port"))
        if dev_port is None or not dev_port.isdigit() or int(dev_port) == port.port - 1:
            out.append(name)
    return out


def _routes(root: str) -> list[tuple[str, int, int, int, int]]:
    """(iface, destination, mask, flags, metric) from /proc/net/route, numbers as printed."""
    text = _read(os.path.join(root, "proc/net/route")) or ""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 8:
            continue
        try:
            out.append((f[0], int(f[1], 16), int(f[7], 16), int(f[3], 16), int(f[6])))
        except ValueError:
            continue
    return out


def _ip_as_route_int(ip: str) -> int | None:
    """An IPv4 in /proc/net/route's encoding: the network-order bytes read as a host int."""
    parts = ip.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        return None
    return int.from_bytes(bytes(int(p) for p in parts), sys.byteorder)


def iface_for_address(root: str, ip: str) -> str | None:
    """The interface whose directly connected subnet holds ``ip`` (longest prefix wins)."""
    addr = _ip_as_route_int(ip)
    if addr is None:
        return None
    best = None
    for iface, dest, mask, flags, metric in _routes(root):
        if flags & _RTF_GATEWAY or mask == 0 or addr & mask != dest:
            continue
        rank = (mask.bit_count(), -metric)
        if best is None or rank > best[0]:
            best = (rank, iface)
    return best[1] if best else None


def default_route_iface(root: str) -> str | None:
    best = None
    for iface, dest, mask, _flags, metric in _routes(root):
        if dest == 0 and mask == 0 and (best is None or metric < best[0]):
            best = (metric, iface)
    return best[1] if best else None


def gpudirect(root: str) -> tuple[str, str]:
    """(value of HPCJOBS_GPUDIRECT_RDMA, why): the module NCCL would use, or ``none``."""
    for name, rel in GDR_MODULES:
        if os.path.exists(os.path.join(root, rel)):
            return name, f"/{rel} exists: NCCL can use GPUDirect RDMA"
    return "none", ("none of /sys/module/nvidia_peermem, /sys/kernel/mm/memory_peers/nv_mem(_nc) "
                    "exists: NCCL stages GPU buffers through host memory (modprobe nvidia-peermem)")


class FabricEnv:
    """Variables (key, value, why) to add, notes for --explain, a warning for rank 0."""

    __slots__ = ("notes", "port", "vars", "warning")

    def __init__(self) -> None:
        self.vars: list[tuple[str, str, str]] = []
        self.notes: list[str] = []
        self.warning: str | None = None
        self.port: Port | None = None

    def add(self, key: str, value: str, why: str) -> None:
        self.vars.append((key, value, why))


def _socket_iface(root: str, node_addr: str | None) -> tuple[str | None, str]:
    """The TCP interface: the one carrying the node's profile address, else the default route's."""
    if node_addr:
        iface = iface_for_address(root, node_addr)
        if iface and not iface_down(root, iface):
            return iface, f"carries this node's profile address {node_addr} (/proc/net/route)"
        if iface:
            why_not = f"{iface} carries {node_addr} but is down"
        else:
            why_not = f"no interface carries this node's profile address {node_addr}"
    else:
        why_not = "this node has no address in the cluster profile"
    iface = default_route_iface(root)
    if iface:
        return iface, f"the default route's interface ({why_not})"
    return None, why_not + " and there is no default route"


def detect(root: str, pref_device: str | None = None, pref_port: int | None = None,
           pref_iface: str | None = None, node_addr: str | None = None,
           debug: bool = False) -> FabricEnv:
    """The fabric environment for this node. ``pref_*`` come from the cluster profile's [fabric],
    ``node_addr`` is this node's fast-network address from the profile's [[nodes]]."""
    env = FabricEnv()
    ports = rdma_ports(root)
    active = [p for p in ports if p.state == ACTIVE and p.link_layer in ("InfiniBand", "Ethernet")]
    chosen = None
    if pref_device:
        chosen = next((p for p in active if p.dev == pref_device and p.port == (pref_port or 1)), None)
        if chosen:
            how = "the cluster profile's fabric device, ACTIVE"
    if chosen is None and active:
        chosen = active[0]
        how = "the first ACTIVE RDMA port"
        if pref_device:
            how += f" (the profile's {pref_device}:{pref_port or 1} is not ACTIVE here)"
    env.port = chosen

    if chosen:
        others = [p.name for p in active if p is not chosen]
        if others:
            # One port, as the profile or the first ACTIVE one says; a multi-rail node (one HCA
            # per GPU) should name all of them in NCCL_IB_HCA itself (the user's value wins).
            env.notes.append(f"also ACTIVE: {', '.join(others)}; NCCL and UCX are pinned to "
                             f"{chosen.name} (set NCCL_IB_HCA/UCX_NET_DEVICES yourself for multi-rail)")
        what = f"{chosen.name}: {how}, link layer {chosen.link_layer}"
        env.add("NCCL_IB_HCA", "=" + chosen.name, what + "; '=' makes NCCL match it exactly")
        env.add("UCX_NET_DEVICES", chosen.name, what)
        env.add("OMPI_MCA_pml", "ucx", "Open MPI reaches InfiniBand/RoCE through UCX (no openib BTL in 5.x)")
        iface, iface_why = None, ""
        if chosen.roce:
            gids = roce_v2_ipv4_gids(root, chosen)
            pick = None
            if node_addr:
                pick = next((g for g in gids if g[1] == node_addr), None)
                gid_why = f"the RoCE v2 GID of this node's profile address {node_addr}"
            if pick is None and pref_iface:
                pick = next((g for g in gids if g[2] == pref_iface), None)
                gid_why = f"the RoCE v2 IPv4 GID on the profile's interface {pref_iface}"
            if pick is None and gids:
                pick = gids[0]
                gid_why = "the first RoCE v2 IPv4-mapped GID"
            if pick:
                idx, ip, ndev = pick
                why = f"{gid_why} ({ip} on {ndev or '?'}); RoCE-only, NCCL ignores it on native IB"
                env.add("NCCL_IB_GID_INDEX", str(idx), why)
                env.add("UCX_IB_GID_INDEX", str(idx), "the same GID for UCX")
                if ndev:
                    iface, iface_why = ndev, f"netdev of RoCE GID {idx}"
            else:
                env.notes.append(f"{chosen.name} is RoCE but has no RoCE v2 IPv4-mapped GID: "
                                 "NCCL_IB_GID_INDEX left to NCCL's automatic choice")
        else:
            env.notes.append("native InfiniBand: NCCL_IB_GID_INDEX not set (RoCE-only; NCCL uses GID 0)")
            cands = [i for i in ipoib_ifaces(root, chosen) if not iface_down(root, i)]
            if cands:
                iface = pref_iface if pref_iface in cands else cands[0]
                iface_why = f"IPoIB interface of {chosen.name}"
        if iface is None:
            iface, iface_why = _socket_iface(root, node_addr)
        if iface:
            env.add("NCCL_SOCKET_IFNAME", "=" + iface,
                    f"{iface_why}; bootstrap and out-of-band only, data goes over verbs")
            env.add("GLOO_SOCKET_IFNAME", iface, f"torch gloo on the same interface ({iface_why})")
        else:
            env.notes.append(f"NCCL_SOCKET_IFNAME not set: {iface_why}; NCCL picks (it prefers ib*)")
    else:
        if ports:
            summary = ", ".join(f"{p.name} {p.state} ({p.link_layer})" for p in ports)
            why = f"no ACTIVE RDMA port: {summary}"
        else:
            why = "no RDMA device (/sys/class/infiniband is empty or missing)"
        env.add("NCCL_IB_DISABLE", "1", why + "; NCCL would otherwise try IB and fail")
        iface, iface_why = _socket_iface(root, node_addr)
        if iface:
            env.add("NCCL_SOCKET_IFNAME", "=" + iface, iface_why)
            env.add("GLOO_SOCKET_IFNAME", iface, iface_why)
            env.add("OMPI_MCA_btl_tcp_if_include", iface, "Open MPI's TCP traffic on the same interface")
        else:
            env.notes.append(f"NCCL_SOCKET_IFNAME not set: {iface_why}; NCCL picks an interface")
        env.warning = (f"hpcjobs.launch: {why}; NCCL will run over TCP sockets"
                       + (f" on {iface}" if iface else "") + " between nodes, and so will MPI "
                       "(several times slower than RDMA)")

    gdr, gdr_why = gpudirect(root)
    env.add("HPCJOBS_GPUDIRECT_RDMA", gdr, "reported from sysfs, never guessed: " + gdr_why)

    if debug:
        env.add("NCCL_DEBUG", "INFO", "--nccl-debug / HPCJOBS_NCCL_DEBUG=1: look for 'via NET/IB/0/GDRDMA'"
                " (IB+GDR), 'via NET/IB/0' (IB) or 'via NET/Socket' (TCP)")
        env.add("NCCL_DEBUG_SUBSYS", "INIT,NET,GRAPH", "the subsystems that show the transport chosen")
    else:
        env.add("NCCL_DEBUG", "WARN", "quiet in normal runs; --nccl-debug for INFO")
    return env
