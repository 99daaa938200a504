"""The monitor beside the job (hpcjobs/runners/monitor.py): its files, which processes and
GPUs it counts, and what it does when killed. /proc trees and NVML are fakes built here; the
kill tests use real processes. A real job on the sandbox: tests/integration/test_report.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from hpcjobs.runners import monitor as m
from hpcjobs.report.samples import parse_lines, read_node
from tests.conftest import ROOT


# --- a fake /proc ------------------------------------------------------------------------------

def add_proc(root: Path, pid: int, comm: str, ppid: int, *, ticks=(0, 0), start=100,
             rss_pages=10, cmdline: bytes | None = None, uts: str | None = None,
             environ: dict | None = None, hwm_kb: int | None = None, state="S") -> None:
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    fields = [state, str(ppid)] + ["0"] * 9 + [str(ticks[0]), str(ticks[1])] + ["0"] * 6 + \
        [str(start), "0", str(rss_pages)] + ["0"] * 5
    (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + "\n")
    (d / "cmdline").write_bytes(cmdline if cmdline is not None else comm.encode() + b"\0")
    if uts is not None:
        (d / "ns").mkdir(exist_ok=True)
        (d / "ns" / "uts").unlink(missing_ok=True)
        os.symlink(uts, d / "ns" / "uts")
    if environ is not None:
        (d / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in environ.items()) + b"\0")
    (d / "status").write_text(f"Name:\t{comm}\nVmHWM:\t{hwm_kb or rss_pages * 4} kB\n")


def test_stat_of_a_command_with_blanks_and_parentheses(tmp_path):
    add_proc(tmp_path, 42, "my (odd) prog", 7, ticks=(30, 12), start=555, rss_pages=3)
    st = m.read_stat(str(tmp_path), 42)
    assert (st.comm, st.ppid, st.ticks, st.start, st.rss) == ("my (odd) prog", 7, 42, 555, 3 * m.PAGE)
    assert m.read_stat(str(tmp_path), 43) is None  # gone


def sandbox_tree(root: Path) -> None:
    """Two nodes on one host (the sandbox): UTS namespaces 1 and 2; job 77 has the monitor's
    step 0 and the program's step 1 on both; job 88 runs beside it on node 1."""
    (root / "self" / "ns").mkdir(parents=True)
    os.symlink("uts:[1]", root / "self" / "ns" / "uts")
    add_proc(root, 1, "init", 0)
    add_proc(root, 10, "slurmstepd", 1, cmdline=b"slurmstepd: [77.0]\0")  # the monitor's, node 1
    add_proc(root, 11, "python", 10, uts="uts:[1]")  # the monitor itself
    add_proc(root, 20, "slurmstepd", 1, cmdline=b"slurmstepd: [77.1]\0")  # program, node 1
    add_proc(root, 21, "bash", 20, uts="uts:[1]", ticks=(5, 1))
    add_proc(root, 22, "python", 21, uts="uts:[1]", ticks=(100, 20), rss_pages=1000)
    add_proc(root, 30, "slurmstepd", 1, cmdline=b"slurmstepd: [77.1]\0")  # program, node 2
    add_proc(root, 31, "python", 30, uts="uts:[2]", rss_pages=2000)
    add_proc(root, 40, "slurmstepd", 1, cmdline=b"slurmstepd: [88.0]\0")  # another job, node 1
    add_proc(root, 41, "python", 40, uts="uts:[1]")
    add_proc(root, 50, "slurmstepd", 1, cmdline=b"slurmstepd: [77.batch]\0")  # batch, node 1
    add_proc(root, 51, "bash", 50, uts="uts:[1]")
    add_proc(root, 52, "srun", 51, uts="uts:[1]")


def test_tree_attribution_takes_this_node_and_job_and_not_the_monitor(tmp_path):
    sandbox_tree(tmp_path)
    who = m.attribution({"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0"}, proc=str(tmp_path),
                        cgroup_root=str(tmp_path / "nocgroup"), my_pid=11)
    assert who.method == "tree"
    pids, stats = who.pids()
    assert pids == [21, 22, 51, 52]  # not 11 (the monitor), 31 (node 2), 41 (job 88), stepds
    assert stats[22].comm == "python"


