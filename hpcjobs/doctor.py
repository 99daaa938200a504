"""``hpcjobs doctor``: is this node ready for fast distributed jobs? Each check says why.

A node can be "up" in Slurm and still run every NCCL job over TCP sockets (5x slower, silently)
because an InfiniBand port is down, nvidia-peermem is not loaded or a stale ``NCCL_*`` variable
is exported. Each check reads what the node really has (sysfs, a few commands), compares it with
the cluster profile and FACTS.md, and reports pass / warn / fail (or skip, when it does not apply)
with the evidence it saw and the fix.

Everything the checks read comes through :class:`Host` — a file-system root for ``/sys``
(``HPCJOBS_SYSFS_ROOT=DIR`` reads ``DIR/sys/...``, as hpcjobs.launch does), a command runner,
the host name, the environment and the locked-memory limit — so the unit tests run the same
code over fixture trees and recorded command outputs.

``hpcjobs --help`` imports this module to list the command: keep module-level imports light.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"

NO_RDMA = "no RDMA device: NCCL and MPI will use TCP sockets"


# --- what the checks read -----------------------------------------------------------------

@dataclass
class CmdResult:
    rc: int
    out: str = ""
    err: str = ""

    @property
    def text(self) -> str:
        return (self.out + self.err).strip()


Runner = Callable[[Sequence[str], "str | None"], CmdResult]


def run_command(argv: Sequence[str], input: str | None = None, timeout: float = 10.0) -> CmdResult:
    """Run one command; a missing program is rc 127 and a hang rc 124, never an exception."""
    import subprocess

    try:
        p = subprocess.run(list(argv), check=False, capture_output=True, text=True, input=input,
                           timeout=timeout)
    except FileNotFoundError:
        return CmdResult(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CmdResult(124, "", f"{argv[0]}: no answer within {timeout:g} s")
    except OSError as e:
        return CmdResult(126, "", f"{argv[0]}: {e.strerror}")
    return CmdResult(p.returncode, p.stdout, p.stderr)


def sysfs_root() -> Path:
    """``/``, or ``$HPCJOBS_SYSFS_ROOT`` standing in for it: files are read at ``ROOT/sys/...``
    (the convention of hpcjobs.launch.fabric, so one fixture tree serves both)."""
    return Path(os.environ.get("HPCJOBS_SYSFS_ROOT") or "/")


@dataclass
class Host:
    """Everything a check may read about this machine (replaceable in tests)."""

    root: Path  # "/" or a fixture tree; sysfs is read at root/sys
    run: Runner
    hostname: str
    env: Mapping[str, str]
    memlock: tuple[int, int]  # soft, hard in bytes; -1 = unlimited

    @classmethod
    def real(cls) -> Host:
        import resource
        import socket

        soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        inf = resource.RLIM_INFINITY
        return cls(root=sysfs_root(), run=run_command, hostname=socket.gethostname(),
                   env=dict(os.environ),
                   memlock=(-1 if soft == inf else soft, -1 if hard == inf else hard))

    def read(self, rel: str) -> str | None:
        """The stripped text of ``/sys/<rel>`` (under the root), or None when it is not there."""
        try:
            return (self.root / "sys" / rel).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None

    def exists(self, rel: str) -> bool:
        return (self.root / "sys" / rel).exists()

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.root / "sys" / rel))
        except OSError:
            return []


# --- sysfs: RDMA ports ----------------------------------------------------------------------
# Ports, GIDs and GPUDirect come from hpcjobs.launch.fabric, the reader the launcher uses for the
# NCCL environment, so that the doctor and the launcher never disagree about what a port is.
# TODO(merge): fabric.Port has no phys_state or rate yet; they are read here until it does.

@dataclass
class Port:
    device: str
    port: int
    state: str  # "ACTIVE", "DOWN", "INIT", ... (the text after "4: ")
    phys_state: str  # "LinkUp", "Polling", "Disabled", ...
    link_layer: str  # "InfiniBand" | "Ethernet"
    rate: str  # as the kernel prints it: "100 Gb/sec (4X EDR)"

    @property
    def name(self) -> str:
        return f"{self.device}:{self.port}"

    @property
    def active(self) -> bool:
        return self.state == "ACTIVE"

    @property
    def rate_gbps(self) -> float | None:
        m = re.match(r"\s*([\d.]+)\s*Gb/sec", self.rate)
        return float(m.group(1)) if m else None

    def describe(self) -> str:
        return (f"{self.name}: state {self.state or '?'}, phys {self.phys_state or '?'}, "
                f"link layer {self.link_layer or '?'}, rate {self.rate or '?'}")


def _after_colon(text: str | None) -> str:
    """``"5: LinkUp"`` -> ``"LinkUp"`` (sysfs prefixes the numeric value)."""
    if not text:
        return ""
    return text.split(":", 1)[1].strip() if ":" in text else text.strip()


def rdma_ports(host: Host) -> list[Port]:
    from hpcjobs.launch import fabric

    out = []
    for p in fabric.rdma_ports(str(host.root)):
        base = f"class/infiniband/{p.dev}/ports/{p.port}"
        out.append(Port(p.dev, p.port, p.state, _after_colon(host.read(f"{base}/phys_state")),
                        p.link_layer, host.read(f"{base}/rate") or ""))
    return out


def gdr_sources(host: Host) -> list[str]:
    """The file NCCL finds before it uses GPUDirect RDMA (nccl net_ib/gdr.cc), with its text."""
    from hpcjobs.launch import fabric

    name, _why = fabric.gpudirect(str(host.root))
    rel = dict(fabric.GDR_MODULES).get(name)
    return [f"/{rel} ({host.read(rel[4:]) or 'present'})"] if rel else []


def _gdr_modules():
    from hpcjobs.launch import fabric

    return fabric.GDR_MODULES


def nvidia_driver_loaded(host: Host) -> bool:
    return host.exists("module/nvidia")


# --- parsers of command output (pure) -------------------------------------------------------

def parse_ip_addr(text: str) -> list[tuple[str, str]]:
    """``ip -o addr show`` -> [(interface, address)], addresses without the prefix length."""
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*\d+:\s+([^\s:@]+)(?:@\S+)?\s+inet6?\s+([0-9a-fA-F.:]+)(?:/\d+)?", line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
PATH_KINDS = ("PIX", "PXB", "PHB", "NODE", "SYS")


@dataclass
class Topo:
    """The GPU/NIC rows of ``nvidia-smi topo -m``; ``path[gpu][nic]`` is PIX, PXB, PHB, NODE, SYS."""

    gpus: list[str] = field(default_factory=list)
    nics: dict[str, str] = field(default_factory=dict)  # column label -> device (NIC0 -> mlx5_0)
    path: dict[str, dict[str, str]] = field(default_factory=dict)

    def path_to(self, gpu: str, device: str) -> str | None:
        for label, dev in self.nics.items():
            if dev == device:
                return self.path.get(gpu, {}).get(label)
        return None


def parse_topo(text: str) -> Topo:
    """Parse ``nvidia-smi topo -m``: both the NIC0 + "NIC Legend" form (driver >= 470) and the
    older form that puts ``mlx5_0`` in the header. Tab-separated; "CPU Affinity" has a blank."""
    text = _ANSI.sub("", text)
    lines = text.splitlines()
    header = None
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.split("\t")]
        if cells and cells[0] == "" and any(re.fullmatch(r"GPU\d+", c) for c in cells):
            header = i
            break
    topo = Topo()
    if header is None:
        return topo
    cols = [c.strip() for c in lines[header].split("\t")][1:]
    cols = [c for c in cols if c]
    # Only the matrix columns: GPUn, NICn, or device names (mlx5_0, ...) before "CPU Affinity".
    matrix = []
    for c in cols:
        if "Affinity" in c or c.startswith("GPU NUMA"):
            break
        matrix.append(c)
    legend = dict(re.findall(r"^\s*(NIC\d+):\s*(\S+)\s*$", text, re.MULTILINE))
    for c in matrix:
        if not re.fullmatch(r"GPU\d+", c):
            topo.nics[c] = legend.get(c, c)
    for line in lines[header + 1:]:
        if not line.strip() or line.strip().startswith("Legend"):
            break
        cells = [c.strip() for c in line.split("\t")]
        row = cells[0]
        values = [c for c in cells[1:] if c != ""]
        if not re.fullmatch(r"GPU\d+", row):
            continue
        topo.gpus.append(row)
        topo.path[row] = {col: values[j] for j, col in enumerate(matrix)
                          if j < len(values) and col in topo.nics}
    return topo


def parse_ulimit(text: str) -> int:
    """``ulimit -l`` output (KiB or "unlimited") -> bytes, -1 for unlimited."""
    t = text.strip()
    return -1 if t == "unlimited" else int(t) * 1024


def _tail(text: str, n: int = 3) -> list[str]:
    """The last ``n`` non-empty lines of a command's output, as evidence lines."""
    return [ln.strip() for ln in text.splitlines() if ln.strip()][-n:] or ["(no output)"]


