"""The CLI without Slurm: bad input exits 2 with one line and leaves nothing behind."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def cli(*args, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "hpcjobs", *args], capture_output=True, text=True,
                          env=env or os.environ.copy(), cwd=cwd)


def nothing_written(tmp_path):
    runs = tmp_path / "runs"
    return not runs.exists() or not any(runs.rglob("*"))


BAD_INPUT = [
    (["submit", "mpi", "--nodes", "9", "--", "true"], "--nodes"),
    (["submit", "mpi", "--time", "soon", "--", "true"], "--time"),
    (["submit", "mpi", "--env", "NOEQUALS", "--", "true"], "--env"),
    (["submit", "mpi", "--partition", "debug", "--", "true"], "--partition"),
    (["submit", "mpi"], "PROG"),
    (["submit", "mpi", "--", "python3", "no/such/file.py"], "PROG"),
    (["submit", "mpi", "--", "./missing-binary"], "PROG"),
    (["submit", "nosuchkind", "--", "true"], "KIND"),
    (["submit", "mpi", "--array", "x", "--", "true"], "--array"),
    (["submit", "mpi", "--after", "x:y", "--", "true"], "--after"),
    (["render", "mpi", "--gpus-per-node", "4", "--", "true"], "--gpus-per-node"),
]


@pytest.mark.parametrize("args,field", BAD_INPUT)
def test_bad_input_exit_2_one_line_nothing_written(isolated, args, field):
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("hpcjobs: error: " + field), r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stdout == ""
    assert nothing_written(isolated)


def test_unknown_option_is_a_usage_error(isolated):
    r = cli("submit", "mpi", "--bogus", "--", "true")
    assert r.returncode == 2 and "No such option" in r.stderr and nothing_written(isolated)


def test_dry_run_prints_the_script_and_writes_nothing(isolated):
    r = cli("submit", "mpi", "--nodes", "2", "--dry-run", "--", "hostname", "-s")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("#!/bin/bash") and "set -- hostname -s" in r.stdout
    assert "#SBATCH --nodes=2" in r.stdout
    assert nothing_written(isolated)


def test_render_matches_dry_run_but_for_the_output_path(isolated):
    a = cli("render", "mpi", "--output-dir", "/tmp/o", "--", "true").stdout
    b = cli("submit", "mpi", "--output-dir", "/tmp/o", "--dry-run", "--", "true").stdout
    # The monitor's samples go into the run record, which only a submission has.
    def drop(s): return [x for x in s.splitlines() if not x.startswith("export HPCJOBS_MONITOR_DIR=")]
    assert drop(a) == drop(b) and a.count("HPCJOBS_MONITOR_DIR=") == b.count("HPCJOBS_MONITOR_DIR=") == 1


def test_slurm_missing_is_exit_3_and_leaves_no_record(isolated):
    env = os.environ.copy()
    env["PATH"] = os.path.dirname(sys.executable)  # python, but no sbatch
    r = cli("submit", "mpi", "--", "true", env=env)
    assert r.returncode == 3, r.stderr
    assert "sbatch" in r.stderr and "Traceback" not in r.stderr
    assert nothing_written(isolated)


def test_help_and_kinds(isolated):
    r = cli("--help")
    assert r.returncode == 0 and "submit" in r.stdout and "sandbox" in r.stdout
    r = cli("kinds")
    assert "mpi" in r.stdout and "train" in r.stdout
    r = cli("submit", "train", "--help")
    assert "--gpus-per-node" in r.stdout and "--dry-run" in r.stdout


# --- status / logs / wait / cancel / why: bad input before any Slurm call -------------------

def no_slurm_env():
    """PATH with python but no Slurm command: a test passes only if nothing reached Slurm
    (else it would exit 3, "command not found")."""
    env = os.environ.copy()
    env["PATH"] = os.path.dirname(sys.executable)
    return env


WATCH_BAD_INPUT = [
    (["cancel", "abc"], "JOBID: 'abc' is not a job id"),
    (["cancel", "12", "abc"], "JOBID: 'abc' is not a job id"),  # nothing cancelled, not even 12
    (["wait", "12_x"], "JOBID: '12_x' is not a job id"),
    (["status", "1.5"], "JOBID: '1.5' is not a job id"),
    (["logs", "abc"], "JOBID: 'abc' is not a job id"),
    (["why"], "JOBID: no job id given"),
    (["status", "--state", "RUNING"], "--state: 'RUNING' is not a Slurm job state"),
    (["status", "--kind", "nope"], "--kind: unknown job kind 'nope'"),
    (["wait", "--timeout", "-1", "12"], "Invalid value for '--timeout'"),
    (["logs", "--tail", "-3", "12"], "Invalid value for '--tail'"),
]


@pytest.mark.parametrize("args,message", WATCH_BAD_INPUT)
def test_watch_commands_bad_input_exit_2_before_slurm(isolated, args, message):
    r = cli(*args, env=no_slurm_env())
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("hpcjobs: error: ") and message in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("args", [["status", "12"], ["wait", "12"], ["cancel", "12"],
                                  ["status", "--queue"]])
def test_watch_commands_without_slurm_exit_3(isolated, args):
    r = cli(*args, env=no_slurm_env())
    assert r.returncode == 3, r.stderr
    assert "squeue: command not found" in r.stderr and "Traceback" not in r.stderr


def test_job_ids_in_shell_completion(isolated):
    from hpcjobs import runs

    for jid in ("101", "1009", "2001"):
        runs.link_job(runs.create(runs.new_run_path("mpi"), "#!/bin/bash\n", {}, {}, {}), jid)
    env = {**os.environ, "_HPCJOBS_COMPLETE": "bash_complete", "COMP_WORDS": "hpcjobs wait 10",
           "COMP_CWORD": "2"}
    r = subprocess.run([sys.executable, "-c", "from hpcjobs.cli import main; main(prog_name='hpcjobs')"],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["plain,1009", "plain,101"]  # newest first, prefix "10"
    for cmd in ("logs", "cancel", "status", "why"):
        env["COMP_WORDS"] = f"hpcjobs {cmd} 2"
        r = subprocess.run([sys.executable, "-c", "from hpcjobs.cli import main; main(prog_name='hpcjobs')"],
                           capture_output=True, text=True, env=env, cwd=ROOT)
        assert r.stdout.split() == ["plain,2001"], (cmd, r.stdout)


def test_why_log_without_a_job_id(isolated, tmp_path):
    log = tmp_path / "train.log"
    log.write_text("epoch 1\nModuleNotFoundError: No module named 'nosuch'\n")
    r = cli("why", "--log", str(log), env=no_slurm_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1] == "cause:    a module or command is missing on the nodes"
    assert "train.log:2: ModuleNotFoundError" in r.stdout
    assert "no job id given" in r.stdout


def test_watch_help_texts(isolated):
    assert "exit 124" in cli("wait", "--help").stdout
    assert "--expand" in cli("status", "--help").stdout and "--state" in cli("status", "--help").stdout
    assert "--tail" in cli("logs", "--help").stdout
    assert "already ended" in cli("cancel", "--help").stdout


# --- issue 11: sbatch options, typos, the direct scripts, the kinds' help -------------------

EVERY_OPTION = ["--mem", "64G", "--exclusive", "--constraint", "ib&v100s", "--exclude", "pve3",
                "--nodelist", "pve1", "--reservation", "maint", "--mail-type", "end,fail",
                "--mail-user", "me@example.org", "--gres", "gpu:v100s:1,nvme:1", "--comment",
                'run "7" of $SWEEP; a#b', "--begin", "now+1hour", "--deadline", "now+2days",
                "--sbatch-arg=--nice=10", "--sbatch-arg=--licenses=fluent: 2",
                "--sbatch-arg=--hold"]


def test_every_sbatch_option_on_its_own_sbatch_line_quoted(isolated):
    r = cli("render", "mpi", *EVERY_OPTION, "--", "true")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("#SBATCH ")]
    for want in ["#SBATCH --mem=64G", "#SBATCH --exclusive", '#SBATCH --constraint="ib&v100s"',
                 "#SBATCH --exclude=pve3", "#SBATCH --nodelist=pve1", "#SBATCH --reservation=maint",
                 "#SBATCH --mail-type=END,FAIL", "#SBATCH --mail-user=me@example.org",
                 "#SBATCH --gres=gpu:v100s:1,nvme:1",
                 '#SBATCH --comment="run \\"7\\" of $SWEEP; a#b"', "#SBATCH --begin=now+1hour",
                 "#SBATCH --deadline=now+2days", "#SBATCH --nice=10",
                 '#SBATCH --licenses="fluent: 2"', "#SBATCH --hold", "#SBATCH --nodes=2"]:
        assert want in lines, (want, lines)
    assert sum(ln.startswith("#SBATCH --gres=") for ln in lines) == 1  # sbatch keeps the last
    # ... and in the spec that the run record keeps
    r = cli("submit", "mpi", *EVERY_OPTION, "--dry-run", "--", "true")
    assert r.returncode == 0 and "#SBATCH --exclusive" in r.stdout


def test_sbatch_lines_read_back_as_given_by_sbatchs_own_tokenizer_rules(isolated):
    """What sbatch reads from `#SBATCH --comment="..."`: the value with \\" and \\\\ unescaped."""
    import shlex

    r = cli("render", "mpi", "--comment", 'a "b" \\c $d', "--", "true")
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("#SBATCH --comment="))
    assert shlex.split(line[len("#SBATCH "):]) == ['--comment=a "b" \\c $d']


