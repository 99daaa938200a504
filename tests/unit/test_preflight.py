"""The preflight's pure parts: each node check, the GPU checks on a fake NVML (answers as
recorded on an H200), the decision over the node reports, the exclusion plan, the lines `hpcjobs
why` reads back, and what the templates render. The real thing runs in
tests/integration/test_preflight.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stdout
from types import SimpleNamespace

import pytest

from hpcjobs import triage
from hpcjobs.cluster import Fabric, builtin
from hpcjobs.errors import BadInput
from hpcjobs.launch.fabric import rdma_ports
from hpcjobs.runners import gpuhealth, preflight, preflight_collective, preflight_lines
from hpcjobs.runners import preflight_policy as policy
from hpcjobs.runners.checks import rdma_check
from hpcjobs.spec import JobSpec, validate
from tests.conftest import ROOT

SYSFS = ROOT / "tests" / "fixtures" / "sysfs"
IB = Fabric("infiniband", "mlx5_0", 1, "ib0", 100)


# --- node checks --------------------------------------------------------------------------------

def test_program_file_reads_argv_like_check_program():
    assert preflight.program_file(["python3", "train.py", "--x"]) == ("train.py", None)
    assert preflight.program_file(["/opt/venv/bin/python", "-m", "pkg"]) == (None, None)
    assert preflight.program_file(["./a.out", "1"]) == ("./a.out", None)
    assert preflight.program_file(["hostname"]) == (None, "hostname")
    assert preflight.program_file([]) == (None, None)


def test_check_program(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.py").write_text("print(1)\n")
    assert preflight.check_program(["python3", "p.py"]).status == "pass"
    c = preflight.check_program(["python3", "gone.py"])
    assert c.status == "fail" and "gone.py cannot be read on this node" in c.summary
    assert preflight.check_program(["no-such-command-hpcjobs"]).status == "fail"
    assert preflight.check_program(["python3", "-c", "1"]).summary.startswith("python3 is /")


def test_check_space(tmp_path):
    ok = preflight.check_space("tmp-space", str(tmp_path), 1)
    assert ok.status == "pass" and "writable" in ok.summary
    full = preflight.check_space("tmp-space", str(tmp_path), 1 << 62)
    assert full.status == "fail" and "below" in full.summary
    gone = preflight.check_space("run-dir-space", str(tmp_path / "nope"), 1)
    assert gone.status == "fail" and "is not there" in gone.summary
    assert not [p for p in tmp_path.iterdir()]  # the probe file is gone


def test_check_imports(tmp_path, monkeypatch):
    c, secs = preflight.check_imports(["json"])
    assert c.status == "pass" and secs >= 0
    c, _ = preflight.check_imports(["hpcjobs_no_such_framework"])
    assert c.status == "fail" and "ModuleNotFoundError" in c.summary
    # An empty directory where the framework should be (what a mount over it leaves): it imports
    # as a namespace package, which is no framework.
    (tmp_path / "fakefw").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    c, _ = preflight.check_imports(["fakefw.core"])
    assert c.status == "fail" and "empty namespace package" in c.summary
    assert preflight.check_imports([])[0].status == "skip"


def test_imports_for_each_kind(monkeypatch):
    assert preflight.imports_for({"HPCJOBS_KIND": "deepspeed"}, []) == ["torch", "deepspeed"]
    assert preflight.imports_for({"HPCJOBS_KIND": "mpi"}, ["python3", "x.py"]) == ["mpi4py.MPI"]
    assert preflight.imports_for({"HPCJOBS_KIND": "mpi"}, ["./a.out"]) == []
    assert preflight.imports_for({"HPCJOBS_KIND": "train", "HPCJOBS_PREFLIGHT_IMPORTS": "a, b"},
                                 []) == ["a", "b"]


def test_rdma_port_from_sysfs_fixtures():
    assert rdma_check(rdma_ports(str(SYSFS / "ib-active")), IB).status == "pass"
    down = rdma_check(rdma_ports(str(SYSFS / "ib-down")), IB)
    assert down.status == "fail" and "mlx5_0:1 is DOWN" in down.summary
    none = rdma_check(rdma_ports(str(SYSFS / "no-rdma")), IB)
    assert none.status == "fail"
    sandbox = SimpleNamespace(fabric=Fabric("ethernet", None, 1, "sbx0", 10))
    assert preflight.check_fabric_port(sandbox, str(SYSFS / "no-rdma")).status == "skip"


def test_gpu_checks_skip_on_the_sandbox_and_without_gpus():
    c = builtin()
    node = c.nodes[0]
    sandbox = SimpleNamespace(sandbox=True, fabric=c.fabric)
    got = preflight.gpu_checks(sandbox, node, {"SLURM_GPUS_ON_NODE": "1"})
    assert [x.status for x in got] == ["skip"] and "placeholders" in got[0].summary
    assert preflight.gpu_checks(c, node, {})[0].summary == "the job has no GPU on this node"
    cpu_node = SimpleNamespace(gpu=None)
    assert "lists no GPU" in preflight.gpu_checks(c, cpu_node, {"SLURM_GPUS_ON_NODE": "1"})[0].summary


def test_memlock_only_where_the_job_pins_memory():
    assert preflight.check_memlock(None).status == "skip"
    assert preflight.pins_memory(builtin(), {}) == "rdma"  # the built-in profile is InfiniBand


# --- GPUs through a fake NVML (values as recorded: tests/fixtures/gpu/h200_nvml.txt) ----------

class FakeNvml:
    class NVMLError(Exception):
        pass

    def __init__(self, n=1, ecc=0, procs=(), used=644939776, retired=0, remap=None):
        self.n, self.ecc, self.procs, self.used, self.retired, self.remap = n, ecc, procs, used, retired, remap

    def nvmlDeviceGetCount(self):
        return self.n

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return "NVIDIA H200"

    def nvmlDeviceGetUUID(self, h):
        return "GPU-3cacad79-667c-0b29-2062-8d3ce6ae1f01"

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=b"00000000:00:06.0")

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=self.used, total=150754820096)

    def nvmlDeviceGetTotalEccErrors(self, h, kind, counter):
        return self.ecc

    def nvmlDeviceGetRetiredPagesPendingStatus(self, h):
        return self.retired

    def nvmlDeviceGetRemappedRows(self, h):
        if self.remap is None:
            raise self.NVMLError("Not Supported")
        return self.remap

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in self.procs]


def test_gpus_healthy_as_recorded():
    gpus = gpuhealth.probe(FakeNvml())
    assert gpus[0].bus_id == "00000000:00:06.0" and gpus[0].remap_pending is None
    checks = gpuhealth.judge(gpus, expected=1, model="NVIDIA H200", xids=[], xid_note="/dev/kmsg")
    assert [c.status for c in checks] == ["pass", "pass", "pass"]


def test_gpu_failures():
    few = gpuhealth.judge(gpuhealth.probe(FakeNvml(n=1)), expected=2)
    assert few[0].status == "fail" and "1 GPU(s) visible, the job has 2" in few[0].summary
    ecc = gpuhealth.judge(gpuhealth.probe(FakeNvml(ecc=3)), expected=1)
    assert ecc[1].status == "fail" and "3 uncorrected ECC error(s)" in ecc[1].summary
    remap = gpuhealth.judge(gpuhealth.probe(FakeNvml(remap=(0, 1, 1, 0))), expected=1)
    assert remap[1].status == "fail" and "row remapping pending" in remap[1].summary
    held = gpuhealth.judge(gpuhealth.probe(FakeNvml(procs=[(4242, 30 << 30)])), expected=1,
                           own_pids={1})
    assert held[2].status == "fail" and "pid 4242 holds 30 GiB" in held[2].evidence[0]
    hidden = gpuhealth.judge(gpuhealth.probe(FakeNvml(used=40 << 30)), expected=1)
    assert hidden[2].status == "fail" and "no process visible here" in hidden[2].evidence[0]
    model = gpuhealth.judge(gpuhealth.probe(FakeNvml()), expected=1, model="Tesla V100S-PCIE-32GB")
    assert model[0].status == "warn"


def test_kernel_xids(tmp_path):
    log = tmp_path / "kmsg"
    log.write_text("4,1,100,-;NVRM: loading NVIDIA UNIX x86_64 Kernel Module\n"
                   "4,2,200,-;NVRM: Xid (PCI:0000:00:06): 79, pid='<unknown>', GPU has fallen off the bus.\n")
    xids, _ = gpuhealth.kernel_xids(str(log))
    assert xids == [("0000:00:06", 79, "NVRM: Xid (PCI:0000:00:06): 79, pid='<unknown>', GPU has "
                                      "fallen off the bus.")]
    checks = gpuhealth.judge(gpuhealth.probe(FakeNvml()), expected=1, xids=xids)
    assert checks[1].status == "warn" and "XID 79" in checks[1].evidence[0]
    none, why = gpuhealth.kernel_xids(str(tmp_path / "missing"))
    assert none is None and "not readable" in why


# --- the cross-node part's arithmetic -----------------------------------------------------------

def test_clock_offset_and_verdict():
    off, err = preflight_collective.clock_offset(100.0, 100.6, 101.0)
    assert off == pytest.approx(0.1) and err == pytest.approx(0.5)
    assert preflight_collective.clock_status({})[0] == "skip"
    assert preflight_collective.clock_status({"node2": 0.01})[0] == "pass"
    assert preflight_collective.clock_status({"node2": -0.5})[0] == "warn"
    assert preflight_collective.clock_status({"node2": 3.0, "node3": 0.0})[1].endswith("(node2)")
    bw = preflight_collective.bandwidth(0.01, 8 << 20, 3, 3, {"rate_gbps": 10, "fabric": "ethernet"})
    assert bw["busbw"] == pytest.approx((8 << 20) / 1e9 / 0.01 * 4 / 3, rel=1e-3)  # 1.12 GB/s
    assert bw["verdict"] == "good"  # 89% of 1.25 GB/s
    slow = preflight_collective.bandwidth(0.1, 8 << 20, 3, 3, {"rate_gbps": 10, "fabric": "ethernet"})
    assert slow["verdict"] == "poor"


# --- the wire and the decision -------------------------------------------------------------------

def test_reports_travel_as_short_whole_lines():
    buf = io.StringIO()
    with redirect_stdout(buf):
        preflight_lines.emit({"node": "node1", "rank": 0, "phase": "local", "x": "a" * 3000})
        preflight_lines.emit({"node": "node2", "rank": 1, "phase": "local"})
    lines = buf.getvalue().splitlines(True)
    assert all(len(ln) < 1000 for ln in lines)
    mixed = [lines[-1], *lines[:-1]]  # another task's line between the pieces
    assert [r["node"] for r in preflight_lines.parse_reports(mixed)] == ["node2", "node1"]
    torn = lines[1:]  # the first piece lost: that report is dropped
    assert [r["node"] for r in preflight_lines.parse_reports(torn)] == ["node2"]


NODES = ["node1", "node2", "node3"]


def local(node, *failed, rank=None):
    checks = [{"name": "python", "status": "pass", "summary": "ok"}]
    checks += [{"name": n, "status": "fail", "summary": f"{n} broken", "evidence": ["e"],
                "fix": f"fix {n}"} for n in failed]
    return {"phase": "local", "node": node, "rank": NODES.index(node) if rank is None else rank,
            "checks": checks, "import_s": 1.5, "t0": 0.0, "t": 2.0}


def coll(node, **kw):
    base = {"phase": "collective", "node": node, "rank": NODES.index(node), "status": "pass",
            "t0": 0.0, "t": 3.0, "transport": "gloo/TCP over sbx0",
            "bandwidth": {"verdict": "good", "verdict_text": "busbw 1 GB/s: good"},
            "clock": {"status": "pass", "offsets": {"node2": 0.0}}}
    return {**base, **kw}


def test_all_pass():
    o = policy.evaluate([local(n) for n in NODES] + [coll(n) for n in NODES], NODES)
    assert o.ok and o.transport == "gloo/TCP over sbx0" and o.import_s == 1.5
    assert policy.lines(o, 4.2)[0] == ("hpcjobs: preflight: 3 node(s) checked in 4.2 s (framework "
                                       "import 1.5 s): node1 ok, node2 ok, node3 ok")


def test_a_local_failure_names_the_node_and_the_others_were_not_checked():
    o = policy.evaluate([local("node1"), local("node2", "tmp-space")], NODES, step_rc=3)
    assert [(b.node, b.check) for b in o.bad] == [("node2", "tmp-space")]
    assert o.not_checked == ["node3"] and o.excludable == ["node2"]
    text = policy.lines(o, 1.0)
    assert "node1 ok, node2 FAIL, node3 not checked" in text[0]
    assert text[1] == "hpcjobs: preflight: node2 failed tmp-space: tmp-space broken | fix: fix tmp-space | seen: e"


def test_a_silent_node_without_failures_did_not_start():
    o = policy.evaluate([local("node1"), local("node3")], NODES, step_rc=1)
    assert [(b.node, b.check) for b in o.bad] == [("node2", "start")]


def test_rendezvous_names_the_missing_node():
    rank0 = coll("node1", status="fail", missing_ranks=[2], summary="rank(s) 2 did not reach")
    o = policy.evaluate([local(n) for n in NODES] + [rank0], NODES)
    assert [(b.node, b.check) for b in o.bad] == [("node3", "rendezvous")]


def test_errors_on_some_nodes_are_theirs_a_hang_everywhere_is_nobodys():
    err = coll("node2", status="fail", error=True, summary="RuntimeError in all_reduce")
    o = policy.evaluate([local(n) for n in NODES] + [coll("node1"), err], NODES)
    assert [(b.node, b.check) for b in o.bad] == [("node2", "collective")]
    hung = [coll(n, status="fail", deadline=True, summary="did not finish") for n in NODES]
    o = policy.evaluate([local(n) for n in NODES] + hung, NODES)
    assert o.bad[0].check == "collective" and o.excludable == []


def test_fabric_truth_failure_policy():
    def nccl(summary):
        return {"transport": "NET/Socket between nodes",
                "check": {"status": "fail", "summary": summary, "evidence": [], "fix": "f"}}
    wide = [coll(n, nccl=nccl("NCCL chose TCP sockets ...: NCCL_IB_DISABLE=1 is set in the "
                              "job's environment")) for n in NODES]
    o = policy.evaluate([local(n) for n in NODES] + wide, NODES)
    assert {b.check for b in o.bad} == {"fabric-truth"} and o.excludable == []
    assert o.transport == "NET/Socket between nodes"
    port = [coll(n) for n in NODES[:2]] + [coll("node3", nccl=nccl("... port mlx5_0:1 is DOWN"))]
    o = policy.evaluate([local(n) for n in NODES] + port, NODES)
    assert o.excludable == ["node3"]
    o = policy.evaluate([local(n) for n in NODES] + port, NODES, fabric_check="warn")
    assert o.ok and any("fabric-truth" in w for w in o.warnings)


def test_clock_far_off_is_a_bad_node():
    c0 = coll("node1", clock={"status": "fail", "offsets": {"node2": 0.0, "node3": 7.5},
                              "text": "largest clock offset to rank 0: +7500.0 ms (node3)"})
    o = policy.evaluate([local(n) for n in NODES] + [c0, coll("node2"), coll("node3")], NODES)
    assert [(b.node, b.check) for b in o.bad] == [("node3", "clock")]


def test_why_reads_the_line_back():
    o = policy.evaluate([local("node1"), local("node2", "import")], NODES)
    out = policy.lines(o, 1.0) + ["hpcjobs: preflight: failed (attempt 0, --on-bad-node=fail)"]
    found = triage.explain_lines(out, job_id="1", state="FAILED", exit_code=78)
    assert found[0].key == "preflight"
    assert found[0].cause == "node2 failed the preflight check 'import': import broken"
    assert found[0].fix.startswith("fix import")


def test_exclusion_plan():
    nodes = ["node1", "node2", "node3"]
    new, _ = policy.exclusion_plan({"NumNodes": "2-3", "ExcNodeList": "(null)"}, ["node2"], nodes)
    assert new == "node2"
    new, _ = policy.exclusion_plan({"NumNodes": "1", "ExcNodeList": "node3"}, ["node2"], nodes)
    assert new == "node[2-3]"
    no, why = policy.exclusion_plan({"NumNodes": "3"}, ["node2"], nodes)
    assert no is None and "the job needs 3" in why
    no, why = policy.exclusion_plan({"NumNodes": "2", "ReqNodeList": "node[1-2]"}, ["node2"], nodes)
    assert no is None and "required nodes" in why


def test_history_in_a_run_record(tmp_path):
    from hpcjobs import runs

    run = runs.create(tmp_path / "r", "#!/bin/bash\n", {}, {}, {"job_id": "7"})
    o = policy.evaluate([local("node1"), local("node2", "import")], NODES)
    policy.record(str(run.path), str(tmp_path), policy.history_entry(o, 0, "failed", 1.0))
    policy.record(str(run.path), str(tmp_path), policy.history_entry(o, 1, "failed", 1.0))
    hist = run.meta()["preflight"]
    assert [h["attempt"] for h in hist] == [0, 1]
    assert hist[0]["bad"][0]["node"] == "node2" and hist[0]["bad"][0]["check"] == "import"


# --- options and templates -------------------------------------------------------------------------

def test_spec_options_validate():
    c = builtin()
    assert validate(JobSpec(kind="train", program=["x.py"]), c).preflight is False
    on = c.__class__(**{**c.__dict__, "defaults": c.defaults.__class__(
        **{**c.defaults.__dict__, "preflight": True})})
    assert validate(JobSpec(kind="train", program=["x.py"]), on).preflight is True
    assert validate(JobSpec(kind="train", preflight=False), on).preflight is False
    for field, value in (("on_bad_node", "drain"), ("fabric_check", "ignore"),
                         ("bad_node_retries", 99)):
        with pytest.raises(BadInput) as e:
            validate(JobSpec(kind="train", **{field: value}), c)
        assert e.value.field == "--" + field.replace("_", "-")


def render(*args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "hpcjobs", "render", *args], capture_output=True,
                       text=True, cwd=ROOT, env={**os.environ, "HPCJOBS_CLUSTER": ""})
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_rendered_preflight_step(tmp_path):
    script = render("mpi", "--nodes", "2", "--preflight", "--on-bad-node", "exclude",
                    "--bad-node-retries", "1", "--", "python3", "examples/mpi_allreduce.py")
    assert "export HPCJOBS_ON_BAD_NODE=exclude" in script
    assert "export HPCJOBS_BAD_NODE_RETRIES=1" in script
    assert "--ntasks-per-node=1 --kill-on-bad-exit=1 --mpi=pmix" in script
    assert script.index("hpcjobs_preflight \"$@\"") < script.index("-m hpcjobs.launch -- \"$@\"")
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    if subprocess.run(["which", "shellcheck"], capture_output=True).returncode == 0:
        sc = subprocess.run(["shellcheck", "-S", "warning", str(path)], capture_output=True, text=True)
        assert sc.returncode == 0, sc.stdout
    plain = render("train", "--nodes", "2", "--", "examples/train_ddp.py")
    assert "hpcjobs_preflight" not in plain  # off: the script is as before


def test_direct_script_takes_the_preflight_from_the_environment():
    script = render("train", "--direct")
    assert 'export HPCJOBS_PREFLIGHT="${HPCJOBS_PREFLIGHT:-0}"' in script
    assert 'export HPCJOBS_ON_BAD_NODE="${HPCJOBS_ON_BAD_NODE:-fail}"' in script