def _human_bytes(n: int) -> str:
    if n < 0:
        return "unlimited"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"


# --- checks -------------------------------------------------------------------------------

@dataclass
class Check:
    name: str
    status: str  # pass | warn | fail | skip
    summary: str
    evidence: list[str] = field(default_factory=list)
    fix: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


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
        return next((p for p in self.ports if p.device == f.device and p.port == f.port), None)

    @property
    def env_forces_tcp(self) -> bool:
        return self.host.env.get("NCCL_IB_DISABLE", "").strip() == "1"

    @property
    def usable_port(self) -> Port | None:
        """The port NCCL/UCX would use: the profile's if ACTIVE, else any ACTIVE one."""
        w = self.wanted_port
        if w and w.active:
            return w
        return next((p for p in self.ports if p.active), None)


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


def check_rdma(ctx: Context) -> Check:
    f = ctx.fabric
    want = f"{f.device}:{f.port}" if f.device else None
    evidence = [p.describe() for p in ctx.ports] or ["/sys/class/infiniband: no devices"]
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
        active = [p for p in ctx.ports if p.active]
        return Check("rdma", PASS if active else WARN,
                     f"RDMA ports present ({', '.join(p.name for p in ctx.ports)}) but the profile "
                     "names none", evidence,
                     "set [fabric] kind/device/port in the profile so the launcher uses them")
    if not port.active:
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
    rate = port.rate_gbps
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


