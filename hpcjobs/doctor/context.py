"""What several checks share, computed once: the host, the profile's node for it, its RDMA
ports and addresses (:class:`Context`), and how this host is matched to a profile node."""

from __future__ import annotations

from dataclasses import dataclass

from hpcjobs.doctor.host import Host, run_command
from hpcjobs.doctor.parse import parse_ip_addr
from hpcjobs.launch.fabric import ACTIVE, Port


@dataclass
class Context:
    """What several checks share, computed once."""

    host: Host
    cluster: object  # hpcjobs.cluster.Cluster
    node: object | None  # the profile's Node for this host, if any
    slurm_name: str  # the name to ask Slurm about
    ports: list[Port]
    addresses: list[tuple[str, str]]
    addr_source: str

    @property
    def fabric(self):
        return self.cluster.fabric

    @property
    def wanted_port(self) -> Port | None:
        f = self.fabric
        return next((p for p in self.ports if p.dev == f.device and p.port == f.port), None)

    @property
    def env_forces_tcp(self) -> bool:
        return self.host.env.get("NCCL_IB_DISABLE", "").strip() == "1"

    @property
    def usable_port(self) -> Port | None:
        """The port NCCL/UCX would use: the profile's if ACTIVE, else any ACTIVE one."""
        w = self.wanted_port
        if w and w.state == ACTIVE:
            return w
        return next((p for p in self.ports if p.state == ACTIVE), None)


def local_addresses(host: Host) -> tuple[list[tuple[str, str]], str]:
    """This host's (interface, address) pairs from ``ip -o addr show``; stdlib ioctl if no ``ip``."""
    r = host.run(["ip", "-o", "addr", "show"], None)
    if r.rc == 0:
        return parse_ip_addr(r.out), "ip -o addr show"
    if host.run is not run_command:  # a fixture runner without `ip`: nothing else to ask
        return [], "no `ip` output"
    return _ioctl_addresses(host), "SIOCGIFADDR ioctl (no `ip` command)"


def _ioctl_addresses(host: Host) -> list[tuple[str, str]]:
    import fcntl
    import socket
    import struct

    out = []
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for ifname in host.listdir("class/net"):
            try:
                raw = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", ifname.encode()[:15]))
            except OSError:
                continue
            out.append((ifname, socket.inet_ntoa(raw[20:24])))
    finally:
        s.close()
    return out


def identify(host: Host, cluster, addresses: list[tuple[str, str]]) -> tuple[object | None, str]:
    """(profile node, Slurm node name) for this host.

    Inside a job step ``SLURMD_NODENAME`` is Slurm's own name for the node. Otherwise the short
    host name, or the profile node whose fast-network address this host carries.
    """
    short = host.hostname.split(".")[0]
    name = host.env.get("SLURMD_NODENAME") or short
    node = cluster.node(name)
    if node is None:
        mine = {a for _, a in addresses}
        node = next((n for n in cluster.nodes if n.address and n.address in mine), None)
    return node, (node.name if node and not host.env.get("SLURMD_NODENAME") else name)
