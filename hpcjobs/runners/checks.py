"""Node checks shared by ``hpcjobs doctor`` and the preflight step, on plain values.

A :class:`Check` is one answer: pass / warn / fail / skip, the evidence seen and the fix. The
checks here take what was read (RDMA ports from hpcjobs.launch.fabric, the locked-memory limit,
``nvidia-smi topo -m`` output) and the profile's fabric, so that the doctor (services layer, on
any host) and the preflight (job side, on every node of a job) judge a node by one set of rules.
The rules' sources: the kernel's sysfs ABI for ports and rates, the Slurm FAQ (#memlock) for
locked memory, NCCL src/graph/paths.cc for the GPU-NIC path (NCCL_NET_GDR_LEVEL defaults to PXB).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from hpcjobs.launch.fabric import ACTIVE, Port
from hpcjobs.outcome import FAIL, PASS, SKIP, WARN
from hpcjobs.runners.cmd import CmdResult, tail


@dataclass
class Check:
    name: str
    status: str  # pass | warn | fail | skip
    summary: str
    evidence: list[str] = field(default_factory=list)
    fix: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def human_bytes(n: int) -> str:
    if n < 0:
        return "unlimited"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"


# --- locked memory ---------------------------------------------------------------------------

def memlock_check(soft: int, hard: int, in_job: bool, rdma: bool) -> Check:
    """RLIMIT_MEMLOCK (bytes, -1 unlimited): RDMA registration needs it unlimited (fail when the
    node has RDMA), pinned host memory counts against it (warn otherwise)."""
    evidence = [f"RLIMIT_MEMLOCK soft {human_bytes(soft)}, hard {human_bytes(hard)}"]
    if soft == -1:
        return Check("memlock", PASS, "locked memory unlimited", evidence)
    fix = ("slurm.conf PropagateResourceLimitsExcept=MEMLOCK and LimitMEMLOCK=infinity for slurmd "
           "(jobs otherwise inherit the submitting shell's limit)" if in_job else
           "`* - memlock unlimited` in /etc/security/limits.d/ (and for jobs: slurm.conf "
           "PropagateResourceLimitsExcept=MEMLOCK, LimitMEMLOCK=infinity for slurmd)")
    if soft < hard or hard == -1:
        fix = f"`ulimit -l unlimited` (the hard limit allows it) or {fix}"
    where = " in this job step" if in_job else ""
    if rdma:
        return Check("memlock", FAIL, f"locked memory limited to {human_bytes(soft)}{where}: "
                     "RDMA memory registration fails (NCCL 'ibv_reg_mr failed', UCX errors)",
                     evidence, fix)
    return Check("memlock", WARN, f"locked memory limited to {human_bytes(soft)}{where}: pinned "
                 "host memory (DataLoader pin_memory, DeepSpeed offload) counts against it",
                 evidence, fix)


# --- RDMA port -------------------------------------------------------------------------------

NO_RDMA = "no RDMA device: NCCL and MPI will use TCP sockets"


def describe(port: Port) -> str:
    return (f"{port.name}: state {port.state or '?'}, phys {port.phys_state or '?'}, "
            f"link layer {port.link_layer or '?'}, rate {port.rate or '?'}")


def rate_gbps(port: Port) -> float | None:
    """``"100 Gb/sec (4X EDR)"`` -> 100.0, as the kernel prints the rate."""
    m = re.match(r"\s*([\d.]+)\s*Gb/sec", port.rate)
    return float(m.group(1)) if m else None


def wanted_port(ports: list[Port], fabric) -> Port | None:
    """The profile's port (``fabric``: hpcjobs.cluster.Fabric or alike) among ``ports``."""
    return next((p for p in ports if p.dev == fabric.device and p.port == fabric.port), None)


def _kind_of(port: Port) -> str:
    return "roce" if port.link_layer == "Ethernet" else "infiniband"