def parse_ip_link(text: str) -> tuple[str, str]:
    """``ip -o link show dev X`` -> (operstate lower-cased, link type such as "ether")."""
    state = re.search(r"\bstate (\S+)", text)
    typ = re.search(r"link/(\S+)", text)
    return (state.group(1).lower() if state else "?", typ.group(1) if typ else "?")


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
                 [f"no /{rel}" for _name, rel in _gdr_modules()],
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
        return Check("gpu-nic-path", WARN, "nvidia-smi topo -m failed", _tail(r.text),
                     "check the NVIDIA driver (nvidia-smi)")
    topo = parse_topo(r.out)
    if not topo.gpus:
        return Check("gpu-nic-path", SKIP, "nvidia-smi shows no GPU", _tail(r.out))
    device = ctx.fabric.device or (ctx.usable_port.device if ctx.usable_port else None)
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


def check_memlock(ctx: Context) -> Check:
    soft, hard = ctx.host.memlock
    evidence = [f"RLIMIT_MEMLOCK soft {_human_bytes(soft)}, hard {_human_bytes(hard)}"]
    in_job = "SLURM_JOB_ID" in ctx.host.env
    if soft == -1:
        return Check("memlock", PASS, "locked memory unlimited", evidence)
    fix = ("slurm.conf PropagateResourceLimitsExcept=MEMLOCK and LimitMEMLOCK=infinity for slurmd "
           "(jobs otherwise inherit the submitting shell's limit)" if in_job else
           "`* - memlock unlimited` in /etc/security/limits.d/ (and for jobs: slurm.conf "
           "PropagateResourceLimitsExcept=MEMLOCK, LimitMEMLOCK=infinity for slurmd)")
    if soft < hard or hard == -1:
        fix = f"`ulimit -l unlimited` (the hard limit allows it) or {fix}"
    where = " in this job step" if in_job else ""
    if ctx.usable_port is not None:
        return Check("memlock", FAIL, f"locked memory limited to {_human_bytes(soft)}{where}: "
                     "RDMA memory registration fails (NCCL 'ibv_reg_mr failed', UCX errors)",
                     evidence, fix)
    return Check("memlock", WARN, f"locked memory limited to {_human_bytes(soft)}{where}: pinned "
                 "host memory (DataLoader pin_memory, DeepSpeed offload) counts against it",
                 evidence, fix)