def test_environ_attribution_without_any_slurmstepd(tmp_path):
    (tmp_path / "self" / "ns").mkdir(parents=True)
    add_proc(tmp_path, 5, "python", 1, environ={"SLURM_JOB_ID": "77", "SLURMD_NODENAME": "n1",
                                                "SLURM_STEP_ID": "1"})
    add_proc(tmp_path, 6, "python", 1, environ={"SLURM_JOB_ID": "77", "SLURMD_NODENAME": "n2"})
    add_proc(tmp_path, 7, "python", 1, environ={"SLURM_JOB_ID": "78", "SLURMD_NODENAME": "n1"})
    add_proc(tmp_path, 8, "python", 1, environ={"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0",
                                                "SLURMD_NODENAME": "n1"})  # the monitor's step
    add_proc(tmp_path, 9, "sh", 1, environ={"SLURM_JOB_ID": "77"})  # no node name: counted
    who = m.attribution({"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURMD_NODENAME": "n1"},
                        proc=str(tmp_path), cgroup_root=str(tmp_path / "none"), my_pid=999)
    assert who.method == "environ"
    assert who.pids()[0] == [5, 9]


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_cgroup_attribution_reads_the_job_cgroup_without_the_monitor_step(tmp_path, version):
    proc, cg = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    if version == "v2":
        job = cg / "system.slice" / "slurmstepd.scope" / "job_77"
        (proc / "self" / "cgroup").write_text(
            "0::/system.slice/slurmstepd.scope/job_77/step_0/user/task_0\n")
        dirs = {job / "step_0" / "user" / "task_0": [11], job / "step_0" / "slurm": [10],
                job / "step_1" / "user" / "task_0": [22, 23], job / "step_1" / "slurm": [20],
                job / "step_batch" / "user" / "task_0": [51]}
    else:
        job = cg / "freezer" / "slurm" / "uid_0" / "job_77"
        (proc / "self" / "cgroup").write_text(
            "7:freezer:/slurm/uid_0/job_77/step_0/task_0\n3:cpu,cpuacct:/\n")
        dirs = {job / "step_0" / "task_0": [11], job / "step_1" / "task_0": [22, 23],
                job / "step_1": [20], job / "step_batch" / "task_0": [51]}
    for d, pids in dirs.items():
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.procs").write_text("".join(f"{p}\n" for p in pids))
    for pid, comm in ((10, "slurmstepd"), (11, "python"), (20, "slurmstepd"), (22, "python"),
                      (23, "python"), (51, "bash")):
        add_proc(proc, pid, comm, 1)
    who = m.attribution({"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0"}, proc=str(proc),
                        cgroup_root=str(cg), my_pid=11)
    assert (who.method, who.detail) == ("cgroup", str(job))
    assert who.pids()[0] == [22, 23, 51]


def test_proc_meter_counts_cpu_rss_and_the_largest_peak(tmp_path):
    sandbox_tree(tmp_path)
    who = m.attribution({"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0"}, proc=str(tmp_path),
                        cgroup_root=str(tmp_path / "none"), my_pid=11)
    meter = m.ProcMeter(who, str(tmp_path), born=50)  # 21, 22 (start 100) began after the monitor
    first = meter.sample(1000.0)
    assert first["c"] == 0.0 and first["cs"] == pytest.approx(126 / m.CLK_TCK, abs=0.01)
    assert first["rss"] == (1000 + 10 * 3) * m.PAGE and first["n"] == 4
    assert first["hwm"] == 1000 * 4 * 1024
    add_proc(tmp_path, 22, "python", 21, uts="uts:[1]", ticks=(100 + m.CLK_TCK, 20),
             rss_pages=1500)  # one CPU-second more
    second = meter.sample(1002.0)
    assert second["c"] == pytest.approx(0.5, abs=0.01)
    assert second["cs"] == pytest.approx(first["cs"] + 1.0, abs=0.01)


# --- files ---------------------------------------------------------------------------------

def test_writer_closes_a_torn_line_before_appending(tmp_path):
    path = tmp_path / "j" / "n1.jsonl"
    w = m.Writer(str(path))
    w.write({"k": "s", "t": 1.0})
    w.close()
    with open(path, "ab") as f:
        f.write(b'{"k":"s","t":2')  # a monitor killed mid-line
    w = m.Writer(str(path))
    w.write({"k": "s", "t": 3.0})
    w.close()
    ns = read_node(path)
    assert ns.torn == 1 and [s["t"] for s in ns.samples] == [1.0, 3.0]