def rdma_check(ports: list[Port], fabric) -> Check:
    """The profile's RDMA port exists, is ACTIVE, has the profile's link layer and trained at
    the profile's rate."""
    f = fabric
    want = f"{f.device}:{f.port}" if f.device else None
    evidence = [describe(p) for p in ports] or ["/sys/class/infiniband: no devices"]
    expects_rdma = f.kind in ("infiniband", "roce")
    if not ports:
        return Check("rdma", FAIL if expects_rdma else WARN, NO_RDMA, evidence,
                     f"the profile says {f.kind} on {want}: load the driver (modprobe mlx5_ib), "
                     "then check `ibstat` / `ibv_devinfo`" if expects_rdma else
                     "expected on a cluster without InfiniBand/RoCE; bandwidth is bounded by TCP")
    port = wanted_port(ports, f)
    if want and port is None:
        others = ", ".join(p.name for p in ports)
        return Check("rdma", FAIL if expects_rdma else WARN,
                     f"the profile's port {want} does not exist here (found {others})", evidence,
                     "fix [fabric] device/port in the cluster profile, or the NIC's driver")
    if port is None:  # ethernet profile, RDMA ports present anyway
        active = [p for p in ports if p.state == ACTIVE]
        return Check("rdma", PASS if active else WARN,
                     f"RDMA ports present ({', '.join(p.name for p in ports)}) but the profile "
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


# --- GPU-NIC path (nvidia-smi topo -m) --------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
PATH_KINDS = ("PIX", "PXB", "PHB", "NODE", "SYS")
GDR_PATHS = ("PIX", "PXB")  # NCCL_NET_GDR_LEVEL defaults to PXB (nccl src/graph/paths.cc)


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


def worst_path(topo: Topo, device: str | None) -> str | None:
    """The farthest GPU-``device`` path of the node (the one that decides GDR), or None."""
    worst = None
    for gpu in topo.gpus:
        p = topo.path_to(gpu, device) if device else None
        if p in PATH_KINDS and (worst is None or PATH_KINDS.index(p) > PATH_KINDS.index(worst)):
            worst = p
    return worst


def gpu_nic_check(topo_run: CmdResult, device: str | None) -> Check:
    """Judge ``nvidia-smi topo -m`` (as run): every GPU within PXB of ``device``, as NCCL needs
    for GPUDirect RDMA by default."""
    r = topo_run
    if r.rc == 127:
        return Check("gpu-nic-path", SKIP, "nvidia-smi not found: no NVIDIA GPU here")
    if r.rc != 0:
        return Check("gpu-nic-path", WARN, "nvidia-smi topo -m failed", tail(r.text),
                     "check the NVIDIA driver (nvidia-smi)")
    topo = parse_topo(r.out)
    if not topo.gpus:
        return Check("gpu-nic-path", SKIP, "nvidia-smi shows no GPU", tail(r.out))
    if not topo.nics or device not in topo.nics.values():
        return Check("gpu-nic-path", WARN, f"nvidia-smi topo -m does not show {device}",
                     [f"NICs shown: {', '.join(topo.nics.values()) or 'none'}"],
                     "check that the NIC's driver is loaded and [fabric] device in the profile")
    evidence = []
    for gpu in topo.gpus:
        p = topo.path_to(gpu, device) or "?"
        line = f"{gpu} -> {device}: {p}"
        near = min(((v, label) for label, v in topo.path[gpu].items() if v in PATH_KINDS),
                   key=lambda x: PATH_KINDS.index(x[0]), default=None)
        if near and p in PATH_KINDS and PATH_KINDS.index(near[0]) < PATH_KINDS.index(p):
            line += f" (nearest NIC: {topo.nics[near[1]]}, {near[0]})"
        evidence.append(line)
    worst = worst_path(topo, device)
    if worst is None:
        return Check("gpu-nic-path", WARN, "could not read the GPU-NIC path", evidence)
    if worst in GDR_PATHS:
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