def check_munge(ctx: Context) -> Check:
    run = ctx.host.run
    cred = run(["munge", "-n"], None)
    if cred.rc == 127:
        return Check("munge", FAIL, "munge is not installed", _tail(cred.text),
                     "apt install munge; copy /etc/munge/munge.key from the controller")
    if cred.rc != 0:
        return Check("munge", FAIL, "munge cannot make a credential (is munged running?)",
                     _tail(cred.text), "start munged (as the munge user); check /run/munge")
    dec = run(["unmunge"], cred.out)
    status = next((ln.strip() for ln in dec.out.splitlines() if ln.startswith("STATUS:")), dec.text)
    if dec.rc != 0 or "Success" not in status:
        return Check("munge", FAIL, f"unmunge refused this host's credential: {status}",
                     _tail(dec.text),
                     "same /etc/munge/munge.key on every node, clocks in sync (chrony), munged "
                     "restarted after a key change")
    return Check("munge", PASS, "munge -n | unmunge: Success", [status])


def check_slurmctld(ctx: Context) -> Check:
    r = ctx.host.run(["scontrol", "ping"], None)
    if r.rc == 127:
        return Check("slurmctld", FAIL, "scontrol not found", _tail(r.text),
                     "install the Slurm client (slurm-client)")
    text = r.text
    if r.rc == 0 and re.search(r"\bis UP\b", text) and "DOWN" not in text:
        return Check("slurmctld", PASS, "slurmctld reachable", [text.splitlines()[0]])
    return Check("slurmctld", FAIL, "slurmctld not reachable", _tail(text),
                 "check slurmctld on the controller (SlurmctldHost) and that this host resolves "
                 "and reaches it (port 6817); munge errors also show here")


def check_slurm_node(ctx: Context, controller_down: bool = False) -> Check:
    # The scontrol -o key=value reader of the Slurm backend (values may hold blanks).
    from hpcjobs.slurm import _kv

    name = ctx.slurm_name
    r = ctx.host.run(["scontrol", "-o", "show", "node", name], None)
    in_profile = ctx.node is not None or "SLURMD_NODENAME" in ctx.host.env
    if r.rc == 127:
        return Check("slurm-node", SKIP, "scontrol not found")
    if controller_down:
        return Check("slurm-node", SKIP, "slurmctld not reachable: cannot ask about this node")
    if r.rc != 0 or "NodeName=" not in r.out:
        if not in_profile:
            return Check("slurm-node", SKIP, f"{name} is not a Slurm node (a login host?)",
                         _tail(r.text), "run it on a compute node: srun -N1 hpcjobs doctor")
        return Check("slurm-node", FAIL, f"Slurm does not know node {name}", _tail(r.text),
                     "add it to slurm.conf (NodeName=...) and restart slurmctld/slurmd")
    kv = _kv(r.out.strip().splitlines()[0])
    state = kv.get("State", "?")
    gres = kv.get("Gres", "(null)")
    evidence = [" ".join(f"{k}={kv.get(k, '?')}" for k in ("NodeName", "State", "Gres", "CPUTot",
                                                             "RealMemory"))]
    if kv.get("Reason"):
        evidence.append(f"Reason={kv['Reason']}")
    flags = set(re.split(r"[+*]", state))
    bad = flags & {"DOWN", "DRAIN", "DRAINED", "DRAINING", "FAIL", "INVAL", "NOT_RESPONDING",
                   "POWERED_DOWN", "UNKNOWN"} or ({"NOT_RESPONDING"} if "*" in state else set())
    if bad:
        return Check("slurm-node", FAIL, f"node {name} is {state}", evidence,
                     f"read Reason above; after fixing: scontrol update nodename={name} state=resume")
    node = ctx.node
    if node is not None and node.gpu is not None:
        want = f"gpu:{node.gpu.type}:{node.gpu.count}"
        have = [g.split("(")[0] for g in gres.split(",")]
        if want not in have:
            return Check("slurm-node", FAIL, f"node {name} has Gres={gres}, the profile says {want}",
                         evidence, "make slurm.conf NodeName Gres= and gres.conf match the profile "
                         "(the type must match the NVML name: slurmd -G)")
    elif node is not None and gres not in ("(null)", "", "None"):
        return Check("slurm-node", WARN, f"node {name} has Gres={gres}, the profile lists no GPU",
                     evidence, "add [nodes.gpu] to the profile")
    return Check("slurm-node", PASS, f"node {name} {state}, Gres={gres}", evidence)


