"""What NCCL really chose, read from its own INFO log (``NCCL_DEBUG=INFO``,
``NCCL_DEBUG_SUBSYS=INIT,NET``), not predicted from sysfs.

The lines, as NCCL 2.18 to 2.28 print them (NVIDIA/nccl, the file that prints each):

- prefix (src/debug.cc): ``HOST:PID:TID [CUDADEV] NCCL INFO <message>``; from 2.26 a timestamp
  may come first (``NCCL_DEBUG_TIMESTAMP_FORMAT``), so the prefix is searched, not anchored.
- ``NCCL version 2.21.5+cuda12.4`` (src/init.cc VERSION_STRING).
- ``Using network IB`` / ``Using network Socket`` (src/init.cc: the net plugin chosen); 2.28
  also ``Failed to initialize NET plugin IB`` and ``Assigned NET plugin Socket to comm``
  (src/plugin/net.cc).
- ``NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_1:1/RoCE [RO]; OOB ib0:10.100.0.1<0>`` and
  ``NET/IB : No device found.`` (src/transport/net_ib.cc, net_ib/init.cc from 2.27).
- ``NET/Socket : Using [0]eth0:10.0.0.1<0>`` (src/transport/net_socket.cc).
- ``Failed to open libibverbs.so[.1]`` (src/misc/ibvsymbols.cc): no verbs library for the process.
- ``GPU Direct RDMA Disabled for GPU 1c000 / HCA 0 (distance 4 > 3)`` (src/graph/paths.cc; the
  GPU is a bus id up to 2.18 and a rank later, the HCA an index or a hex net id); 2.28 also
  ``NET/Socket : GPU Direct RDMA Disabled for HCA 0 'lo'`` for a NIC without GDR at all.
- per connection (src/transport/net.cc, p2p.cc, shm.cc)::

    Channel 00/0 : 0[0] -> 1[0] [send] via NET/IB/0/GDRDMA          (net.cc; /GDRDMA(PCI) from 2.24,
    Channel 00/0 : 1[0] -> 0[0] [receive] via NET/Socket/0           /Shared, and NET/IB/0(2) when
    Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read                   rank 2 proxies it: PXN)
    Channel 00/0 : 0[0] -> 1[1] via P2P/IPC  |  P2P/direct pointer  |  P2P/indirect/2[2]
    Channel 00 : 0[0] -> 1[1] via SHM/direct/direct                  (shm.cc: no connection index)

  The number in brackets is the NVML device (a bus id in hex before 2.12).

Pure: :func:`parse` takes lines, :func:`peers` turns one rank's connections into one transport
per peer. The preflight (hpcjobs.runners.preflight) sets the variables for its own process only,
so the job's program stays at NCCL_DEBUG=WARN.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

_PREFIX = re.compile(r"(?P<host>[^\s:\[\]]+):(?P<pid>\d+):(?P<tid>\d+) \[(?P<dev>\d+)\] "
                     r"(?:[^\s]+:\d+ )?NCCL (?P<level>INFO|WARN) (?P<msg>.*)$")
_VERSION = re.compile(r"NCCL version (\S+)")
_USING_NET = re.compile(r"^(?:Using network|Assigned NET plugin) (\S+)")
_NET_FAILED = re.compile(r"^Failed to initialize NET plugin (\S+)")
_IB_USING = re.compile(r"^NET/IB ?: Using((?: \[\d+\]\S+)+)")
_IB_DEV = re.compile(r"\[(\d+)\]([^:\s]+):(\d+)/(\w+)")
_SOCK_USING = re.compile(r"^NET/Socket ?: Using((?: \[\d+\]\S+)+)")
_SOCK_DEV = re.compile(r"\[(\d+)\]([^:\s]+):(\S+)")
_GDR_OFF = re.compile(r"GPU Direct RDMA Disabled for (?:GPU \S+ / )?HCA")
_ENV_SET = re.compile(r"^(NCCL_\w+) set by environment to (.*?)\.?$")
_CHANNEL = re.compile(r"^Channel (\d+)(?:/(\d+))? : (\d+)\[([0-9a-fA-F]+)\] -> (\d+)\[([0-9a-fA-F]+)\]"
                      r"(?: \[(send|receive)\])? via (.+?)\s*$")
_NET = re.compile(r"^NET/([^/\s(]+)/(\d+)(?:\((\d+)\))?(/GDRDMA)?(?:\(PCI\))?(/Shared)?")


@dataclass
class Connection:
    """One channel's connection between two ranks, as one rank's log shows it."""

    channel: int
    src: int
    dst: int
    via: str  # as printed: "NET/IB/0/GDRDMA", "P2P/CUMEM/read", "SHM/direct/direct"
    direction: str | None = None  # send | receive (NET lines only)
    host: str = ""

    @property
    def kind(self) -> str:
        """NET, P2P, SHM or what else NCCL printed before the first slash (CollNet, NVLS)."""
        return self.via.split("/", 1)[0]

    @property
    def net(self) -> str | None:
        """The net plugin's name for NET connections: IB, Socket, or an external plugin's."""
        m = _NET.match(self.via)
        return m.group(1) if m else None

    @property
    def gdr(self) -> bool:
        return "/GDRDMA" in self.via

    @property
    def label(self) -> str:
        """``NET/IB/<n>/GDRDMA``, ``NET/IB/<n>``, ``NET/Socket``, ``P2P``, ``SHM`` (the names
        people grep for); other kinds as printed."""
        m = _NET.match(self.via)
        if m:
            net, dev, _proxy, gdr, _shared = m.groups()
            if net == "Socket":
                return "NET/Socket"
            return f"NET/{net}/{dev}" + ("/GDRDMA" if gdr else "")
        if self.kind in ("P2P", "SHM"):
            return self.kind
        return self.via


@dataclass
class NcclLog:
    version: str | None = None
    hosts: list[str] = field(default_factory=list)
    network: str | None = None  # "Using network IB|Socket|<plugin>"
    ib_devices: list[str] = field(default_factory=list)  # ["mlx5_0:1/IB", ...]
    ib_no_device: bool = False
    socket_ifaces: list[str] = field(default_factory=list)  # ["eth0:10.0.0.1<0>"]
    ibverbs_missing: bool = False
    net_failed: list[str] = field(default_factory=list)  # "Failed to initialize NET plugin IB"
    gdr_disabled: list[str] = field(default_factory=list)  # the lines as printed
    env: dict[str, str] = field(default_factory=dict)  # "X set by environment to Y"
    connections: list[Connection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lines: int = 0  # NCCL lines seen

    def evidence(self, pattern: str, limit: int = 2) -> list[str]:
        """Lines of this log's facts matching a pattern (for a check's evidence)."""
        rx = re.compile(pattern)
        facts = ([f"Using network {self.network}"] if self.network else []) + \
            [f"NET/IB : Using {' '.join(self.ib_devices)}"] * bool(self.ib_devices) + \
            ["NET/IB : No device found."] * self.ib_no_device + \
            [f"Failed to initialize NET plugin {n}" for n in self.net_failed] + \
            [f"NET/Socket : Using {' '.join(self.socket_ifaces)}"] * bool(self.socket_ifaces) + \
            ["Failed to open libibverbs.so[.1]"] * self.ibverbs_missing + self.gdr_disabled
        return [f for f in facts if rx.search(f)][:limit]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["connections"] = len(self.connections)
        return d


def parse(lines: Iterable[str]) -> NcclLog:
    """The facts of one NCCL log (one rank's NCCL_DEBUG_FILE, or a job's mixed output)."""
    log = NcclLog()
    for raw in lines:
        m = _PREFIX.search(raw.rstrip("\n"))
        if not m:
            v = _VERSION.search(raw)  # NCCL_LOG_VERSION lines carry no host prefix
            if v and "NCCL" in raw and log.version is None:
                log.version = v.group(1)
            continue
        log.lines += 1
        host, msg = m.group("host"), m.group("msg").strip()
        if host not in log.hosts:
            log.hosts.append(host)
        if m.group("level") == "WARN":
            log.warnings.append(msg)
            continue
        if (v := _VERSION.match(msg)) and log.version is None:
            log.version = v.group(1)
        elif c := _CHANNEL.match(msg):
            ch, _conn, src, _sdev, dst, _ddev, direction, via = c.groups()
            log.connections.append(Connection(int(ch), int(src), int(dst), via, direction, host))
        elif u := _USING_NET.match(msg):
            log.network = u.group(1)
        elif ib := _IB_USING.match(msg):
            log.ib_devices = [f"{d}:{p}/{layer}" for _i, d, p, layer in _IB_DEV.findall(ib.group(1))]
        elif msg.startswith(("NET/IB : No device found", "NET/IB: No device found")):
            log.ib_no_device = True
        elif s := _SOCK_USING.match(msg):
            log.socket_ifaces = [f"{n}:{a}" for _i, n, a in _SOCK_DEV.findall(s.group(1))]
        elif f := _NET_FAILED.match(msg):
            if f.group(1) not in log.net_failed:
                log.net_failed.append(f.group(1))
        elif msg.startswith("Failed to open libibverbs"):
            log.ibverbs_missing = True
        elif _GDR_OFF.search(msg):
            log.gdr_disabled.append(msg)
        elif e := _ENV_SET.match(msg):
            log.env[e.group(1)] = e.group(2)
    return log


@dataclass
class Peer:
    """The transport between this rank and one peer (all channels of both directions)."""

    rank: int
    peer: int
    host: str  # the peer's host, when known
    transport: str  # Connection.label; several joined by "+" when channels differ
    via: list[str]  # every distinct ``via`` as printed
    channels: int
    inter_node: bool | None  # None: the peer's host is not known

    def to_dict(self) -> dict:
        return asdict(self)


def peers(log: NcclLog, rank: int, hosts: list[str] | None = None) -> list[Peer]:
    """One :class:`Peer` per rank that ``rank`` connects to, from that rank's log. ``hosts``
    (host of each rank, e.g. from an all_gather) says which peers are on other nodes."""
    by_peer: dict[int, list[Connection]] = {}
    for c in log.connections:
        if c.src == rank and c.dst != rank:
            by_peer.setdefault(c.dst, []).append(c)
        elif c.dst == rank and c.src != rank:
            by_peer.setdefault(c.src, []).append(c)
    me = hosts[rank] if hosts and rank < len(hosts) else None
    out = []
    for p, conns in sorted(by_peer.items()):
        labels = list(dict.fromkeys(c.label for c in conns))
        vias = list(dict.fromkeys(c.via for c in conns))
        host = hosts[p] if hosts and p < len(hosts) else ""
        inter = (host != me) if (host and me) else None
        out.append(Peer(rank, p, host, "+".join(labels), vias,
                        len({(c.channel, c.direction) for c in conns}), inter))
    return out


def summary(all_peers: Iterable[Peer]) -> str:
    """One line for a job: the inter-node transport(s) first, e.g. ``NET/IB/0/GDRDMA between
    nodes; P2P within a node``; ``one rank: no peer`` when there are none."""
    inter, intra, unknown = [], [], []
    for p in all_peers:
        target = inter if p.inter_node else intra if p.inter_node is False else unknown
        for t in p.transport.split("+"):
            if t not in target:
                target.append(t)
    parts = []
    if inter:
        parts.append(f"{'+'.join(inter)} between nodes")
    if intra:
        parts.append(f"{'+'.join(intra)} within a node")
    if unknown:
        parts.append(f"{'+'.join(unknown)} between ranks")
    return "; ".join(parts) or "no peer connection (one rank)"
