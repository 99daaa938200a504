"""The monitor: one light sampler per node beside the job, writing the data of its receipt.

Every job script starts it (job_templates/_monitor.j2) as one ``srun --overlap`` task per node
before the program, and stops it when the job ends (``hpcjobs_at_finish``)::

    python -m hpcjobs.runners.monitor --out DIR [--interval SECONDS]

Each node appends JSON lines to ``DIR/<job>/<node>.jsonl`` (``<job>`` is the job id, or
``ARRAYID_TASK`` for an array task): a ``start`` line (what is sampled and how), a sample every
``--interval`` seconds (default 5), XID events as they come and a ``stop`` line. One
``write(2)`` per line on an ``O_APPEND`` file: a killed monitor leaves whole lines and loses at
most the interval it was in; the reader skips a torn last line and a restarted monitor (a
requeue) closes it first. ``hpcjobs report`` reads the files (hpcjobs/report/, docs/report.md).

What is sampled, and only for this job:

- **processes** (every job): CPU cores used since the last sample, the summed RSS, the largest
  per-process peak RSS (VmHWM, exact between samples) and the count, from /proc. Which
  processes are the job's on this node (:func:`attribution`): the job's cgroup where Slurm
  made one (proctrack/cgroup: exact, daemonized children included); else the descendants of
  the job's slurmstepd processes (proctrack/linuxproc) in this node's UTS namespace (the
  sandbox's nodes share one host and one /proc, each slurmd in its own namespace); else, with
  no slurmstepd to be seen (a container's PID namespace, a launcher run by hand), the
  processes whose environment holds this SLURM_JOB_ID. The monitor's own step is left out.
- **GPUs** (NVML, nvidia-ml-py), only the job's own: :func:`choose_gpus` maps SLURM_STEP_GPUS /
  SLURM_JOB_GPUS / CUDA_VISIBLE_DEVICES to NVML devices, never the whole node's. Per GPU:
  utilisation (the driver's samples since the last read, else the current rate), memory used,
  power, the total-energy counter (mJ, Volta+), SM and memory clocks, temperature, clock event
  (throttle) reasons and the time counters of power capping and thermal slowdown where the
  driver has them; XID errors through an NVML event set.

It must cost the job nothing: it runs at nice 19, imports only the standard library (and
nvidia-ml-py when the job has GPUs), reads a few small files per sample and sleeps in
``sigtimedwait``. Its own CPU time is in every sample (``own``), so each receipt shows what the
monitor cost. Its failure never fails the job: the job script waits on no exit status of it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

SCHEMA = 1
DEFAULT_INTERVAL = 5.0
MIN_INTERVAL = 0.5
MAX_INTERVAL = 3600.0
# USR1: what the job script sends (through srun, which forwards it; SIGTERM would make srun
# SIGKILL its tasks). TERM: Slurm's own at the job's end. INT/HUP: by hand.
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- where the samples go --------------------------------------------------------------------

def job_label(env) -> str:
    """``ARRAYID_TASK`` for an array task (as Slurm and hpcjobs name it), else the job id."""
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return env.get("SLURM_JOB_ID") or f"local-{os.getpid()}"


def node_name(env) -> str:
    return env.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]


def samples_path(out_dir: str, env) -> str:
    return os.path.join(out_dir, job_label(env), f"{node_name(env)}.jsonl")


def _makedirs_private(path: str) -> None:
    """mkdir -p where every directory it makes is 0700: os.makedirs gives its mode to the last
    one only, and the run record's monitor/ would be readable by everyone (umask 022). The
    monitor is one thread here, so the umask is its own to set for a moment."""
    old = os.umask(0o077)
    try:
        os.makedirs(path, exist_ok=True)
    finally:
        os.umask(old)


class Writer:
    """Append-only JSON lines: one write(2) per line, so a kill never leaves half of one in
    the middle of the file."""

    def __init__(self, path: str):
        _makedirs_private(os.path.dirname(path))
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if _ends_torn(path):  # an earlier monitor was killed mid-line: close that line first
            os.write(self.fd, b"\n")

    def write(self, obj: dict) -> None:
        data = (json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n").encode()
        while data:
            n = os.write(self.fd, data)
            data = data[n:]

    def sync(self) -> None:
        # So that the login node sees the samples while the job runs (NFS writes back on
        # fsync or close); a failure is not the job's problem.
        try:
            os.fsync(self.fd)
        except OSError:
            pass

    def close(self) -> None:
        self.sync()
        os.close(self.fd)


def _ends_torn(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            if f.tell() == 0:
                return False
            f.seek(-1, 2)
            return f.read(1) != b"\n"
    except OSError:
        return False


# --- processes -------------------------------------------------------------------------------

@dataclass
class Stat:
    pid: int
    comm: str
    state: str
    ppid: int
    ticks: int  # utime + stime
    start: int  # starttime (ticks since boot): with pid, a process's identity
    rss: int  # bytes


def read_stat(proc: str, pid: int) -> Stat | None:
    """/proc/PID/stat (proc(5)); None when the process is gone."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        # comm may hold blanks and parentheses: it ends at the last ")".
        left, right = data.index(b"("), data.rindex(b")")
        rest = data[right + 2:].split()
        return Stat(pid, data[left + 1:right].decode(errors="replace"), rest[0].decode(),
                    int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[19]),
                    int(rest[21]) * PAGE)
    except (ValueError, IndexError):
        return None