def check_environment(ctx: Context) -> list[Check]:
    """Variables that contradict FACTS.md (the old guide's settings, debug left on)."""
    env, out = ctx.host.env, []
    port = ctx.usable_port
    native_ib = port is not None and port.link_layer == "InfiniBand"
    if "NCCL_IB_GID_INDEX" in env and native_ib:
        out.append(Check("env:NCCL_IB_GID_INDEX", WARN,
                         f"NCCL_IB_GID_INDEX={env['NCCL_IB_GID_INDEX']} on native InfiniBand: NCCL "
                         "ignores it (GID index 0); it only matters on RoCE",
                         [f"{port.name} link layer InfiniBand"], "unset NCCL_IB_GID_INDEX"))
    elif "NCCL_IB_GID_INDEX" in env and port is not None and port.link_layer == "Ethernet":
        out.append(_check_gid(ctx, port, env["NCCL_IB_GID_INDEX"]))
    ib = env.get("NCCL_IB_DISABLE")
    if ib is not None and ib.strip() == "0":
        out.append(Check("env:NCCL_IB_DISABLE", WARN, "NCCL_IB_DISABLE=0 is a no-op (0 is the default)",
                         ["NCCL_IB_DISABLE=0"], "unset it; it suggests IB is forced on when it is not"))
    elif ib is not None and ib.strip() == "1" and port is not None:
        out.append(Check("env:NCCL_IB_DISABLE", FAIL, f"NCCL_IB_DISABLE=1 forces TCP sockets although "
                         f"{port.name} is ACTIVE", [f"NCCL_IB_DISABLE={ib}"], "unset NCCL_IB_DISABLE"))
    dbg = env.get("NCCL_DEBUG", "")
    if dbg.upper() in ("INFO", "TRACE"):
        out.append(Check("env:NCCL_DEBUG", WARN, f"NCCL_DEBUG={dbg} left on: megabytes of log per "
                         "job and slower start-up", [f"NCCL_DEBUG={dbg}"],
                         "NCCL_DEBUG=WARN for normal runs; hpcjobs submit --nccl-debug for one job"))
    for var in ("OMPI_MCA_btl", "OMPI_MCA_btl_base_include"):
        v = env.get(var, "")
        parts = [p.strip() for p in v.lstrip("^").split(",")]
        if "openib" in parts and not v.startswith("^"):
            out.append(Check(f"env:{var}", FAIL, f"{var}={v}: the openib BTL is gone in Open MPI 5 "
                             "(deprecated in 4)", [f"{var}={v}"],
                             "unset it; use OMPI_MCA_pml=ucx (UCX_NET_DEVICES=dev:port) or srun "
                             "--mpi=pmix"))
        elif "vader" in parts and not v.startswith("^"):
            out.append(Check(f"env:{var}", WARN, f"{var}={v}: vader is called sm in Open MPI 5",
                             [f"{var}={v}"], "write sm, or leave the BTL choice to Open MPI"))
    for var, dev_of in (("NCCL_IB_HCA", _hca_devices), ("UCX_NET_DEVICES", _ucx_devices)):
        if var in env and ctx.ports:
            names = {p.device for p in ctx.ports}
            missing = [d for d in dev_of(env[var]) if d not in names]
            if missing:
                out.append(Check(f"env:{var}", FAIL, f"{var}={env[var]} names {', '.join(missing)}, "
                                 "which this node does not have",
                                 [f"RDMA devices: {', '.join(sorted(names))}"],
                                 f"unset {var} (hpcjobs.launch sets it from sysfs) or fix it"))
    if not out:
        seen = sorted(k for k in env if k.startswith(("NCCL_", "UCX_", "OMPI_MCA_")))
        out.append(Check("environment", PASS, "no NCCL/UCX/MPI variable contradicts the fabric",
                         [f"set: {', '.join(seen)}" if seen else "none set"]))
    return out


def _hca_devices(value: str) -> list[str]:
    v = value.lstrip("=")
    if v.startswith("^"):
        return []  # an exclusion list names what is not used
    return [item.split(":")[0] for item in v.split(",") if item]


def _ucx_devices(value: str) -> list[str]:
    return [item.split(":")[0] for item in value.split(",")
            if item and item != "all" and ":" in item]


def _check_gid(ctx: Context, port: Port, index: str) -> Check:
    base = f"class/infiniband/{port.device}/ports/{port.port}"
    gid = ctx.host.read(f"{base}/gids/{index}")
    typ = ctx.host.read(f"{base}/gid_attrs/types/{index}")
    evidence = [f"gids/{index}: {gid}", f"gid_attrs/types/{index}: {typ}"]
    from hpcjobs.launch.fabric import ipv4_mapped

    if gid and typ == "RoCE v2" and ipv4_mapped(gid):
        return Check("env:NCCL_IB_GID_INDEX", PASS, f"NCCL_IB_GID_INDEX={index}: RoCE v2, IPv4",
                     evidence)
    return Check("env:NCCL_IB_GID_INDEX", FAIL, f"NCCL_IB_GID_INDEX={index} is not a RoCE v2 IPv4 "
                 f"GID on {port.name}", evidence,
                 "unset it (hpcjobs.launch picks the RoCE v2 IPv4 GID) or pick that index")


