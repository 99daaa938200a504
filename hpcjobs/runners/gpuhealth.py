"""Are this node's GPUs the ones the profile promises, and fit to start a job? (NVML)

Asked through NVML (nvidia-ml-py's ``pynvml``: NVIDIA's own advice for tools, as nvidia-smi's
output is not kept stable), before the job's framework creates any CUDA context:

- ``gpus``: at least the GPUs the job has on this node are visible (Slurm's SLURM_GPUS_ON_NODE,
  else the profile's count), of the profile's model;
- ``gpu-health``: no uncorrected ECC error since the driver loaded (volatile counter), no page
  retirement pending (Volta: needs a GPU reset), no row remapping pending or failed (Ampere+),
  and XID errors of these GPUs in the kernel log, where this process may read it;
- ``gpu-memory``: no other process holds memory on them (a leftover of an earlier job, or a
  neighbour on a shared node): the program would run out of memory, or slower.

:func:`probe` reads, :func:`judge` decides: the unit tests feed a fake NVML whose answers follow
those recorded on an H200 (tests/fixtures/gpu/h200_nvml.txt).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from hpcjobs.outcome import FAIL, PASS, SKIP, WARN
from hpcjobs.runners.checks import Check, human_bytes

# nvml.h: NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC, NVML_FEATURE_ENABLED.
_UNCORRECTED, _VOLATILE, _ENABLED = 1, 0, 1
# Memory in use on an idle GPU is the driver's own (~0.6 GB seen on an H200); more than this
# with no process listed is someone this process cannot see (another PID namespace).
IDLE_USED = 2 << 30
_XID = re.compile(r"NVRM: Xid \(PCI:([0-9a-fA-F:.]+)\): (\d+)")


@dataclass
class GpuState:
    index: int
    name: str
    bus_id: str  # "00000000:3B:00.0"
    uuid: str = ""
    ecc_uncorrected: int | None = None  # None: not supported (no ECC, or consumer GPUs)
    retired_pending: bool | None = None
    remap_pending: bool | None = None
    remap_failed: bool | None = None
    mem_used: int | None = None
    mem_total: int | None = None
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes)


def _try(nvml, fn: str, *args):
    f = getattr(nvml, fn, None)
    if f is None:
        return None
    try:
        return f(*args)
    except nvml.NVMLError:
        return None


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def probe(nvml) -> list[GpuState]:
    """Every GPU NVML shows this process (all of the node's, or the job's under a device cgroup)."""
    out = []
    for i in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        pci = _try(nvml, "nvmlDeviceGetPciInfo", h)
        mem = _try(nvml, "nvmlDeviceGetMemoryInfo", h)
        remap = _try(nvml, "nvmlDeviceGetRemappedRows", h)  # (corr, unc, pending, failure)
        retired = _try(nvml, "nvmlDeviceGetRetiredPagesPendingStatus", h)
        procs = _try(nvml, "nvmlDeviceGetComputeRunningProcesses", h) or []
        out.append(GpuState(
            index=i, name=_text(_try(nvml, "nvmlDeviceGetName", h) or "?"),
            bus_id=_text(getattr(pci, "busId", "")) if pci is not None else "",
            uuid=_text(_try(nvml, "nvmlDeviceGetUUID", h) or ""),
            ecc_uncorrected=_try(nvml, "nvmlDeviceGetTotalEccErrors", h, _UNCORRECTED, _VOLATILE),
            retired_pending=None if retired is None else retired == _ENABLED,
            remap_pending=None if remap is None else bool(remap[2]),
            remap_failed=None if remap is None else bool(remap[3]),
            mem_used=int(mem.used) if mem is not None else None,
            mem_total=int(mem.total) if mem is not None else None,
            processes=[(int(p.pid), getattr(p, "usedGpuMemory", None)) for p in procs]))
    return out


def kernel_xids(path: str = "/dev/kmsg", limit: int = 4096) -> tuple[list[tuple[str, int, str]] | None, str]:
    """(bus id, XID, line) of the kernel log's "NVRM: Xid" lines since boot, or None and why
    (``/dev/kmsg`` is root's only where kernel.dmesg_restrict=1, the usual setting)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        return None, f"{path} not readable ({e.strerror}): XIDs not checked"
    found = []
    try:
        for _ in range(limit):
            try:
                rec = os.read(fd, 8192).decode("utf-8", "replace")
            except BlockingIOError:
                break  # the end of the ring buffer
            except OSError:
                continue  # EPIPE: a record was overwritten while reading; go on
            if not rec:
                break  # a plain file (tests) ends; /dev/kmsg gives one record per read
            for line in rec.splitlines():
                msg = line.split(";", 1)[-1].strip()  # "prio,seq,usec,flags;text"
                m = _XID.search(msg)
                if m:
                    found.append((m.group(1).lower(), int(m.group(2)), msg[:200]))
    finally:
        os.close(fd)
    return found, f"{path}"


def _bus_key(bus: str) -> str:
    """"00000000:3B:00.0" and "0000:3b:00" compare equal."""
    parts = bus.lower().split(":")
    return ":".join(parts[-2:]).split(".")[0] if len(parts) >= 2 else bus.lower()


def judge(gpus: list[GpuState], *, expected: int, model: str = "",
          xids: list[tuple[str, int, str]] | None = None, xid_note: str = "",
          own_pids: set[int] | None = None) -> list[Check]:
    """The three GPU checks of one node from what :func:`probe` read."""
    seen = [f"GPU{g.index} {g.name} {g.bus_id}" for g in gpus]
    if len(gpus) < expected:
        count = Check("gpus", FAIL, f"{len(gpus)} GPU(s) visible, the job has {expected} on "
                      "this node", seen or ["NVML lists no GPU"],
                      "check the driver (nvidia-smi), the node's gres.conf and whether a GPU fell "
                      "off the bus (XID 79 in the kernel log); drain the node until fixed")
    elif model and gpus and not all(model.split(" (")[0] in g.name or g.name in model
                                    for g in gpus):
        count = Check("gpus", WARN, f"GPU model differs from the profile's {model!r}", seen,
                      "correct [nodes.gpu] model in the cluster profile, or the node's gres type")
    else:
        count = Check("gpus", PASS, f"{len(gpus)} GPU(s) visible"
                      + (f", {expected} for this job" if expected else ""), seen)

    bad, notes = [], []
    for g in gpus:
        tag = f"GPU{g.index} {g.bus_id}"
        if g.ecc_uncorrected:
            bad.append(f"{tag}: {g.ecc_uncorrected} uncorrected ECC error(s) since the driver loaded")
        if g.retired_pending:
            bad.append(f"{tag}: page retirement pending (takes effect at the next GPU reset)")
        if g.remap_pending:
            bad.append(f"{tag}: row remapping pending (takes effect at the next GPU reset)")
        if g.remap_failed:
            bad.append(f"{tag}: row remapping failed (the GPU should be replaced)")
    mine = {_bus_key(g.bus_id) for g in gpus}
    for bus, xid, line in xids or []:
        if _bus_key(bus) in mine:
            notes.append(f"XID {xid}: {line}")
    if bad:
        health = Check("gpu-health", FAIL, bad[0], bad + notes[-3:],
                       "drain the node (scontrol update nodename=... state=drain reason=gpu) and "
                       "reset the GPU (nvidia-smi -r with no process on it) or replace it")
    elif notes:
        health = Check("gpu-health", WARN, f"{len(notes)} XID error(s) in the kernel log for "
                       "these GPUs since boot", notes[-3:],
                       "read them (NVIDIA's XID catalogue); a GPU that logs XID 48/79/94/95 again "
                       "needs a reset or replacement")
    else:
        ecc = [g for g in gpus if g.ecc_uncorrected is not None]
        health = Check("gpu-health", PASS, "no uncorrected ECC error, no retirement or remapping "
                       "pending" + ("" if xids is not None else f"; {xid_note}"),
                       [f"ECC counters read on {len(ecc)} of {len(gpus)} GPU(s)"]
                       + ([xid_note] if xids is None and xid_note else []))

    own = own_pids or set()
    held = []
    for g in gpus:
        others = [(pid, b) for pid, b in g.processes if pid not in own]
        if others:
            held += [f"GPU{g.index}: pid {pid} holds {human_bytes(b) if b else '?'}"
                     for pid, b in others]
        elif not g.processes and g.mem_used is not None and g.mem_used > IDLE_USED:
            held.append(f"GPU{g.index}: {human_bytes(g.mem_used)} of "
                        f"{human_bytes(g.mem_total or 0)} used by no process visible here")
    if held:
        memory = Check("gpu-memory", FAIL, "another process holds GPU memory before the program "
                       "starts", held, "find it (nvidia-smi on the node): a leftover of an "
                       "earlier job (kill it; check the node's epilog) or a job sharing the node "
                       "(--exclusive)")
    else:
        memory = Check("gpu-memory", PASS, "no other process on these GPUs",
                       [f"GPU{g.index}: {human_bytes(g.mem_used)} used" for g in gpus
                        if g.mem_used is not None][:4])
    return [count, health, memory]


def node_checks(expected: int, model: str = "") -> list[Check]:
    """The GPU checks of this node, or one skip saying why they do not apply here."""
    if not os.path.isdir("/proc/driver/nvidia"):
        return [Check("gpus", SKIP, "no NVIDIA driver on this node (/proc/driver/nvidia): the "
                      "GPU checks do not apply")]
    try:
        import pynvml
    except ImportError:
        return [Check("gpus", WARN, "nvidia-ml-py is not installed in the job's Python: the GPU "
                      "checks cannot run", fix="pip install nvidia-ml-py (scripts/install "
                      "installs it)")]
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return [Check("gpus", FAIL, f"NVML does not start: {e}", [str(e)],
                      "the driver is loaded but does not answer: check nvidia-smi, dmesg; "
                      "drain the node until fixed")]
    try:
        gpus = probe(pynvml)
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
    xids, note = kernel_xids()
    return judge(gpus, expected=expected, model=model, xids=xids, xid_note=note,
                 own_pids={os.getpid()})
