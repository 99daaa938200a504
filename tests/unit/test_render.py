"""Rendering: every kind renders to a script bash accepts, and user values arrive intact."""

import shutil
import subprocess

import pytest

from hpcjobs import kinds
from hpcjobs.cluster import load_file
from hpcjobs.errors import BadInput
from hpcjobs.rendering import direct_script, materialize, sbatch_value
from hpcjobs.spec import JobSpec
from tests.conftest import FIXTURES, ROOT, unchecked

HOSTILE = ["plain", "two words", "$(touch /tmp/pwned)", "`id`", "it's", 'say "hi"', "a;b|c&d",
           "*", "~", "--leading-dash", "-x", "new\nline", "tab\there", "ünïcödé ✓", "$HOME",
           "${PATH}", "back\\slash", "!", "#hash", "%j %x", "", " ", "x" * 10000]


def render(kind, cluster=None, **kw):
    return materialize(unchecked(JobSpec(kind=kind, **kw), cluster), run_dir="/tmp/run").script


def bash_n(script: str) -> None:
    r = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def args_as_bash_sees_them(script: str) -> list[str]:
    """Evaluate only the rendered `set --` line in bash and read back "$@"."""
    start = script.index("\nset -- ") + 1
    segment = script[start:script.index('\nif [ "$#" -eq 0 ]', start)]
    r = subprocess.run(["bash", "-c", segment + '\nprintf "%s\\0" "$@"'], capture_output=True)
    assert r.returncode == 0
    return r.stdout.decode().split("\0")[:-1]


@pytest.mark.parametrize("kind", kinds.names())
def test_every_kind_renders_and_passes_bash_n(kind):
    script = render(kind, program=["python3", "prog.py", "--flag", "x y"])
    bash_n(script)
    assert script.startswith("#!/bin/bash\n")
    assert "#SBATCH --nodes=3" in script


@pytest.mark.parametrize("kind", kinds.names())
def test_every_kind_passes_shellcheck(kind):
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed")
    script = render(kind, program=["python3", "prog.py"], env={"A": "1"}, array="0-3",
                    after=["12:any"])
    r = subprocess.run(["shellcheck", "-"], input=script, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_program_arguments_arrive_byte_for_byte():
    script = render("mpi", program=["prog", *HOSTILE])
    bash_n(script)
    assert args_as_bash_sees_them(script) == ["prog", *HOSTILE]


def test_env_values_are_quoted():
    values = {f"V{i}": v for i, v in enumerate(HOSTILE)}
    script = render("mpi", program=["prog"], env=values)
    bash_n(script)
    start = script.index("\nexport V0=") + 1
    exports = script[start:script.index("\n# A program given", start)]
    names = " ".join(values)
    r = subprocess.run(["bash", "-c", exports + f'\nfor n in {names}; do printf "%s\\0" "${{!n}}"; done'],
                       capture_output=True)
    assert r.stdout.decode().split("\0")[:-1] == HOSTILE


def test_sbatch_lines_are_comments_even_for_hostile_names():
    for name in [v for v in HOSTILE if "\n" not in v and v.strip()]:
        script = render("mpi", program=["p"], job_name=name[:1024])
        bash_n(script)
        line = next(ln for ln in script.splitlines() if ln.startswith("#SBATCH --job-name="))
        assert line.startswith("#SBATCH")


def test_sbatch_value_refuses_line_breaks():
    with pytest.raises(BadInput):
        sbatch_value("a\nb")
    assert sbatch_value("gpu") == "gpu"
    assert sbatch_value("two words") == '"two words"'
    assert sbatch_value('q"b\\') == '"q\\"b\\\\"'


def test_output_dir_percent_is_escaped():
    script = render("mpi", program=["p"], output_dir="/tmp/100%/x")
    assert "#SBATCH --output=/tmp/100%%/x/slurm-%j.out" in script


def test_array_output_and_dependency():
    script = render("mpi", program=["p"], array="0-9%2", after=["41", "42:any", "43:notok"],
                    output_dir="/o")
    assert "#SBATCH --array=0-9%2" in script
    assert "#SBATCH --output=/o/slurm-%A_%a.out" in script
    assert "#SBATCH --dependency=afterok:41,afterany:42,afternotok:43" in script


def test_gpu_kind_tasks_per_node_follow_gpus():
    c = load_file(FIXTURES / "profiles" / "one_node_8gpu.toml")
    script = render("train", cluster=c, program=["t.py"])
    assert "#SBATCH --ntasks-per-node=8" in script and "#SBATCH --gres=gpu:h100:8" in script
    assert "#SBATCH --nodes=1" in script


def test_cpu_only_partition_gets_one_task_per_node():
    c = load_file(FIXTURES / "profiles" / "mixed.toml")
    script = render("train", cluster=c, partition="cpu", program=["t.py"])
    assert "#SBATCH --ntasks-per-node=1" in script and "--gres" not in script
    assert "#SBATCH --nodes=4" in script


@pytest.mark.parametrize("kind", kinds.names())
def test_shipped_direct_templates_match_the_generator(kind):
    shipped = (ROOT / "job_templates" / f"{kind}.sbatch").read_text()
    assert shipped == direct_script(kind), "run: python -m hpcjobs.rendering"
    bash_n(shipped)


@pytest.mark.parametrize("kind", kinds.names())
def test_direct_template_without_program_prints_usage(kind):
    """Run the shipped script by hand with no arguments: usage on stderr, exit 2."""
    if not kinds.get(kind).needs_program:
        pytest.skip("kind runs without a program")
    r = subprocess.run(["bash", str(ROOT / "job_templates" / f"{kind}.sbatch")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "usage: sbatch" in r.stderr