# --- the run --------------------------------------------------------------------------------

@dataclass
class Report:
    host: str
    node: str | None
    cluster: str
    profile: str
    fabric: str  # the one-line fabric verdict
    checks: list[Check]

    @property
    def failures(self) -> int:
        return sum(c.status == FAIL for c in self.checks)

    @property
    def warnings(self) -> int:
        return sum(c.status == WARN for c in self.checks)

    @property
    def ok(self) -> bool:
        return self.failures == 0

    @property
    def verdict(self) -> str:
        tail = f"{self.failures} failure(s), {self.warnings} warning(s)"
        return f"{self.fabric}; {tail}"

    def to_dict(self) -> dict:
        return {"host": self.host, "node": self.node, "cluster": self.cluster,
                "profile": self.profile, "ok": self.ok, "failures": self.failures,
                "warnings": self.warnings, "fabric": self.fabric, "verdict": self.verdict,
                "checks": [c.to_dict() for c in self.checks]}

    def text(self) -> str:
        head = (f"hpcjobs doctor on {self.host} (node {self.node or '-'}, cluster {self.cluster}, "
                f"profile {self.profile})")
        lines = [head]
        for c in self.checks:
            lines.append(f"{c.status.upper():<5} {c.name:<22} {c.summary}")
            if c.status != PASS or len(c.evidence) > 0:
                for e in c.evidence:
                    lines.append(f"{'':<6}  seen: {e}")
            if c.fix and c.status in (WARN, FAIL):
                lines.append(f"{'':<6}  fix:  {c.fix}")
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)


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


CHECK_NAMES = ("rdma", "interface", "gpudirect-rdma", "gpu-nic-path", "memlock", "munge",
               "slurmctld", "slurm-node", "environment")


def diagnose(cluster, host: Host | None = None, *, node_name: str | None = None) -> Report:
    """Run every check on ``host`` (default: this machine) against the cluster profile."""
    host = host or Host.real()
    ports = rdma_ports(host)
    addresses, source = local_addresses(host)
    node, slurm_name = identify(host, cluster, addresses)
    if node_name:
        node, slurm_name = cluster.node(node_name), node_name
    ctx = Context(host, cluster, node, slurm_name, ports, addresses, source)
    gdr = check_gdr(ctx)
    ctld = check_slurmctld(ctx)
    checks = [check_rdma(ctx), check_interface(ctx), gdr, check_gpu_nic(ctx), check_memlock(ctx),
              check_munge(ctx), ctld, check_slurm_node(ctx, ctld.status == FAIL),
              *check_environment(ctx)]
    return Report(host=host.hostname, node=node.name if node else None, cluster=cluster.name,
                  profile=cluster.source, fabric=fabric_verdict(ctx, gdr), checks=checks)


@click.command("doctor", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--node", "node_name", metavar="NAME",
              help="Check as this profile/Slurm node (default: SLURMD_NODENAME, the host name, or "
                   "the node whose address this host has).")
@click.option("--cluster", "cluster_file", metavar="FILE", help="Cluster profile (TOML).")
@click.pass_context
def doctor_cmd(ctx: click.Context, as_json: bool, node_name: str | None, cluster_file: str | None):
    """Check this node for fast distributed jobs: RDMA, IPoIB, GPUDirect, memlock, munge, Slurm.

    Each check prints pass/warn/fail/skip with what it saw and the fix. Exit 0 when nothing
    failed, 1 on failures. Inside a job: srun -N1 hpcjobs doctor.
    """
    from hpcjobs.cli import cluster_of, fail
    from hpcjobs.errors import HpcjobsError

    try:
        cluster = cluster_of(ctx, cluster_file)
        if node_name and cluster.node(node_name) is None:
            from hpcjobs.errors import BadInput

            raise BadInput("--node", f"no node {node_name!r} in cluster {cluster.name!r}",
                           f"use one of: {', '.join(n.name for n in cluster.nodes)}")
        report = diagnose(cluster, node_name=node_name)
    except HpcjobsError as err:
        fail(err)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.text())
    sys.exit(0 if report.ok else 1)