def scan(proc: str) -> dict[int, Stat]:
    out = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return out
    for name in names:
        if name.isdigit():
            st = read_stat(proc, int(name))
            if st is not None:
                out[st.pid] = st
    return out


class ProcTable:
    """The node's processes, read cheaply: one listing of /proc per call, and /proc/PID/stat
    only for new pids and for those asked ``fresh`` (the job's own, whose CPU and RSS change).
    Others keep their last reading: what they are does not change, and the job's new processes
    are new pids. Every ``full_every`` calls all are read again (a pid reused meanwhile).
    Measured on a host with ~470 processes: 11 ms of CPU for a full scan, ~1 ms for this."""

    def __init__(self, proc: str, full_every: int = 12):
        self.proc, self.full_every = proc, full_every
        self.known: dict[int, Stat] = {}
        self.calls = 0

    def read(self, fresh=()) -> dict[int, Stat]:
        try:
            names = os.listdir(self.proc)
        except OSError:
            return {}
        full = self.calls % self.full_every == 0
        self.calls += 1
        fresh = set(fresh)
        out = {}
        for name in names:
            if not name.isdigit():
                continue
            pid = int(name)
            st = self.known.get(pid)
            if full or st is None or pid in fresh:
                st = read_stat(self.proc, pid)
                if st is None:
                    continue
            out[pid] = st
        self.known = out
        return out