WRITER_LOOP = """
import sys, time
from hpcjobs.runners.monitor import Writer
w = Writer(sys.argv[1])
w.write({"k": "start", "t": time.time(), "interval": 0.5})
i = 0
while True:
    w.write({"k": "s", "t": time.time(), "i": i, "pad": "x" * 300})
    i += 1
"""


def test_records_stay_valid_json_after_kills(tmp_path):
    """A writer SIGKILLed five times mid-stream, restarted each time on the same file (as a
    requeued job's monitor): every line but torn ones parses, and torn ones are at most one per
    kill, each closed before the next writer's first line."""
    path = tmp_path / "n1.jsonl"
    for _ in range(5):
        before = path.stat().st_size if path.exists() else 0
        p = subprocess.Popen([sys.executable, "-c", WRITER_LOOP, str(path)], cwd=ROOT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not path.exists() or
                                               path.stat().st_size < before + 20_000):
            time.sleep(0.01)  # killed while it writes, not while Python starts
        p.send_signal(signal.SIGKILL)
        p.wait()
    lines = path.read_bytes().split(b"\n")
    good = 0
    for ln in lines:
        if ln:
            try:
                json.loads(ln)
                good += 1
            except ValueError:
                pass
    ns = read_node(path)
    assert len(ns.segments) == 5 and ns.torn <= 5
    assert len(ns.samples) == good - 5 > 50


# --- GPUs ----------------------------------------------------------------------------------

class FakeError(Exception):
    def __init__(self, value):
        super().__init__(value)
        self.value = value

    def __str__(self):
        return {3: "Not Supported", 10: "Timeout", 15: "GPU is lost"}.get(self.value, str(self.value))


class FakeGpu:
    def __init__(self, index, minor=None, *, total=32 * 2**30, energy=1_000_000, util=(50,)):
        self.index, self.minor, self.total = index, index if minor is None else minor, total
        self.uuid = f"GPU-{index:04d}"
        self.used, self.util, self.power, self.energy = 2**30, list(util), 150_000, energy
        self.reasons, self.lost = 0, False
        self.counters = {74: 0, 269: 0, 270: 0, 271: 0}
        self.samples = []  # (timestamp, value)


class FakeNvml:
    """The calls the monitor makes, as nvidia-ml-py names them; ``hidden`` lists functions an
    older nvidia-ml-py does not have."""

    NVMLError = FakeError

    def __init__(self, gpus, hidden=(), events=True):
        self.gpus, self.hidden, self.events_ok = gpus, set(hidden), events
        self.pending, self.shut = [], False

    def __getattribute__(self, name):
        if name.startswith("nvml") and name in object.__getattribute__(self, "hidden"):
            raise AttributeError(name)
        return object.__getattribute__(self, name)

    def _g(self, h):
        if h.lost:
            raise FakeError(15)
        return h

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.gpus[i]

    def nvmlDeviceGetHandleByUUID(self, u):
        for g in self.gpus:
            if g.uuid == u:
                return g
        raise FakeError(6)

    def nvmlDeviceGetMinorNumber(self, h):
        return self._g(h).minor

    def nvmlDeviceGetUUID(self, h):
        return self._g(h).uuid

    def nvmlDeviceGetName(self, h):
        return "Tesla V100S-PCIE-32GB"

    def nvmlDeviceGetMemoryInfo(self, h):
        h = self._g(h)
        return SimpleNamespace(total=h.total, used=h.used, free=h.total - h.used)

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=f"00000000:{self._g(h).index + 0x3b:02X}:00.0".encode())

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 250_000

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        h = self._g(h)
        if h.energy is None:
            raise FakeError(3)  # before Volta
        return h.energy

    def nvmlDeviceGetUtilizationRates(self, h):
        h = self._g(h)
        return SimpleNamespace(gpu=h.util[-1], memory=10)

    def nvmlDeviceGetSamples(self, h, kind, since):
        h = self._g(h)
        got = [s for s in h.samples if s[0] > since]
        if not got:
            raise FakeError(13)  # NOT_FOUND
        return 1, [SimpleNamespace(timeStamp=t, sampleValue=SimpleNamespace(uiVal=v)) for t, v in got]

    def nvmlDeviceGetPowerUsage(self, h):
        return self._g(h).power

    def nvmlDeviceGetClockInfo(self, h, kind):
        return 1597 if self._g(h) and kind == 1 else 1107

    def nvmlDeviceGetTemperature(self, h, kind):
        return self._g(h) and 61

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return self._g(h).reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h):
        return self._g(h).reasons

    def nvmlDeviceGetFieldValues(self, h, ids):
        h = self._g(h)
        return [SimpleNamespace(nvmlReturn=0, value=SimpleNamespace(ullVal=h.counters[i]))
                if i in h.counters else SimpleNamespace(nvmlReturn=3, value=None) for i in ids]

    def nvmlEventSetCreate(self):
        if not self.events_ok:
            raise FakeError(4)
        return "eventset"

    def nvmlDeviceRegisterEvents(self, h, kinds, es):
        if not self.events_ok:
            raise FakeError(3)

    def nvmlEventSetWait(self, es, timeout_ms):
        if not self.pending:
            raise FakeError(10)
        return self.pending.pop(0)

    def nvmlEventSetFree(self, es):
        pass

    def nvmlShutdown(self):
        self.shut = True


