"""The horovod kind without Slurm: srun --mpi=pmix through the launcher, MPI control over TCP
with the shared-memory BTL named right for Open MPI 4 and 5, and the build script's shape."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcjobs.api import prepare
from hpcjobs.cluster import builtin
from hpcjobs.errors import BadInput
from hpcjobs.rendering import direct_script, materialize
from hpcjobs.spec import JobSpec
from tests.conftest import ROOT

PROG = ["examples/horovod_allreduce.py"]


def script(**options) -> str:
    c = builtin()
    s = prepare(JobSpec(kind="horovod", program=PROG, options=options), c)
    return materialize(s, run_dir="/tmp/run").script


def mpi_block(text: str) -> str:
    start = text.index("export OMPI_MCA_pml=ob1")
    return text[start:text.index("export HOROVOD_CPU_OPERATIONS=mpi", start)]


def test_srun_pmix_one_task_per_gpu_through_the_launcher():
    text = script()
    assert "#SBATCH --ntasks-per-node=1" in text and "#SBATCH --gres=gpu:v100s:1" in text
    assert 'hpcjobs_step --mpi=pmix --kill-on-bad-exit=1 \\\n    "$HPCJOBS_PYTHON" -m hpcjobs.launch -- "$@"' in text
    assert "mpirun" not in mpi_block(text) and "horovodrun" not in text.split("\n#", 1)[0]
    assert "export HOROVOD_CPU_OPERATIONS=mpi" in text


def test_native_mpi_control_leaves_open_mpi_alone():
    text = script(mpi_control="native")
    assert "OMPI_MCA_pml" not in text and "OMPI_MCA_btl" not in text


def test_pmi2_with_tcp_control_is_refused():
    with pytest.raises(BadInput) as e:
        script(mpi="pmi2")
    assert e.value.field == "--mpi-control"
    assert "hpcjobs_step --mpi=pmi2 " in script(mpi="pmi2", mpi_control="native")


@pytest.mark.parametrize("version,btl", [
    ("Open MPI v4.1.4", "tcp,self,vader"),
    ("Open MPI v3.1.6", "tcp,self,vader"),
    ("Open MPI v5.0.7", "tcp,self,sm"),
    (None, "^openib"),  # no ompi_info: Horovod's own exclusion, valid in 4 and 5
])
def test_btl_names_shared_memory_right_for_each_open_mpi(tmp_path, version, btl):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    if version:
        fake = bindir / "ompi_info"
        fake.write_text(f"#!/bin/sh\necho '{version}'\necho 'http://www.open-mpi.org/community/help/'\n")
        fake.chmod(0o755)
    # PATH holds only the fake and the basic tools the block needs.
    for tool in ("head", "grep"):
        os.symlink(shutil.which(tool), bindir / tool)
    r = subprocess.run(["/bin/bash", "-c", mpi_block(script()) + 'echo "$OMPI_MCA_pml $OMPI_MCA_btl"'],
                       capture_output=True, text=True, env={"PATH": str(bindir)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ob1", btl]


def test_tcp_interface_only_where_the_node_has_it():
    block = mpi_block(script())
    assert "hpcjobs_tcp_if=ib0" in block  # the built-in profile's fast-network interface
    r = subprocess.run(["bash", "-c", block + 'echo "${OMPI_MCA_btl_tcp_if_include:-unset}"'],
                       capture_output=True, text=True)
    have_ib0 = any(ln.strip().startswith("ib0:") for ln in Path("/proc/net/dev").read_text().splitlines())
    assert r.stdout.strip() == ("ib0" if have_ib0 else "unset")
    r = subprocess.run(["bash", "-c", block + 'echo "$OMPI_MCA_btl_tcp_if_include"'],
                       capture_output=True, text=True, env={**os.environ, "OMPI_MCA_btl_tcp_if_include": "eth9"})
    assert r.stdout.strip() == "eth9"


def test_direct_script_is_shipped_and_names_the_status():
    text = direct_script("horovod")
    assert text == (ROOT / "job_templates" / "horovod.sbatch").read_text()
    assert "unmaintained" in text


def test_cli_help_says_unmaintained(isolated):
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "submit", "horovod", "--help"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "unmaintained" in r.stdout


def test_build_script_applies_the_cxx17_fix_and_is_idempotent():
    text = (ROOT / "scripts" / "build-horovod").read_text()
    assert "VERSION=0.28.1" in text and "--no-build-isolation" in text
    for flag in ("HOROVOD_WITH_PYTORCH=1", "HOROVOD_WITH_GLOO=1", "HOROVOD_WITH_MPI=1"):
        assert flag in text
    assert "s/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/" in text
    assert "CMakeLists.txt horovod/torch/CMakeLists.txt" in text
    assert "installed_ok" in text  # skip when an importable horovod.torch 0.28.1 is there
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", str(ROOT / "scripts" / "build-horovod")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout
    r = subprocess.run(["bash", str(ROOT / "scripts" / "build-horovod"), "--bogus"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown argument" in r.stderr