def peak_rss(proc: str, pid: int) -> int:
    """VmHWM: the process's own peak RSS (bytes), which no sampling interval can miss."""
    try:
        with open(f"{proc}/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _read(path: str, binary: bool = False):
    try:
        with open(path, "rb" if binary else "r") as f:
            return f.read()
    except OSError:
        return None


def _ns(proc: str, pid: int | str, kind: str = "uts") -> str | None:
    try:
        return os.readlink(f"{proc}/{pid}/ns/{kind}")
    except OSError:
        return None


_STEPD = re.compile(r"^slurmstepd: \[([^\]]+)\]")


class Attribution:
    """Which processes on this node are the job's (not the monitor's own step). ``method``
    names the rule used; :meth:`pids` is asked once per sample."""

    method = "none"
    detail = ""

    def pids(self) -> tuple[list[int], dict[int, Stat]]:
        return [], {}


class CgroupProcs(Attribution):
    """proctrack/cgroup: every process in the job's cgroup on this node (v1 or v2), except
    the monitor's step and slurmstepd itself."""

    method = "cgroup"

    def __init__(self, proc: str, job_dir: str, my_step: str | None):
        self.proc, self.job_dir = proc, job_dir
        self.detail = job_dir
        self.skip = os.path.join(job_dir, f"step_{my_step}") if my_step else None

    def pids(self):
        found: set[int] = set()
        for top, dirs, files in os.walk(self.job_dir):
            if self.skip and (top == self.skip or top.startswith(self.skip + os.sep)):
                dirs[:] = []
                continue
            if "cgroup.procs" in files:
                text = _read(os.path.join(top, "cgroup.procs")) or ""
                found.update(int(x) for x in text.split() if x.isdigit())
        stats = {}
        for pid in found:
            st = read_stat(self.proc, pid)
            if st is not None and st.comm != "slurmstepd":
                stats[pid] = st
        return sorted(stats), stats


class TreeProcs(Attribution):
    """proctrack/linuxproc: the descendants of the job's slurmstepd processes (the
    ``slurmstepd: [JOB.STEP]`` processes, reparented to init) other than the monitor's own,
    in this node's UTS namespace."""

    method = "tree"

    def __init__(self, proc: str, job_id: str, my_pid: int):
        self.proc, self.job_id, self.my_pid = proc, job_id, my_pid
        self.table = ProcTable(proc)
        self.hot: set[int] = set()  # the job's processes and stepds of the last call: read fresh
        self.my_uts = _ns(proc, "self")
        self._label: dict[tuple[int, int], str | None] = {}
        self._here: dict[tuple[int, int], bool] = {}
        self.detail = f"descendants of slurmstepd [{job_id}.*] in {self.my_uts}"

    def label(self, st: Stat) -> str | None:
        key = (st.pid, st.start)
        if key not in self._label:
            raw = _read(f"{self.proc}/{st.pid}/cmdline", True) or b""
            m = _STEPD.match(raw.replace(b"\0", b" ").decode(errors="replace"))
            self._label[key] = m.group(1) if m else None
        return self._label[key]

    def stepds(self, stats: dict[int, Stat]) -> dict[int, str]:
        out = {}
        for pid, st in stats.items():
            if st.comm == "slurmstepd":
                lab = self.label(st)
                if lab and lab.split(".")[0] == self.job_id:
                    out[pid] = lab
        return out

    def mine(self, stats: dict[int, Stat], stepds: dict[int, str]) -> int | None:
        """The slurmstepd of the monitor's own step: its nearest such ancestor."""
        pid, hops = self.my_pid, 0
        while pid > 1 and hops < 64:
            st = stats.get(pid)
            if st is None:
                return None
            if pid in stepds:
                return pid
            pid, hops = st.ppid, hops + 1
        return None

    def here(self, st: Stat) -> bool:
        """On this node: the same UTS namespace as the monitor (on a real cluster every
        process of the host is). A process we may not inspect (another user's) counts."""
        key = (st.pid, st.start)
        if key not in self._here:
            ns = _ns(self.proc, st.pid)
            self._here[key] = ns is None or self.my_uts is None or ns == self.my_uts
        return self._here[key]

    def pids(self):
        stats = self.table.read(self.hot | {self.my_pid})
        stepds = self.stepds(stats)
        own = self.mine(stats, stepds)
        children: dict[int, list[int]] = {}
        for pid, st in stats.items():
            children.setdefault(st.ppid, []).append(pid)
        out, todo = [], [p for p in stepds if p != own]
        while todo:
            pid = todo.pop()
            for c in children.get(pid, ()):
                if c in stepds or c == self.my_pid:
                    continue
                if self.here(stats[c]):
                    out.append(c)
                todo.append(c)
        self.hot = set(out) | set(stepds)
        self._forget(stats)
        return sorted(out), stats

    def _forget(self, stats: dict[int, Stat]) -> None:
        if len(self._here) + len(self._label) > 4 * len(stats) + 256:
            live = {(p, s.start) for p, s in stats.items()}
            self._here = {k: v for k, v in self._here.items() if k in live}
            self._label = {k: v for k, v in self._label.items() if k in live}


class EnvironProcs(Attribution):
    """No slurmstepd in sight: processes of this user whose environment has this job's
    SLURM_JOB_ID (and this node's SLURMD_NODENAME), not of the monitor's step. Reading another
    process's environment needs the same uid; what a process started with is all it shows."""

    method = "environ"

    def __init__(self, proc: str, job_id: str, node: str | None, my_step: str | None,
                 my_pid: int):
        self.proc, self.my_pid = proc, my_pid
        self.want = f"SLURM_JOB_ID={job_id}".encode()
        self.node = f"SLURMD_NODENAME={node}".encode() if node else None
        self.step = f"SLURM_STEP_ID={my_step}".encode() if my_step is not None else None
        self.uid = os.getuid()
        self.table = ProcTable(proc)
        self.hot: set[int] = set()
        self._seen: dict[tuple[int, int], bool] = {}
        self.detail = f"environment SLURM_JOB_ID={job_id}"

    def ours(self, st: Stat) -> bool:
        key = (st.pid, st.start)
        if key not in self._seen:
            ok = False
            try:
                if os.stat(f"{self.proc}/{st.pid}").st_uid == self.uid or self.uid == 0:
                    env = (_read(f"{self.proc}/{st.pid}/environ", True) or b"").split(b"\0")
                    ok = (self.want in env and (self.node is None or self.node in env
                                                or not any(e.startswith(b"SLURMD_NODENAME=") for e in env))
                          and not (self.step and self.step in env))
            except OSError:
                ok = False
            self._seen[key] = ok
        return self._seen[key]

    def pids(self):
        stats = self.table.read(self.hot)
        out = [p for p, st in stats.items() if p != self.my_pid and self.ours(st)]
        self.hot = set(out)
        if len(self._seen) > 4 * len(stats) + 256:
            live = {(p, s.start) for p, s in stats.items()}
            self._seen = {k: v for k, v in self._seen.items() if k in live}
        return sorted(out), stats


def job_cgroup(proc: str, cgroup_root: str, job_id: str) -> str | None:
    """The directory of this job's cgroup on this node, if Slurm made one (proctrack/cgroup:
    v2 ``.../slurmstepd.scope/job_N``, v1 ``<controller>/slurm/uid_U/job_N``)."""
    text = _read(f"{proc}/self/cgroup") or ""
    pat = re.compile(rf"^(.*/job_{re.escape(job_id)})(/|$)")
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, path = parts[1], parts[2]
        m = pat.match(path)
        if not m:
            continue
        tops = [""] if not controllers else [controllers, *controllers.split(",")]
        for top in tops:
            cand = os.path.join(cgroup_root, top, m.group(1).lstrip("/"))
            if os.path.isdir(cand):
                return cand
    return None


def attribution(env, *, proc: str = "/proc", cgroup_root: str = "/sys/fs/cgroup",
                my_pid: int | None = None) -> Attribution:
    """The most exact rule this node allows (module docstring)."""
    job = env.get("SLURM_JOB_ID")
    if not job:
        return Attribution()
    my_pid = os.getpid() if my_pid is None else my_pid
    step = env.get("SLURM_STEP_ID")
    where = job_cgroup(proc, cgroup_root, job)
    if where:
        return CgroupProcs(proc, where, step)
    tree = TreeProcs(proc, job, my_pid)
    stats = scan(proc)
    if tree.mine(stats, tree.stepds(stats)) is not None:
        return tree
    return EnvironProcs(proc, job, env.get("SLURMD_NODENAME"), step, my_pid)


class ProcMeter:
    """CPU, RSS and peak RSS of the job's processes, per sample."""

    def __init__(self, who: Attribution, proc: str = "/proc", born: int | None = None):
        self.who, self.proc = who, proc
        self.last: dict[tuple[int, int], int] = {}
        self.cpu_seconds = 0.0
        self.at: float | None = None
        # Processes that started after the monitor count from their start even in the first
        # sample (the program's start-up); older ones (the batch shell) from the first sample.
        if born is None:
            me = read_stat("/proc", os.getpid())
            born = me.start if me is not None else None
        self.born = born

    def sample(self, now: float) -> dict:
        pids, stats = self.who.pids()
        ticks, rss, hwm, current = 0, 0, 0, {}
        for pid in pids:
            st = stats[pid]
            if st.state == "Z":
                continue
            key = (pid, st.start)
            current[key] = st.ticks
            if self.at is not None or (self.born is not None and st.start >= self.born):
                ticks += st.ticks - self.last.get(key, 0)
            rss += st.rss
            hwm = max(hwm, peak_rss(self.proc, pid))
        self.last = current
        cpu = max(0, ticks) / CLK_TCK
        self.cpu_seconds += cpu
        cores = cpu / (now - self.at) if self.at is not None and now > self.at else 0.0
        self.at = now
        return {"c": round(cores, 3), "cs": round(self.cpu_seconds, 2), "rss": rss, "hwm": hwm,
                "n": len(current)}


# --- GPUs ------------------------------------------------------------------------------------

# Clock event ("throttle") reasons, nvml.h nvmlClocksEventReason*.
REASONS = {0x1: "idle", 0x2: "app_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
           0x10: "sync_boost", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake",
           0x100: "display_clocks"}
# Field ids (nvml.h) of the time spent in a clock event, in ns since the driver loaded:
# NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP (= PERF_POLICY_POWER, 74), SW/HW thermal
# slowdown (269, 270), HW power brake (271). Older drivers answer NOT_SUPPORTED per field.
TIME_FIELDS = {"pc": 74, "st": 269, "ht": 270, "pb": 271}
XID_EVENT = 0x8  # nvmlEventTypeXidCriticalError
UTIL_SAMPLES = 1  # NVML_GPU_UTILIZATION_SAMPLES
TIMEOUT = 10  # NVML_ERROR_TIMEOUT


def load_nvml():
    """nvidia-ml-py's module, initialised; raises with the reason it cannot be."""
    try:
        import pynvml
    except ImportError:
        raise RuntimeError("nvidia-ml-py is not installed in the job's Python "
                           "(pip install nvidia-ml-py)") from None
    pynvml.nvmlInit()
    return pynvml


def gpu_ids(env) -> tuple[list[str] | None, str]:
    """The job's GPUs on this node as Slurm (or the user) named them, and the variable.

    SLURM_STEP_GPUS first: slurmstepd sets it per node for the step (the monitor's step has
    all of the job's GPUs there); SLURM_JOB_GPUS is the batch node's list, copied to every
    node. None: the job has no GPU here, and none is sampled."""
    for var in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES"):
        value = env.get(var)
        if value is None:
            continue
        ids = [x.strip() for x in value.split(",") if x.strip()]
        if ids and ids != ["NoDevFiles"]:
            return ids, var
        return None, f"{var} is empty: no GPU in this job"
    return None, "no SLURM_STEP_GPUS, SLURM_JOB_GPUS or CUDA_VISIBLE_DEVICES: no GPU in this job"


def choose_gpus(nvml, ids: list[str], var: str) -> tuple[list, str]:
    """NVML handles of the job's GPUs, and how they were matched.

    - UUIDs (``GPU-...``, as CUDA_VISIBLE_DEVICES may hold): by UUID.
    - NVML sees no more devices than the job has: the device cgroup (ConstrainDevices=yes)
      hides the others and NVML numbers the job's own from 0, so all of them.
    - Otherwise NVML sees the whole node: Slurm's ids are the gres index, i.e. the
      /dev/nvidiaN minor number of gres.conf's File= (what AutoDetect=nvml writes), so by
      minor number; where that fails, as NVML indices (PCI bus order, which is CUDA's under
      CUDA_DEVICE_ORDER=PCI_BUS_ID).
    """
    if any(i.startswith(("GPU-", "MIG-")) for i in ids):
        return [nvml.nvmlDeviceGetHandleByUUID(i) for i in ids], f"by UUID ({var})"
    numbers = [int(i) for i in ids if i.isdigit()]
    count = nvml.nvmlDeviceGetCount()
    if count <= len(numbers):
        return ([nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)],
                f"all {count} NVML device(s): no more than {var}={','.join(ids)} lists")
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    by_minor = {}
    for h in handles:
        try:
            by_minor[nvml.nvmlDeviceGetMinorNumber(h)] = h
        except nvml.NVMLError:
            pass
    if numbers and all(n in by_minor for n in numbers):
        return [by_minor[n] for n in numbers], f"by /dev/nvidia minor number ({var}={','.join(ids)})"
    picked = [handles[n] for n in numbers if n < count]
    return picked, f"by NVML index ({var}={','.join(ids)})"


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Gpus:
    """The job's GPUs on this node, read through ``nvml`` (nvidia-ml-py, or a test's fake)."""

    def __init__(self, nvml, handles: list, how: str):
        self.nvml, self.handles, self.how = nvml, handles, how
        self.info = [self._describe(i, h) for i, h in enumerate(handles)]
        self.last_ts = [0] * len(handles)
        self.has_energy = [g.get("energy", False) for g in self.info]
        self.events, self.events_note = self._events()
        self.uuid_index = {g["uuid"]: i for i, g in enumerate(self.info) if g.get("uuid")}
        # Running time-weighted mean of utilisation ("ua" in each sample): a live view (hpcjobs
        # status) reads the last line only, not the whole file.
        self.util_sum = [0.0] * len(handles)
        self.util_time = [0.0] * len(handles)

    def _try(self, fn_name: str, *args, default=None):
        fn = getattr(self.nvml, fn_name, None)
        if fn is None:
            return default
        try:
            return fn(*args)
        except self.nvml.NVMLError:
            return default

    def _describe(self, i: int, h) -> dict:
        mem = self._try("nvmlDeviceGetMemoryInfo", h)
        pci = self._try("nvmlDeviceGetPciInfo", h)
        energy = self._try("nvmlDeviceGetTotalEnergyConsumption", h)
        out = {"i": i, "uuid": _text(self._try("nvmlDeviceGetUUID", h, default="")),
               "name": _text(self._try("nvmlDeviceGetName", h, default="")),
               "mem": int(mem.total) if mem is not None else None,
               "bus": _text(getattr(pci, "busId", "")) if pci is not None else "",
               "minor": self._try("nvmlDeviceGetMinorNumber", h),
               "power_limit": self._try("nvmlDeviceGetEnforcedPowerLimit", h),
               "energy": energy is not None}
        return out

    def _events(self):
        nv = self.nvml
        if not hasattr(nv, "nvmlEventSetCreate"):
            return None, "this nvidia-ml-py has no event sets"
        try:
            es = nv.nvmlEventSetCreate()
        except nv.NVMLError as e:
            return None, f"no NVML event set: {e}"
        bad = []
        for i, h in enumerate(self.handles):
            try:
                nv.nvmlDeviceRegisterEvents(h, XID_EVENT, es)
            except nv.NVMLError as e:
                bad.append(f"GPU {i}: {e}")
        if len(bad) == len(self.handles):
            return None, "XID events not available (" + "; ".join(bad) + ")"
        return es, "; ".join(bad) or "ok"

    def _util(self, i: int, h, rates) -> float | None:
        """Mean of the driver's utilisation samples since the last read (it keeps a short
        buffer of them): the whole interval, not one instant. Else the current rate."""
        if self.last_ts[i]:
            got = self._try("nvmlDeviceGetSamples", h, UTIL_SAMPLES, self.last_ts[i])
            if got:
                _, samples = got
                vals = [(s.timeStamp, s.sampleValue.uiVal) for s in samples
                        if s.timeStamp > self.last_ts[i]]
                if vals:
                    self.last_ts[i] = max(t for t, _ in vals)
                    return round(sum(v for _, v in vals) / len(vals), 1)
        got = self._try("nvmlDeviceGetSamples", h, UTIL_SAMPLES, 0)
        if got and got[1]:
            self.last_ts[i] = max(s.timeStamp for s in got[1])
        return float(rates.gpu) if rates is not None else None

    def sample(self, dt: float = 0.0) -> list[dict]:
        """One entry per GPU; ``dt``: seconds since the last sample (0 for the first)."""
        out = []
        for i, h in enumerate(self.handles):
            g: dict = {}
            rates = self._try("nvmlDeviceGetUtilizationRates", h)
            u = self._util(i, h, rates)
            if u is not None:
                g["u"] = u
                w = dt if self.util_time[i] else 1e-9  # the first value counts until the next
                self.util_sum[i] += w * u
                self.util_time[i] += w
                g["ua"] = round(self.util_sum[i] / self.util_time[i], 1)
            if rates is not None:
                g["mu"] = rates.memory
            mem = self._try("nvmlDeviceGetMemoryInfo", h)
            if mem is not None:
                g["m"] = int(mem.used)
            for key, fn, args in (("p", "nvmlDeviceGetPowerUsage", ()),
                                  ("sm", "nvmlDeviceGetClockInfo", (1,)),  # NVML_CLOCK_SM
                                  ("mc", "nvmlDeviceGetClockInfo", (2,)),  # NVML_CLOCK_MEM
                                  ("tc", "nvmlDeviceGetTemperature", (0,))):  # NVML_TEMPERATURE_GPU
                v = self._try(fn, h, *args)
                if v is not None:
                    g[key] = int(v)
            if self.has_energy[i]:
                v = self._try("nvmlDeviceGetTotalEnergyConsumption", h)
                if v is not None:
                    g["e"] = int(v)
            r = self._try("nvmlDeviceGetCurrentClocksEventReasons", h)
            if r is None:
                r = self._try("nvmlDeviceGetCurrentClocksThrottleReasons", h)
            if r is not None:
                g["r"] = int(r)
            vals = self._try("nvmlDeviceGetFieldValues", h, list(TIME_FIELDS.values()))
            if vals is not None:
                for key, v in zip(TIME_FIELDS, vals):
                    if getattr(v, "nvmlReturn", 1) == 0:
                        g[key] = int(v.value.ullVal)
            if not g:
                g["err"] = "no answer from NVML"
            out.append(g)
        return out

    def drain_events(self, now: float) -> list[dict]:
        """XID errors the driver reported since the last call (never blocks)."""
        if self.events is None:
            return []
        nv, out = self.nvml, []
        for _ in range(64):
            try:
                data = nv.nvmlEventSetWait(self.events, 0)
            except nv.NVMLError:
                break  # NVML_ERROR_TIMEOUT: none pending
            uuid = _text(self._try("nvmlDeviceGetUUID", data.device, default=""))
            out.append({"k": "xid", "t": round(now, 2), "gpu": self.uuid_index.get(uuid),
                        "xid": int(data.eventData)})
        return out

    def close(self) -> None:
        if self.events is not None:
            self._try("nvmlEventSetFree", self.events)
        self._try("nvmlShutdown")