@pytest.mark.parametrize("env,expect", [
    ({"SLURM_STEP_GPUS": "2,3", "SLURM_JOB_GPUS": "0", "CUDA_VISIBLE_DEVICES": "0,1"},
     (["2", "3"], "SLURM_STEP_GPUS")),
    ({"SLURM_JOB_GPUS": "1", "CUDA_VISIBLE_DEVICES": "0"}, (["1"], "SLURM_JOB_GPUS")),
    ({"CUDA_VISIBLE_DEVICES": "GPU-0003"}, (["GPU-0003"], "CUDA_VISIBLE_DEVICES")),
])
def test_the_job_gpus_come_from_slurm_first(env, expect):
    assert m.gpu_ids(env) == expect


@pytest.mark.parametrize("env", [{}, {"CUDA_VISIBLE_DEVICES": ""}, {"SLURM_STEP_GPUS": ""}])
def test_a_job_without_gpus_samples_none(env):
    ids, why = m.gpu_ids(env)
    assert ids is None and "no GPU" in why
    gpus, note = m.open_gpus(env, loader=lambda: pytest.fail("NVML must not be loaded"))
    assert gpus is None and "no GPU" in note


def test_only_the_jobs_gpus_are_chosen():
    node = [FakeGpu(i) for i in range(4)]
    # Whole node visible (no device cgroup): Slurm's ids are /dev/nvidiaN minor numbers.
    handles, how = m.choose_gpus(FakeNvml(node), ["1", "3"], "SLURM_STEP_GPUS")
    assert [h.index for h in handles] == [1, 3] and "minor" in how
    # Minor numbers that are not Slurm's ids: NVML indices.
    odd = [FakeGpu(i, minor=10 + i) for i in range(4)]
    handles, how = m.choose_gpus(FakeNvml(odd), ["2"], "SLURM_STEP_GPUS")
    assert [h.index for h in handles] == [2] and "NVML index" in how
    # A device cgroup shows NVML only the job's GPU, numbered 0: that one.
    handles, how = m.choose_gpus(FakeNvml([FakeGpu(0, minor=3)]), ["3"], "SLURM_STEP_GPUS")
    assert [h.minor for h in handles] == [3] and "no more than" in how
    handles, how = m.choose_gpus(FakeNvml(node), ["GPU-0002"], "CUDA_VISIBLE_DEVICES")
    assert [h.index for h in handles] == [2] and "UUID" in how


def test_no_driver_means_no_gpu_figures_and_says_why():
    def no_driver():
        raise RuntimeError("NVML Shared Library Not Found")

    gpus, note = m.open_gpus({"SLURM_STEP_GPUS": "0"}, loader=no_driver)
    assert gpus is None and note == "NVML unavailable: NVML Shared Library Not Found"


