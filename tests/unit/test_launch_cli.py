"""`python -m hpcjobs.launch`: dry run, explain, exec without a wrapper, exit codes, imports, profile."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from hpcjobs.errors import BadInput
from hpcjobs.launch import environment, profile, slurmenv
from hpcjobs.launch.__main__ import main, port_taken
from tests.conftest import FIXTURES, ROOT

SYSFS = FIXTURES / "sysfs"


@pytest.fixture
def env(tmp_path):
    """Task 1 of a 3-node step on pve2 (built-in profile), native IB fixture, isolated dirs."""
    return {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "1", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
            "SLURM_NODEID": "1", "SLURM_NTASKS": "3", "SLURM_NNODES": "3",
            "SLURM_TASKS_PER_NODE": "1(x3)", "SLURM_JOB_NODELIST": "pve[1-3]", "SLURMD_NODENAME": "pve2",
            "HPCJOBS_SYSFS_ROOT": str(SYSFS / "ib-active"), "HPCJOBS_SANDBOX_STATE": str(tmp_path / "none"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "HOME": str(tmp_path), "PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}


def launch(args: list[str], env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpcjobs.launch", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False, **kw)


def test_dry_run_prints_sorted_additions(env, capsys):
    assert main(["--dry-run", "--", "true"], env) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == sorted(out) and all("=" in line for line in out)
    got = dict(line.split("=", 1) for line in out)
    assert got == environment.build(env).additions()
    assert (got["RANK"], got["MASTER_ADDR"], got["NCCL_IB_HCA"]) == ("1", "10.100.0.1", "=mlx5_0:1")


def test_explain_gives_every_variable_a_reason(env, capsys):
    env["MASTER_PORT"] = "29500"
    assert main(["--dry-run", "--explain"], env) == 0
    out = capsys.readouterr().out
    for key, value in environment.build(env).additions().items():
        line = next(x for x in out.splitlines() if x.startswith(f"{key}={value} "))
        assert "  # " in line and len(line.split("  # ", 1)[1]) > 3
    assert "# kept MASTER_PORT=29500" in out and "# framework hooks: torch (default)" in out


def test_the_task_environment_is_a_taskenv_not_a_second_plan(env):
    """One name per meaning: hpcjobs.planner has the job-level Plan; the launcher builds the
    environment of one task (issue 10.6)."""
    task = environment.build(env)
    assert type(task).__name__ == "TaskEnv" and isinstance(task, environment.TaskEnv)
    assert not hasattr(environment, "Plan")


def test_exec_replaces_the_launcher(env):
    """No wrapper process: the program has the launcher's pid and the added variables."""
    env["HPCJOBS_SIGNAL"] = "USR2"
    env["HPCJOBS_GPU_BIND"] = "narrow"
    code = ("import os; e = os.environ; print(os.getpid(), e['RANK'], e['WORLD_SIZE'], "
            "e['MASTER_ADDR'], e['HPCJOBS_SIGNAL'], e['CUDA_VISIBLE_DEVICES'])")
    p = subprocess.Popen([sys.executable, "-m", "hpcjobs.launch", "--", sys.executable, "-c", code],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.split() == [str(p.pid), "1", "3", "10.100.0.1", "USR2", "0"]


def test_gpu_binding_by_framework(env):
    """MPI programs get their one GPU as device 0; torch-style programs keep every GPU visible
    and pick cuda:LOCAL_RANK (narrowing broke DeepSpeed on 2x H100: docs/launch.md)."""
    env["HPCJOBS_KIND"] = "mpi"
    assert environment.build(env).additions()["CUDA_VISIBLE_DEVICES"] == "0"
    for kind in ("train", "deepspeed", "megatron", "horovod", "vllm"):
        env["HPCJOBS_KIND"] = kind
        task = environment.build(env)
        assert "CUDA_VISIBLE_DEVICES" not in task.additions(), kind
        assert any("cuda:0" in n and "visible" in n for n in task.notes), task.notes
    env["HPCJOBS_GPU_BIND"] = "narrow"
    assert environment.build(env).additions()["CUDA_VISIBLE_DEVICES"] == "0"
    env["HPCJOBS_KIND"], env["HPCJOBS_GPU_BIND"] = "mpi", "visible"
    assert "CUDA_VISIBLE_DEVICES" not in environment.build(env).additions()


def test_program_exit_status_is_the_programs(env):
    assert launch(["--", sys.executable, "-c", "raise SystemExit(7)"], env).returncode == 7


@pytest.mark.parametrize("drop", ["SLURM_PROCID", "SLURM_JOB_NODELIST", "SLURM_JOB_ID"])
def test_missing_variable_exit_2_one_line(env, drop):
    del env[drop]
    r = launch(["--", "true"], env)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("hpcjobs.launch: SLURM_")
    assert drop in r.stderr and "is not set" in r.stderr


@pytest.mark.parametrize("args,needle", [
    (["--bogus", "--", "true"], "--bogus: unknown option"),
    ([], "PROG: missing"),
    (["--framework"], "--framework: needs a value"),
    (["--framework", "tensorflow", "--", "true"], "--framework: unknown framework 'tensorflow'"),
])
def test_usage_errors_exit_2(env, capsys, args, needle):
    assert main(args, env) == 2
    assert needle in capsys.readouterr().err


def test_user_master_port_must_be_a_port(env, capsys):
    env.update(SLURM_PROCID="0", SLURM_NODEID="0", SLURMD_NODENAME="pve1", MASTER_PORT="http")
    assert main(["--", "true"], env) == 2
    assert "MASTER_PORT: is 'http', not a port number" in capsys.readouterr().err


def test_program_not_found_is_127(env):
    r = launch(["--", "/nonexistent/prog"], env)
    assert r.returncode == 127 and "command not found" in r.stderr


def test_framework_hooks(env, capsys):
    assert main(["--dry-run", "--framework", "megatron,jax"], env) == 0
    a = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    port = str(slurmenv.master_port(4242, 1))
    assert a["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
    assert (a["JAX_COORDINATOR_ADDRESS"], a["JAX_NUM_PROCESSES"], a["JAX_PROCESS_ID"]) == (
        f"10.100.0.1:{port}", "3", "1")
    # All GPUs visible (jax/megatron pick their own): JAX takes SLURM_LOCALID as its device.
    assert "JAX_LOCAL_DEVICE_IDS" not in a and "CUDA_VISIBLE_DEVICES" not in a
    env["HPCJOBS_GPU_BIND"] = "narrow"
    a = environment.build(env, framework="jax").additions()
    assert (a["CUDA_VISIBLE_DEVICES"], a["JAX_LOCAL_DEVICE_IDS"]) == ("0", "0")  # one GPU seen
    del env["HPCJOBS_GPU_BIND"]
    env["HPCJOBS_KIND"] = "megatron"
    assert "CUDA_DEVICE_MAX_CONNECTIONS" in environment.build(env).additions()
    env["HPCJOBS_KIND"] = "train"
    assert "CUDA_DEVICE_MAX_CONNECTIONS" not in environment.build(env).additions()


def test_tcp_warning_only_on_rank_0(env):
    env["HPCJOBS_SYSFS_ROOT"] = str(SYSFS / "no-rdma")
    assert "TCP sockets" not in launch(["--dry-run"], env).stderr
    env.update(SLURM_PROCID="0", SLURM_NODEID="0", SLURMD_NODENAME="pve1")
    r = launch(["--dry-run"], env)
    assert r.returncode == 0 and r.stderr.count("\n") == 1 and "NCCL will run over TCP" in r.stderr


def test_rank0_fails_fast_when_the_port_is_taken(env):
    env.update(SLURM_PROCID="0", SLURM_NODEID="0", SLURMD_NODENAME="pve1")
    listener = None
    for job in range(5000, 5100):  # find a derived port that loopback lets us hold
        port = slurmenv.master_port(job, 1)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
            listener = s
            break
        except OSError:
            s.close()
    assert listener, "no free port to hold"
    try:
        env["SLURM_JOB_ID"] = str(job)
        r = launch(["--", "true"], env)
        assert r.returncode == 2 and r.stderr.startswith("hpcjobs.launch: MASTER_PORT: port ")
        assert f"port {port} is already in use" in r.stderr and r.stderr.count("\n") == 1
        env["SLURM_PROCID"], env["SLURM_NODEID"], env["SLURMD_NODENAME"] = "1", "1", "pve2"
        assert launch(["--", "true"], env).returncode == 0  # only rank 0 checks
    finally:
        listener.close()
    assert port_taken(port, "127.0.0.1") is None


@pytest.mark.parametrize("nodelist,nodename", [
    ("pve[1-3]", "pve2"),
    # Without SLURMD_NODENAME the whole list is expanded: by hand, python-hostlist (which
    # imports re and enum, ~7-12 ms) only for forms the hand path does not know.
    ("pve[1-3]", None), ("pve1,pve2,pve3", None), ("pve[1-2],pve3", None),
])
def test_launcher_path_imports_nothing_heavy(env, nodelist, nodename):
    """The import budget, checked by module names (timing is the benchmark's job)."""
    env["SLURM_JOB_NODELIST"] = nodelist
    if nodename is None:
        del env["SLURMD_NODENAME"]
    # The exec path too, up to the exec: every templated job sets a warning signal.
    code = ("import sys; sys.argv = ['hpcjobs.launch', '--dry-run']; "
            "from hpcjobs.launch.__main__ import main, port_taken; main(); port_taken(1); "
            "from hpcjobs.launch import signals; "
            "signals.apply(signals.warning_signal({'HPCJOBS_SIGNAL': 'USR2'})); "
            "sys.stderr.write(' '.join(sorted(sys.modules)))")
    run = [sys.executable, "-S", "-c", code]  # -S: only what the launcher itself imports
    warm = launch(["--dry-run"], env)  # parses the profile once (with site: hostlist) and caches it
    assert warm.returncode == 0, warm.stderr
    second = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60, check=True)
    mods = set(second.stderr.split())
    forbidden = {"click", "jinja2", "torch", "numpy", "dataclasses", "typing", "json", "tomllib",
                 "socket", "argparse", "hostlist", "re", "hpcjobs.cluster", "pathlib", "inspect",
                 "signal", "enum", "functools", "collections", "__future__"}
    assert "hpcjobs.launch.environment" in mods and not mods & forbidden, mods & forbidden


# --- the cluster profile -----------------------------------------------------------------------

@pytest.mark.parametrize("setup", ["none", "user", "sandbox", "explicit"])
def test_profile_lookup_order_matches_hpcjobs_cluster(isolated, monkeypatch, setup):
    from hpcjobs import cluster

    text = cluster.builtin_text()
    user = isolated / "config" / "hpcjobs" / "cluster.toml"
    sandbox = isolated / "no-sandbox" / "cluster.toml"
    for p in {"user": [user], "sandbox": [user, sandbox], "explicit": [user, sandbox]}.get(setup, []):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    if setup == "explicit":
        monkeypatch.setenv("HPCJOBS_CLUSTER", str(user))
    ours, _ = profile.profile_path(dict(os.environ))
    theirs = cluster.profile_path()
    assert ours == (theirs or profile.builtin_path())
    assert os.path.isfile(profile.builtin_path())


def test_profile_cache(tmp_path):
    prof = tmp_path / "c.toml"
    prof.write_text((ROOT / "hpcjobs/data/default_cluster.toml").read_text())
    env = {"HPCJOBS_CLUSTER": str(prof), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    first, second = profile.load(env), profile.load(env)
    assert (first.cached, second.cached) == (False, True)
    assert second.address("pve3") == "10.100.0.3" and (second.device, second.port) == ("mlx5_0", 1)
    prof.write_text(prof.read_text().replace("10.100.0.[1-3]", "10.100.1.[1-3]"))
    third = profile.load(env)
    assert not third.cached and third.address("pve3") == "10.100.1.3"
    (tmp_path / "file").write_text("")
    unwritable = profile.load(dict(env, XDG_CACHE_HOME=str(tmp_path / "file")))
    assert not unwritable.cached and unwritable.address("pve1") == "10.100.1.1"


def test_bad_profile_is_bad_input(tmp_path, env):
    env["HPCJOBS_CLUSTER"] = str(tmp_path / "missing.toml")
    with pytest.raises(BadInput) as e:
        environment.build(env)
    assert e.value.field == "HPCJOBS_CLUSTER"
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[fabric]\nkind = "warp"\n')
    env["HPCJOBS_CLUSTER"] = str(bad)
    with pytest.raises(BadInput) as e:
        environment.build(env)
    assert str(bad) in str(e.value)
