"""The deepspeed kind without Slurm: the ZeRO-3 config it writes, precision by GPU, refusals
before submission, and the job-environment snippets run in a real bash."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hpcjobs import kinds
from hpcjobs.api import prepare
from hpcjobs.cluster import builtin, load_file
from hpcjobs.errors import BadInput
from hpcjobs.kinds import deepspeed as ds
from hpcjobs.rendering import direct_script, materialize
from hpcjobs.spec import JobSpec
from tests.conftest import FIXTURES, ROOT

PROG = ["examples/ds_zero3.py", "--steps", "3"]
H100 = FIXTURES / "profiles" / "one_node_8gpu.toml"
MIXED = FIXTURES / "profiles" / "mixed.toml"


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "hpcjobs", *args], capture_output=True, text=True,
                          env=env or os.environ.copy(), cwd=ROOT)


def spec(cluster=None, **options):
    c = cluster or builtin()
    s = prepare(JobSpec(kind="deepspeed", program=PROG, options=options), c)
    return s, c


def config(cluster=None, **options) -> dict:
    s, _ = spec(cluster, **options)
    files = kinds.get("deepspeed").files(s)
    return json.loads(files["ds_config.json"])


def script(cluster=None, run_dir="/tmp/run", **options) -> str:
    s, _ = spec(cluster, **options)
    return materialize(s, run_dir=run_dir).script


def section(text: str, start: str, end: str) -> str:
    i = text.index(start)
    return text[i:text.index(end, i) + len(end)]


# --- the config ----------------------------------------------------------------------------

def test_default_config_is_zero3_fp16_with_dynamic_loss_scaling_on_the_v100s():
    cfg = config()
    assert cfg["zero_optimization"]["stage"] == 3
    assert cfg["fp16"] == {"enabled": True, "loss_scale": 0, "initial_scale_power": 16,
                           "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1}
    assert "bf16" not in cfg
    assert "offload_optimizer" not in cfg["zero_optimization"]
    assert cfg["optimizer"]["params"]["torch_adam"] is True  # nothing JIT-compiled at start
    for key in ("overlap_comm", "contiguous_gradients", "reduce_bucket_size",
                "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold",
                "stage3_max_live_parameters", "stage3_gather_16bit_weights_on_model_save"):
        assert key in cfg["zero_optimization"]


def test_bf16_where_the_gpu_has_it_and_fp32_without_gpu():
    assert config(load_file(H100))["bf16"] == {"enabled": True}
    cpu = load_file(MIXED)
    s = prepare(JobSpec(kind="deepspeed", program=PROG, partition="cpu"), cpu)
    cfg = json.loads(kinds.get("deepspeed").files(s)["ds_config.json"])
    assert "bf16" not in cfg and "fp16" not in cfg


def test_offload_micro_batch_accumulation_and_adam():
    cfg = config(offload_optimizer="cpu", offload_param="nvme", nvme_path="/local/nvme",
                 pin_memory="no", micro_batch=4, grad_accum=8, adam="deepspeed", precision="fp32")
    z = cfg["zero_optimization"]
    assert z["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    assert z["offload_param"] == {"device": "nvme", "pin_memory": False, "nvme_path": "/local/nvme"}
    assert cfg["train_micro_batch_size_per_gpu"] == 4 and cfg["gradient_accumulation_steps"] == 8
    assert "torch_adam" not in cfg["optimizer"]["params"]


def test_pinned_offload_detection():
    from hpcjobs.runners.deepspeed import pinned_offload

    assert pinned_offload(ds.build_config(offload_optimizer="cpu"))
    assert not pinned_offload(ds.build_config(offload_optimizer="cpu", pin_memory=False))
    assert not pinned_offload(ds.build_config())


def test_user_config_is_copied_verbatim(tmp_path):
    text = '{"zero_optimization": {"stage": 3},\n "fp16": {"enabled": true}}\n'
    f = tmp_path / "mine.json"
    f.write_text(text)
    s, _ = spec(ds_config=str(f))
    assert kinds.get("deepspeed").files(s) == {"ds_config.json": text}


# --- refusals before submission -----------------------------------------------------------

@pytest.mark.parametrize("options,field,words", [
    ({"bf16": True}, "--bf16", ["V100S", "no bf16", "fp16"]),
    ({"precision": "bf16"}, "--precision", ["V100S", "no bf16", "fp16"]),
    ({"bf16": True, "precision": "fp16"}, "--bf16", ["conflicts"]),
    ({"offload_optimizer": "nvme"}, "--nvme-path", ["NVMe"]),
    ({"offload_param": "nvme", "nvme_path": "scratch"}, "--nvme-path", ["relative"]),
    ({"nvme_path": "/nvme"}, "--nvme-path", ["only used"]),
    ({"micro_batch": 0}, "--micro-batch", ["at least 1"]),
    ({"grad_accum": -1}, "--grad-accum", ["at least 1"]),
    ({"config_arg": "deepspeed_config"}, "--config-arg", ["not an option"]),
])
def test_refused_with_the_field_and_the_fix(options, field, words):
    with pytest.raises(BadInput) as e:
        spec(**options)
    assert e.value.field == field
    for w in words:
        assert w in str(e.value)


def test_bf16_is_fine_on_h100():
    cfg = config(load_file(H100), bf16=True)
    assert cfg["bf16"] == {"enabled": True}


def test_user_config_refusals(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BadInput) as e:
        spec(ds_config=str(bad))
    assert e.value.field == "--ds-config" and "not JSON" in str(e.value)
    bf = tmp_path / "bf.json"
    bf.write_text('{"bf16": {"enabled": true}}')
    with pytest.raises(BadInput) as e:
        spec(ds_config=str(bf))
    assert e.value.field == "--ds-config" and "no bf16" in str(e.value)
    ok = tmp_path / "ok.json"
    ok.write_text("{}")
    with pytest.raises(BadInput) as e:
        spec(ds_config=str(ok), offload_optimizer="cpu")
    assert e.value.field == "--offload-optimizer" and "--ds-config" in str(e.value)


def test_cli_bf16_on_v100s_exit_2_one_line_nothing_written(isolated):
    r = cli("submit", "deepspeed", "--bf16", "--", *PROG)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("hpcjobs: error: --bf16: Tesla V100S-PCIE-32GB (compute capability "
                               "7.0) has no bf16"), r.stderr
    assert "fp16" in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    runs = isolated / "runs"
    assert not runs.exists() or not any(runs.rglob("*"))


def test_cli_dry_run_points_at_the_run_record(isolated):
    r = cli("submit", "deepspeed", "--nodes", "3", "--offload-optimizer", "cpu", "--dry-run",
            "--", *PROG)
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --ntasks-per-node=1" in r.stdout and "#SBATCH --gres=gpu:v100s:1" in r.stdout
    assert "/ds_config.json" in r.stdout and "export HPCJOBS_DS_CONFIG=" in r.stdout


# --- the script ----------------------------------------------------------------------------

def test_script_uses_the_launcher_not_deepspeed_or_mpi_discovery():
    text = script()
    assert "hpcjobs_step --kill-on-bad-exit=1 \"$HPCJOBS_PYTHON\" -m hpcjobs.launch -- \"$@\"" in text
    body = text[text.index("DeepSpeed ZeRO-3"):]
    code = "\n".join(ln for ln in body.splitlines() if not ln.lstrip().startswith("#"))
    assert not re.search(r"^\s*deepspeed\b", code, re.M)  # no `deepspeed` launcher command
    assert "--launcher" not in code and "mpirun" not in code
    assert "export HPCJOBS_DS_CONFIG=/tmp/run/ds_config.json" in text


def test_config_arg_appends_the_path_for_the_program():
    text = script(config_arg="--deepspeed_config")
    assert 'set -- "$@" --deepspeed_config "$HPCJOBS_DS_CONFIG"' in text


def test_rendered_without_run_record_writes_the_config_at_run_time(tmp_path):
    text = script(run_dir=None, offload_optimizer="cpu", precision="fp32")
    assert "ds_args=(--precision fp32 --offload-optimizer cpu" in text
    block = section(text, "ds_args=(", "export HPCJOBS_DS_CONFIG\n")
    env = {**os.environ, "HPCJOBS_PYTHON": sys.executable, "SLURM_SUBMIT_DIR": str(tmp_path),
           "SLURM_JOB_ID": "77", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["bash", "-c", block + '\necho "$HPCJOBS_DS_CONFIG"'], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    path = r.stdout.strip()
    assert path == str(tmp_path / "ds_config-77.json")
    cfg = json.loads(Path(path).read_text())
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


def test_direct_script_takes_settings_from_the_environment(tmp_path):
    text = direct_script("deepspeed")
    assert text == (ROOT / "job_templates" / "deepspeed.sbatch").read_text()
    block = section(text, "ds_args=(", "export HPCJOBS_DS_CONFIG\n")
    env = {**os.environ, "HPCJOBS_PYTHON": sys.executable, "SLURM_SUBMIT_DIR": str(tmp_path),
           "SLURM_JOB_ID": "5", "PYTHONPATH": str(ROOT), "HPCJOBS_DS_OFFLOAD_PARAM": "cpu",
           "HPCJOBS_DS_OFFLOAD_OPTIMIZER": "cpu", "HPCJOBS_DS_MICRO_BATCH": "2",
           "DS_ACCELERATOR": "cpu"}
    r = subprocess.run(["bash", "-c", block + '\necho "$HPCJOBS_DS_CONFIG"'], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    cfg = json.loads(Path(r.stdout.strip()).read_text())
    assert cfg["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert cfg["train_micro_batch_size_per_gpu"] == 2
    assert "fp16" not in cfg and "bf16" not in cfg  # auto at run time: no GPU -> fp32
    # A user's own config wins and nothing is written.
    mine = tmp_path / "mine.json"
    mine.write_text("{}")
    r = subprocess.run(["bash", "-c", block + '\necho "$HPCJOBS_DS_CONFIG"'], capture_output=True,
                       text=True, env={**env, "HPCJOBS_DS_CONFIG": str(mine), "SLURM_JOB_ID": "6"})
    assert r.stdout.strip() == str(mine) and not (tmp_path / "ds_config-6.json").exists()


@pytest.mark.parametrize("given,expected", [
    ("9.0a", "9.0"), ("8.0;9.0a+PTX", "8.0;9.0+PTX"), ("7.0 8.0 10.0f", "7.0 8.0 10.0"),
    ("7.0", "7.0"), ("", ""),
])
def test_torch_cuda_arch_list_loses_its_letter_suffix(given, expected):
    block = section(script(), 'if [ -n "${TORCH_CUDA_ARCH_LIST:-}" ]', "\nfi\n")
    r = subprocess.run(["bash", "-c", block + '\nprintf "%s" "${TORCH_CUDA_ARCH_LIST:-}"'],
                       capture_output=True, text=True, env={**os.environ, "TORCH_CUDA_ARCH_LIST": given})
    assert r.returncode == 0 and r.stdout == expected


def test_torch_extensions_dir_is_per_user_and_kept_when_set(tmp_path):
    text = script()
    line = next(ln for ln in text.splitlines() if ln.startswith("export TORCH_EXTENSIONS_DIR="))
    env = {k: v for k, v in os.environ.items() if k != "TORCH_EXTENSIONS_DIR"}
    r = subprocess.run(["bash", "-c", line + '\necho "$TORCH_EXTENSIONS_DIR"'], capture_output=True,
                       text=True, env={**env, "HOME": str(tmp_path)})
    assert r.stdout.strip() == f"{tmp_path}/.cache/torch_extensions"
    r = subprocess.run(["bash", "-c", line + '\necho "$TORCH_EXTENSIONS_DIR"'], capture_output=True,
                       text=True, env={**env, "TORCH_EXTENSIONS_DIR": "/shared/ext"})
    assert r.stdout.strip() == "/shared/ext"


@pytest.mark.parametrize("offload,limit,warned", [
    ("cpu", "64", True), ("cpu", "unlimited", False), ("none", "64", False),
])
def test_memlock_warning_when_pinned_offload_meets_a_limit(tmp_path, offload, limit, warned):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(ds.build_config(offload_optimizer=offload)))
    block = section(script(), "memlock=$(ulimit -l)", "\nfi\n")
    env = {**os.environ, "HPCJOBS_PYTHON": sys.executable, "HPCJOBS_DS_CONFIG": str(cfg),
           "PYTHONPATH": str(ROOT)}
    if limit == "unlimited" and subprocess.run(["bash", "-c", "ulimit -l unlimited"]).returncode:
        pytest.skip("cannot raise the memlock limit here")
    r = subprocess.run(["bash", "-c", f"ulimit -l {limit}\n" + block], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0
    assert ("locked-memory limit" in r.stderr) == warned, r.stderr
    if warned:
        assert "LimitMEMLOCK=infinity" in r.stderr and "PropagateResourceLimitsExcept=MEMLOCK" in r.stderr


def test_write_config_command(tmp_path):
    out = tmp_path / "c.json"
    r = subprocess.run([sys.executable, "-m", "hpcjobs.runners.deepspeed", "--write-config", str(out),
                        "--precision", "bf16", "--offload-optimizer", "cpu", "--grad-accum", "2"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    cfg = json.loads(out.read_text())
    assert cfg["bf16"]["enabled"] and cfg["gradient_accumulation_steps"] == 2
    r = subprocess.run([sys.executable, "-m", "hpcjobs.runners.deepspeed", "--pinned", str(out)], cwd=ROOT)
    assert r.returncode == 0
    r = subprocess.run([sys.executable, "-m", "hpcjobs.runners.deepspeed", "--write-config", str(out),
                        "--offload-param", "nvme"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "nvme_path" in r.stderr


# --- the memory plan (hpcjobs.planner), with --model ----------------------------------------

def test_plan_only_with_a_model():
    if ds._plan is None:
        pytest.skip("hpcjobs.planner not present")
    s, c = spec()
    assert kinds.get("deepspeed").plan(s.spec, c) is None
    s, c = spec(model="llama-2-7b", offload_optimizer="cpu", seq_length=2048)
    p = kinds.get("deepspeed").plan(s.spec, c)
    assert p.ok and p.framework == "deepspeed" and p.params["zero_stage"] == 3
    assert p.params["dtype"] == "float16" and p.params["offload"] == "optimizer"


def test_plan_refuses_70b_on_three_v100s_and_suggests_offload_in_this_kinds_words():
    if ds._plan is None:
        pytest.skip("hpcjobs.planner not present")
    with pytest.raises(BadInput) as e:
        spec(model="llama-2-70b")
    msg = str(e.value)
    assert "GB per GPU > 32 GB" in msg
    assert "--offload-optimizer cpu --offload-param cpu" in msg and "--offload all" not in msg
    # The suggestion, taken as given, passes.
    s, c = spec(model="llama-2-70b", recompute="full", offload_optimizer="cpu", offload_param="cpu")
    assert kinds.get("deepspeed").plan(s.spec, c).ok