def test_gpu_sample_fields_and_xids():
    g = FakeGpu(0)
    nv = FakeNvml([FakeGpu(9), g])
    gpus, _how = m.open_gpus({"SLURM_STEP_GPUS": "1"}, loader=lambda: nv)
    assert [i["uuid"] for i in gpus.info] == ["GPU-0000"] or gpus.handles == [g]
    assert gpus.info[0]["mem"] == 32 * 2**30 and gpus.info[0]["energy"] is True
    g.samples = [(10, 40), (20, 60)]
    first = gpus.sample(0.0)[0]
    assert first["u"] == 50 and first["e"] == 1_000_000 and first["m"] == 2**30
    assert first["p"] == 150_000 and first["sm"] == 1597 and first["tc"] == 61
    assert first["r"] == 0 and first["pc"] == 0 and first["ht"] == 0
    g.samples += [(30, 100), (40, 80)]
    g.energy += 750_000
    g.reasons = 0x4
    g.counters[74] = 2_000_000_000
    second = gpus.sample(5.0)[0]
    assert second["u"] == 90  # the mean of the driver's samples since the last read
    assert second["ua"] == 90 and second["e"] == 1_750_000 and second["r"] == 4
    assert second["pc"] == 2_000_000_000
    nv.pending.append(SimpleNamespace(device=g, eventData=79))
    assert gpus.drain_events(123.0) == [{"k": "xid", "t": 123.0, "gpu": 0, "xid": 79}]
    assert gpus.drain_events(124.0) == []
    gpus.close()
    assert nv.shut


def test_older_driver_and_older_nvidia_ml_py():
    """No energy counter (before Volta), no event sets, no field values, only the old name of
    the throttle reasons, no sample buffer: what is there is sampled, the rest left out."""
    g = FakeGpu(0, energy=None)
    nv = FakeNvml([g], hidden={"nvmlDeviceGetCurrentClocksEventReasons",
                               "nvmlDeviceGetFieldValues", "nvmlDeviceGetSamples"}, events=False)
    gpus, _ = m.open_gpus({"CUDA_VISIBLE_DEVICES": "0"}, loader=lambda: nv)
    assert gpus.info[0]["energy"] is False and gpus.events is None
    assert "XID events not available" in gpus.events_note or "no NVML event set" in gpus.events_note
    g.reasons = 0x40
    s = gpus.sample(0.0)[0]
    assert "e" not in s and s["r"] == 0x40 and "pc" not in s and s["u"] == 50


def test_a_lost_gpu_is_a_line_not_a_crash():
    g = FakeGpu(0)
    gpus, _ = m.open_gpus({"CUDA_VISIBLE_DEVICES": "0"}, loader=lambda: FakeNvml([g]))
    g.lost = True
    assert gpus.sample(5.0) == [{"err": "no answer from NVML"}]


def test_monitor_run_writes_start_samples_and_stop(tmp_path):
    env = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURMD_NODENAME": "n1",
           "SLURM_STEP_GPUS": "0", "SLURM_CPUS_ON_NODE": "8", "SLURM_MEM_PER_NODE": "1024"}
    mon = m.Monitor(str(tmp_path), 0.5, env, nvml_loader=lambda: FakeNvml([FakeGpu(0)]))
    assert mon.run(stop_after=3) == 0
    ns = read_node(tmp_path / "77" / "n1.jsonl")
    (seg,) = ns.segments
    assert seg.start["cpus"] == 8 and seg.start["mem_limit"] == 2**30 and seg.start["interval"] == 0.5
    assert seg.start["gpus"][0]["uuid"] == "GPU-0000" and len(seg.samples) == 3
    assert seg.stop["why"] == "done" and all("own" in s for s in seg.samples)
    assert seg.samples[2]["t"] - seg.samples[0]["t"] == pytest.approx(1.0, abs=0.3)


def test_array_task_label():
    assert m.job_label({"SLURM_JOB_ID": "105", "SLURM_ARRAY_JOB_ID": "100",
                        "SLURM_ARRAY_TASK_ID": "5"}) == "100_5"
    assert m.job_label({"SLURM_JOB_ID": "105"}) == "105"