def test_every_sbatch_option_is_in_the_help(isolated):
    out = cli("submit", "mpi", "--help").stdout
    for opt in ("--mem", "--mem-per-gpu", "--exclusive", "--constraint", "--exclude", "--nodelist",
                "--reservation", "--mail-type", "--mail-user", "--gres", "--comment", "--begin",
                "--deadline", "--sbatch-arg"):
        assert opt in out, opt


def test_a_program_option_before_the_dashes_says_where_it_goes(isolated):
    r = cli("submit", "train", "--epochs", "3", "--", "examples/train_ddp.py")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "No such option '--epochs' (did you mean '--qos'?): the program's own options go " \
           "after --, e.g. hpcjobs submit train [OPTIONS] -- PROG --epochs 3" in r.stderr, r.stderr
    r = cli("render", "mpi", "--zzz=1", "--", "true")  # close to nothing: still said
    assert r.returncode == 2 and "go after --, e.g. hpcjobs render mpi [OPTIONS] -- PROG --zzz=1" \
        in r.stderr and nothing_written(isolated)


def test_python_not_on_the_jobs_path_is_warned_about(isolated, tmp_path):
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin")}  # no python, no python3
    r = cli("submit", "mpi", "--dry-run", "--", "python", "examples/mpi_allreduce.py", env=env)
    assert r.returncode == 0, r.stderr
    assert "hpcjobs: warning: 'python' is not on this host's PATH" in r.stderr
    assert "-- examples/mpi_allreduce.py" in r.stderr  # the form that runs under the job's Python
    r = cli("submit", "mpi", "--dry-run", "--", sys.executable, "examples/mpi_allreduce.py", env=env)
    assert "warning" not in r.stderr