def open_gpus(env, loader=load_nvml) -> tuple[Gpus | None, str]:
    """The job's GPUs on this node, or None and why not (no GPU in the job, no driver)."""
    ids, var = gpu_ids(env)
    if ids is None:
        return None, var
    try:
        nvml = loader()
    except Exception as e:
        if loader is load_nvml and not os.path.isdir("/proc/driver/nvidia"):
            # The sandbox's placeholder GPUs (gres File=/dev/null), a node without the driver.
            return None, (f"no NVIDIA driver on this node (/proc/driver/nvidia) for "
                          f"{var}={','.join(ids)}")
        return None, f"NVML unavailable: {e or type(e).__name__}"
    try:
        handles, how = choose_gpus(nvml, ids, var)
    except (nvml.NVMLError, ValueError, IndexError) as e:
        return None, f"the job's GPUs ({var}={','.join(ids)}) not found through NVML: {e}"
    if not handles:
        return None, f"no NVML device matches {var}={','.join(ids)}"
    return Gpus(nvml, handles, how), how


# --- the loop --------------------------------------------------------------------------------

def _meminfo_total(proc: str) -> int | None:
    for line in (_read(f"{proc}/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def _own_cpu() -> float:
    t = os.times()
    return round(t.user + t.system, 3)


@dataclass
class Monitor:
    out_dir: str
    interval: float = DEFAULT_INTERVAL
    env: dict = field(default_factory=lambda: dict(os.environ))
    proc: str = "/proc"
    cgroup_root: str = "/sys/fs/cgroup"
    nvml_loader: object = load_nvml

    def header(self, who: Attribution, gpus: Gpus | None, gpu_note: str) -> dict:
        e = self.env
        mem = e.get("SLURM_MEM_PER_NODE")
        return {"k": "start", "v": SCHEMA, "t": round(time.time(), 2), "job": job_label(e),
                "job_id": e.get("SLURM_JOB_ID"), "step": e.get("SLURM_STEP_ID"),
                "node": node_name(e), "restart": int(e.get("SLURM_RESTART_COUNT") or 0),
                "interval": self.interval, "pid": os.getpid(), "procs": who.method,
                "procs_detail": who.detail,
                "cpus": int(e["SLURM_CPUS_ON_NODE"]) if e.get("SLURM_CPUS_ON_NODE", "").isdigit() else None,
                "mem_total": _meminfo_total(self.proc),
                "mem_limit": int(mem) * 2**20 if mem and mem.isdigit() and int(mem) else None,
                "gpus": gpus.info if gpus else [], "gpu_map": gpu_note,
                "xid": gpus.events_note if gpus else None}

    def run(self, stop_after: int | None = None) -> int:
        """Sample until a stop signal (or ``stop_after`` samples, for tests)."""
        # Blocked, then taken by sigtimedwait; the mask is put back at the end, since a signal
        # mask is inherited by every process started later (a caller's, a test's).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return self._run(stop_after)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _run(self, stop_after: int | None) -> int:
        writer = Writer(samples_path(self.out_dir, self.env))
        who = attribution(self.env, proc=self.proc, cgroup_root=self.cgroup_root)
        meter = ProcMeter(who, self.proc)
        gpus, gpu_note = open_gpus(self.env, self.nvml_loader)
        writer.write(self.header(who, gpus, gpu_note))
        why, taken, due = None, 0, time.monotonic()
        while True:
            self._sample(writer, meter, gpus)
            taken += 1
            if why is not None or (stop_after is not None and taken >= stop_after):
                break
            due += self.interval
            now = time.monotonic()
            if due < now:  # late (a suspended job, a stalled file system): no burst to catch up
                due = now + self.interval
            info = signal.sigtimedwait(STOP_SIGNALS, due - now)
            if info is not None:
                why = signal.Signals(info.si_signo).name
        writer.write({"k": "stop", "t": round(time.time(), 2), "why": why or "done",
                      "own": _own_cpu()})
        writer.close()
        if gpus is not None:
            gpus.close()
        return 0

    def _sample(self, writer: Writer, meter: ProcMeter, gpus: Gpus | None) -> None:
        now = time.time()
        dt = now - meter.at if meter.at is not None else 0.0
        try:
            line = {"k": "s", "t": round(now, 2), **meter.sample(now)}
            if gpus is not None:
                line["g"] = gpus.sample(dt)
            line["own"] = _own_cpu()
            writer.write(line)
            if gpus is not None:
                for ev in gpus.drain_events(now):
                    writer.write(ev)
        except Exception as e:
            writer.write({"k": "error", "t": round(now, 2), "msg": f"{type(e).__name__}: {e}"})
        writer.sync()


def interval_value(text: str) -> float:
    v = float(text)
    if not (MIN_INTERVAL <= v <= MAX_INTERVAL):
        raise ValueError(f"must be between {MIN_INTERVAL:g} and {MAX_INTERVAL:g} seconds")
    return v


def main(argv: list[str] | None = None) -> int:
    # First of all: a stop signal that comes while Python starts waits for sigtimedwait
    # instead of killing the monitor before its last sample (the job script waits for the file).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return _main(argv)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _main(argv: list[str] | None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m hpcjobs.runners.monitor",
                                description="Sample this node's share of the job beside it "
                                            "(docs/report.md).")
    p.add_argument("--out", required=True, help="directory of the samples (DIR/<job>/<node>.jsonl)")
    p.add_argument("--interval", type=str, default=str(DEFAULT_INTERVAL),
                   help=f"seconds between samples ({MIN_INTERVAL:g}-{MAX_INTERVAL:g}, "
                        f"default {DEFAULT_INTERVAL:g})")
    args = p.parse_args(argv)
    try:
        interval = interval_value(args.interval)
    except ValueError as e:
        print(f"hpcjobs monitor: --interval {args.interval}: {e}; the job runs without it",
              file=sys.stderr)
        return 2
    try:
        return Monitor(args.out, interval).run()
    except OSError as e:
        # The job goes on without its receipt: say so once in its output.
        print(f"hpcjobs monitor: cannot write samples ({e}); the job runs without them",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    try:
        os.nice(19)  # the job's processes come first on its CPUs
    except OSError:
        pass
    sys.exit(main())