def test_the_real_monitor_stops_on_usr1_with_a_last_sample(tmp_path):
    env = {**os.environ, "SLURM_JOB_ID": "4242", "SLURMD_NODENAME": "n1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    p = subprocess.Popen([sys.executable, "-m", "hpcjobs.runners.monitor", f"--out={tmp_path}",
                          "--interval=0.5"], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    path = tmp_path / "4242" / "n1.jsonl"
    for _ in range(100):
        if path.exists() and len(path.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGUSR1)
    assert p.wait(timeout=10) == 0, p.stderr.read()
    ns = read_node(path)
    assert ns.segments[-1].stop["why"] == "SIGUSR1" and ns.torn == 0
    assert ns.segments[0].start["gpu_map"].startswith("no SLURM_STEP_GPUS")


def test_a_bad_interval_is_refused_in_one_line_and_the_job_goes_on(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hpcjobs.runners.monitor", f"--out={tmp_path}",
                        "--interval=0.01"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "the job runs without it" in r.stderr
    assert not any(tmp_path.iterdir())


def test_an_unwritable_directory_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    r = subprocess.run([sys.executable, "-m", "hpcjobs.runners.monitor",
                        f"--out={tmp_path / 'file'}", "--interval=1"], capture_output=True,
                       text=True, cwd=ROOT, env={**os.environ, "SLURM_JOB_ID": "1"})
    assert r.returncode == 1 and "cannot write samples" in r.stderr and r.stderr.count("\n") == 1


def test_parse_lines_keeps_runs_apart():
    lines = [json.dumps(x) for x in (
        {"k": "start", "t": 0, "node": "n1", "interval": 1}, {"k": "s", "t": 0}, {"k": "s", "t": 1},
        {"k": "stop", "t": 1.5}, {"k": "start", "t": 100, "node": "n1", "interval": 1},
        {"k": "s", "t": 100}, {"k": "xid", "t": 100.5, "gpu": 0, "xid": 79})]
    ns = parse_lines([*lines, '{"k": "s", "t": 10'])
    assert [len(s.samples) for s in ns.segments] == [2, 1] and ns.torn == 1
    assert ns.segments[0].stop and ns.segments[1].stop is None and ns.segments[1].events


# --- the job scripts -----------------------------------------------------------------------

def _kinds():
    from hpcjobs import kinds

    return kinds.names()


@pytest.mark.parametrize("kind", _kinds())
def test_every_kind_starts_the_monitor_before_its_program_and_stops_it_at_the_end(kind, isolated):
    from hpcjobs.rendering import materialize
    from hpcjobs.spec import JobSpec
    from tests.conftest import unchecked

    job = unchecked(JobSpec(kind=kind, program=["prog.py"], monitor_interval=2.5))
    script = materialize(job, run_dir="/runs/r1").script
    assert "export HPCJOBS_MONITOR_DIR=/runs/r1/monitor" in script
    assert "export HPCJOBS_MONITOR_INTERVAL=2.5" in script
    assert "srun --overlap --mem=0 --job-name=hpcjobs-monitor" in script
    start = script.index("\nhpcjobs_monitor_start\n")
    assert "hpcjobs_at_finish+=(hpcjobs_monitor_stop)" in script[:start]
    assert start < script.index("\nhpcjobs_step ")
    off = materialize(unchecked(JobSpec(kind=kind, program=["prog.py"], monitor=False)),
                      run_dir="/runs/r1").script
    assert "hpcjobs_monitor" not in off and "runners.monitor" not in off


def test_direct_scripts_take_the_monitor_from_the_environment():
    from hpcjobs.rendering import direct_script

    script = direct_script("mpi")
    assert 'export HPCJOBS_MONITOR="${HPCJOBS_MONITOR:-1}"' in script
    assert 'export HPCJOBS_MONITOR_DIR="${HPCJOBS_MONITOR_DIR:-$PWD/hpcjobs-monitor}"' in script
    assert '[ "$HPCJOBS_MONITOR" = 1 ] || return 0' in script


def test_a_bad_monitor_interval_names_the_option(isolated):
    from hpcjobs.cluster import builtin
    from hpcjobs.errors import BadInput
    from hpcjobs.spec import JobSpec, validate

    with pytest.raises(BadInput) as e:
        validate(JobSpec(kind="mpi", program=["x"], monitor_interval=0.1), builtin())
    assert e.value.field == "--monitor-interval" and "0.5" in str(e.value)
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "render", "mpi", "--monitor-interval",
                        "0", "--", "hostname"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert "--monitor-interval" in r.stderr