def test_kind_help_examples_are_commands_that_work(isolated):
    """Each kind's --help example, run as written (with --dry-run), is accepted; vllm's was
    `-- MODEL [VLLM-SERVE-ARGS...]`, which the CLI refuses."""
    import re
    import shlex

    import click

    from hpcjobs import kinds
    from hpcjobs.cli.jobs import submit

    ctx = click.Context(submit)
    for name in kinds.names():
        text = " ".join(submit.get_command(ctx, name).help.split())
        argv = shlex.split(re.search(r"e\.g\. (hpcjobs submit .*)$", text).group(1))
        assert argv[:3] == ["hpcjobs", "submit", name], argv
        dashes = argv.index("--") if "--" in argv else len(argv)
        if any(a.isupper() or (a.endswith(".py") and not (ROOT / a).exists())
               for a in argv[dashes + 1:dashes + 2]):
            continue  # a placeholder for the user's program (PROG, train.py)
        r = cli(*argv[1:dashes], "--dry-run", *argv[dashes:])
        assert r.returncode == 0, (name, argv, r.stderr)
        assert "hpcjobs: error" not in r.stderr
    help_text = " ".join(submit.get_command(ctx, "vllm").help.split())
    assert "--model meta-llama/Llama-2-7b-hf -- --max-num-seqs 64" in help_text
    assert "-- MODEL" not in help_text


def test_direct_render_names_the_profile_it_used(isolated, tmp_path):
    r = cli("render", "mpi", "--direct")
    assert "for the built-in cluster profile;" in r.stdout
    prof = tmp_path / "site.toml"
    from hpcjobs.cluster import builtin_text

    prof.write_text(builtin_text().replace('name = "pve"', 'name = "site"'))
    r = cli("--cluster", str(prof), "render", "mpi", "--direct")
    assert f"for cluster profile {prof};" in r.stdout and "built-in" not in r.stdout


def test_mpi_asks_for_gpus_only_when_told(isolated):
    r = cli("render", "mpi", "--", "true")
    assert "--gres" not in r.stdout, r.stdout
    r = cli("render", "mpi", "--gpus-per-node", "1", "--", "true")
    assert "#SBATCH --gres=gpu:v100s:1" in r.stdout
    assert "--gres" not in cli("render", "mpi", "--direct").stdout
    assert "#SBATCH --gres=gpu:v100s:1" in cli("render", "train", "--", "examples/train_ddp.py").stdout


def test_direct_bench_scripts_read_the_link_rate_where_they_run(isolated, tmp_path):
    """The shipped bench scripts judged the sandbox's veth against EDR: no rate is baked in;
    the benchmark reads the profile in use on the node (as hpcjobs.launch finds it)."""
    import argparse

    from hpcjobs.bench.report import link_from_profile

    for kind in ("bench-allreduce", "bench-mpi"):
        direct = cli("render", kind, "--direct").stdout
        assert "--link-gbps" not in direct and "--fabric=" not in direct, kind
        assert "--link-gbps=100 --fabric=infiniband" in cli("render", kind, "--nodes", "2").stdout
    prof = tmp_path / "veth.toml"
    prof.write_text((ROOT / "hpcjobs/data/default_cluster.toml").read_text()
                    .replace('kind = "infiniband"', 'kind = "ethernet"').replace("rate_gbps = 100",
                                                                               "rate_gbps = 10"))
    args = argparse.Namespace(link_gbps=None, fabric="")
    where = link_from_profile(args, {"HPCJOBS_CLUSTER": str(prof)})
    assert (args.link_gbps, args.fabric) == (10.0, "ethernet") and str(prof) in where
    args = argparse.Namespace(link_gbps=25.0, fabric="roce")  # a rendered job's own figures win
    assert link_from_profile(args, {"HPCJOBS_CLUSTER": str(prof)}) == "command line"
    assert (args.link_gbps, args.fabric) == (25.0, "roce")


def placeholder_profile(tmp_path):
    """The built-in profile with its GPUs marked as the sandbox marks them."""
    from hpcjobs.cluster import builtin_text

    prof = tmp_path / "fake-gpus.toml"
    prof.write_text(builtin_text().replace('name = "pve"', 'name = "fake"\nsandbox = true')
                    .replace('model = "Tesla V100S-PCIE-32GB"', 'model = "Tesla V100S-PCIE-32GB (fake)"'))
    return str(prof)


def test_gpu_kinds_on_placeholder_gpus_fall_back_with_a_notice(isolated, tmp_path):
    import json

    prof = placeholder_profile(tmp_path)
    r = cli("--cluster", prof, "submit", "deepspeed", "--dry-run", "--", "examples/ds_zero3.py")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ("hpcjobs: notice: the GPUs of cluster 'fake' are placeholders (GRES without "
                        "a driver): deepspeed runs on CPU (fp32 and gloo in place of fp16/bf16 and "
                        "NCCL)\n")
    from hpcjobs import api
    from hpcjobs.cluster import load_file
    from hpcjobs.spec import JobSpec

    files = api.render(JobSpec(kind="deepspeed", program=["examples/ds_zero3.py"]),
                       load_file(prof)).files
    cfg = json.loads(files["ds_config.json"])
    assert "fp16" not in cfg and "bf16" not in cfg  # fp16 before: DeepSpeed's traceback
    for kind, prog in (("train", "examples/train_ddp.py"), ("horovod", "examples/horovod_allreduce.py"),
                       ("megatron", "examples/megatron_parallel_state.py")):
        r = cli("--cluster", prof, "submit", kind, "--dry-run", "--", prog)
        assert r.returncode == 0 and r.stderr.startswith("hpcjobs: notice: the GPUs of cluster "
                                                         "'fake' are placeholders"), (kind, r.stderr)
        assert r.stderr.count("\n") == 1
    # each kind names what it really falls back to: torch's gloo only where torch runs
    for kind, falls in (("train", "torch: gloo"), ("jax", "JAX's CPU backend"), ("ray", "Ray's tasks"),
                        ("horovod", "CPU tensors through MPI")):
        r = cli("--cluster", prof, "submit", kind, "--dry-run", "--", "examples/train_ddp.py")
        assert f"{kind} runs on CPU ({falls}" in r.stderr, (kind, r.stderr)
    # the built-in profile's real V100S: no notice, fp16
    r = cli("submit", "deepspeed", "--dry-run", "--", "examples/ds_zero3.py")
    assert r.returncode == 0 and r.stderr == ""
    files = api.render(JobSpec(kind="deepspeed", program=["examples/ds_zero3.py"])).files
    assert json.loads(files["ds_config.json"])["fp16"]["enabled"] is True
