"""``deepspeed``: DeepSpeed ZeRO stage 3, one task per GPU, ranks from Slurm through hpcjobs.launch.

Why not ``deepspeed --launcher slurm``: it wants a hostfile and ssh. Why not DeepSpeed's mpi4py
discovery: it takes MASTER_ADDR from ``hostname -I``, which may be Ethernet rather than ib0.
``deepspeed.init_distributed()`` reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT,
exactly what the launcher sets from Slurm.

The ZeRO-3 config is written next to the script in the run directory (``ds_config.json``) and
its path reaches the program as ``$HPCJOBS_DS_CONFIG`` (and, with ``--config-arg``, as an
argument). ``--ds-config FILE`` uses the user's file instead (copied into the record). Without a
run directory (``sbatch job_templates/deepspeed.sbatch``, or a script printed by ``hpcjobs
render``) the job writes the config itself at run time with ``python -m hpcjobs.runners.deepspeed
--write-config PATH``, whose defaults are this kind's (both read :data:`DEFAULTS`).

Precision follows the GPU of the cluster profile: bf16 from compute capability 8.0 (Ampere),
fp16 with dynamic loss scaling below it (the V100S has no bf16), fp32 on CPU-only partitions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import json
import os

from hpcjobs.cluster import Cluster
from hpcjobs.errors import BadInput
from hpcjobs.kinds.base import Kind, Option
from hpcjobs.runners.deepspeed import (ADAMS, CONFIG_NAME, DEFAULTS, OFFLOAD_DEVICES, PRECISIONS,
                                       build_config)
from hpcjobs.spec import JobSpec, placeholder_gpus

import hpcjobs.planner as _plan  # the ZeRO-3 memory plan (with --model)

if TYPE_CHECKING:
    from hpcjobs.prepared import Prepared


# Options that shape the generated config; with --ds-config they would be silently ignored.
_GENERATOR_OPTIONS = ("precision", "offload_optimizer", "offload_param", "nvme_path", "pin_memory",
                      "micro_batch", "grad_accum", "adam")


def _gpus(cluster: Cluster, spec: JobSpec):
    return [n.gpu for n in cluster.partition_nodes(spec.partition) if n.gpu]


def resolve_precision(requested: str, cluster: Cluster, spec: JobSpec) -> str:
    """``auto`` -> bf16 where every GPU of the partition has it, fp16 on older GPUs, fp32 on CPU."""
    if requested != "auto":
        return requested
    gpus = _gpus(cluster, spec)
    if not gpus or not spec.gpus_per_node or placeholder_gpus(cluster):
        return "fp32"  # no GPU, or GRES without a device (the sandbox): DeepSpeed's CPU accelerator
    return "bf16" if all(g.bf16 for g in gpus) else "fp16"


def _no_bf16_gpu(cluster: Cluster, spec: JobSpec):
    return next((g for g in _gpus(cluster, spec) if not g.bf16), None) if spec.gpus_per_node else None


def _bf16_refusal(field: str, gpu, fix: str) -> BadInput:
    name = gpu.model or gpu.type
    return BadInput(field, f"{name} (compute capability {gpu.compute_capability}) has no bf16; "
                    "bf16 needs compute capability 8.0 or newer", fix)


def _read_user_config(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise BadInput("--ds-config", f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise BadInput("--ds-config", f"{path} is not JSON: {e.msg} at line {e.lineno} column {e.colno}",
                       "fix the file (DeepSpeed configs are JSON)") from None
    if not isinstance(data, dict):
        raise BadInput("--ds-config", f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


def _enabled(section) -> bool:
    return isinstance(section, dict) and section.get("enabled") in (True, "true", "auto")


def _deepspeed_support(hw, model) -> _plan.PlanCheck:
    return _plan.PlanCheck("framework", _plan.PASS, f"DeepSpeed ZeRO on CC {hw.cc[0]}.{hw.cc[1]}" +
                           (" (fp16 with dynamic loss scaling)" if hw.cc < (8, 0) else ""),
                           source="DeepSpeed config-json docs (fp16 / bf16 blocks)")


# The planner's rules for DeepSpeed: ZeRO shards the model states over data parallelism.
DEEPSPEED = _plan.Framework("deepspeed", support=_deepspeed_support, zero=True)


_FP32_THERE = ("use --precision fp32 (or auto, which picks fp32 there), e.g. hpcjobs submit "
               "deepspeed --nodes 3 -- examples/ds_zero3.py --steps 20")


def _placeholder_refusal(cluster: Cluster, field: str, what: str, fix: str = _FP32_THERE) -> BadInput:
    """On GRES without a device DeepSpeed picks its CPU accelerator, which has no half types."""
    return BadInput(field, f"{what} needs a CUDA GPU, and the GPUs of cluster {cluster.name!r} are "
                    "placeholders (GRES without a driver): DeepSpeed would stop with \"Type fp16 "
                    "is not supported on your device\"", fix)


class DeepSpeedKind(Kind):
    name = "deepspeed"
    summary = "DeepSpeed ZeRO-3 training, one task per GPU (env:// from Slurm, no ssh/hostfile)"
    template = "deepspeed.sbatch.j2"
    task_per_gpu = True
    usage = "train.py [ARGS...]"
    cpu_fallback = "fp32 and gloo in place of fp16/bf16 and NCCL"
    options = (
        Option("ds-config", "path", None, "Your own DeepSpeed JSON config (used as is, copied into "
               "the run record) instead of the generated ZeRO-3 one."),
        Option("precision", str, DEFAULTS["precision"], "auto: bf16 on GPUs with compute capability >= 8.0, fp16 "
               "with dynamic loss scaling below (V100), fp32 on CPU-only nodes.", choices=PRECISIONS),
        Option("bf16", bool, False, "Insist on bf16 (refused on GPUs without it, e.g. V100S)."),
        Option("offload-optimizer", str, DEFAULTS["offload_optimizer"], "ZeRO-Offload of optimizer states.",
               choices=OFFLOAD_DEVICES),
        Option("offload-param", str, DEFAULTS["offload_param"], "ZeRO-Infinity offload of parameters.",
               choices=OFFLOAD_DEVICES),
        Option("nvme-path", str, DEFAULTS["nvme_path"], "Node-local NVMe directory for nvme offload (absolute path, "
               "must exist on every node)."),
        Option("pin-memory", str, DEFAULTS["pin_memory"], "Page-locked offload buffers (faster; count against "
               "ulimit -l).", choices=("yes", "no")),
        Option("micro-batch", int, DEFAULTS["micro_batch"], "train_micro_batch_size_per_gpu."),
        Option("grad-accum", int, DEFAULTS["grad_accum"], "gradient_accumulation_steps."),
        Option("adam", str, DEFAULTS["adam"], "torch: torch.optim.AdamW, nothing to compile; deepspeed: "
               "DeepSpeed's FusedAdam/CPUAdam (JIT-compiled once into TORCH_EXTENSIONS_DIR; "
               "much faster with CPU offload).", choices=ADAMS),
        Option("config-arg", str, None, "Also pass the config path to the program after this "
               "option, e.g. --config-arg=--deepspeed_config (the path is always in "
               "$HPCJOBS_DS_CONFIG)."),
        # The plan's shared options: with --model, ZeRO-3 memory is checked before submission.
        _plan.MODEL_OPTION, _plan.SEQ_OPTION, _plan.RECOMPUTE_OPTION,
    )

    def check(self, spec: JobSpec, cluster: Cluster) -> None:
        o = spec.options
        if o["ds_config"]:
            given = [k for k in _GENERATOR_OPTIONS if o[k] != DEFAULTS[k]]
            if given:
                flag = "--" + given[0].replace("_", "-")
                raise BadInput(flag, "has no effect with --ds-config (your file is used as is)",
                               "put the setting into your config file, or drop --ds-config")
            cfg = _read_user_config(o["ds_config"])
            gpu = _no_bf16_gpu(cluster, spec)
            if gpu and (_enabled(cfg.get("bf16")) or _enabled(cfg.get("bfloat16"))):
                raise _bf16_refusal("--ds-config", gpu, "set \"fp16\": {\"enabled\": true, "
                                    "\"loss_scale\": 0} instead of bf16 in the config")
        if placeholder_gpus(cluster) and spec.gpus_per_node:
            if o["bf16"] or o["precision"] in ("bf16", "fp16"):
                raise _placeholder_refusal(cluster, "--bf16" if o["bf16"] else "--precision",
                                           "bf16" if o["bf16"] else o["precision"])
            if o["ds_config"]:
                cfg = _read_user_config(o["ds_config"])
                half = [k for k in ("fp16", "bf16", "bfloat16") if _enabled(cfg.get(k))]
                if half:
                    raise _placeholder_refusal(cluster, "--ds-config", f"{o['ds_config']}'s "
                                               f"{half[0]}", f"set \"{half[0]}\": {{\"enabled\": "
                                               "false} in the config, or drop --ds-config")
        if o["bf16"] and o["precision"] not in ("auto", "bf16"):
            raise BadInput("--bf16", f"conflicts with --precision {o['precision']}", "give one of them")
        gpu = _no_bf16_gpu(cluster, spec)
        if gpu and o["bf16"]:
            raise _bf16_refusal("--bf16", gpu, "drop --bf16: fp16 with dynamic loss scaling is "
                                "used on this GPU (--precision fp16)")
        if gpu and o["precision"] == "bf16":
            raise _bf16_refusal("--precision", gpu, "use --precision fp16 (or auto)")
        for flag, value in (("--micro-batch", o["micro_batch"]), ("--grad-accum", o["grad_accum"])):
            if value is None or value < 1:
                raise BadInput(flag, f"must be at least 1, got {value}")
        nvme = "nvme" in (o["offload_optimizer"], o["offload_param"])
        if nvme and not o["nvme_path"]:
            raise BadInput("--nvme-path", "nvme offload needs a directory on a node-local NVMe drive",
                           "give e.g. --nvme-path /local_nvme/$USER (it must exist on every node)")
        if o["nvme_path"] and not nvme:
            raise BadInput("--nvme-path", "is only used with --offload-optimizer nvme or "
                           "--offload-param nvme", "add one of them or drop --nvme-path")
        if o["nvme_path"] and not os.path.isabs(o["nvme_path"]):
            raise BadInput("--nvme-path", f"{o['nvme_path']!r} is relative; each node resolves it "
                           "in its own working directory", "give an absolute path")
        if o["config_arg"] is not None and (not o["config_arg"].startswith("-") or "\n" in o["config_arg"]):
            raise BadInput("--config-arg", f"{o['config_arg']!r} is not an option name",
                           "give the program's option, e.g. --config-arg=--deepspeed_config")

    def plan(self, spec: JobSpec, cluster: Cluster):
        """ZeRO-3 memory per GPU (hpcjobs.planner) when ``--model`` names the model's shape."""
        o = spec.options
        if not o.get("model") or o["ds_config"]:
            return None
        s = self.settings(spec, cluster)
        offload = ("all" if s["offload_param"] != "none" else
                   "optimizer" if s["offload_optimizer"] != "none" else "none")
        dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[s["precision"]]
        # Memory is the check that can fail here (TP = PP = 1); blame the offload option.
        names = {"tp": "--offload-optimizer", "pp": "--offload-optimizer",
                 "offload": "--offload-optimizer", "micro_batch_size": "--micro-batch",
                 "dtype": "--precision"}
        return _plan.training_from_spec(spec, cluster, framework=DEEPSPEED, tp=1, pp=1, cp=1,
                                        dtype=dtype, micro_batch_size=s["micro_batch"],
                                        zero_stage=3, offload=offload, names=names,
                                        render=_render_suggestion)

    def settings(self, spec: JobSpec, cluster: Cluster) -> dict:
        """The generator's keyword arguments for this spec (precision resolved)."""
        o = spec.options
        precision = "bf16" if o["bf16"] else resolve_precision(o["precision"], cluster, spec)
        return {"precision": precision, "offload_optimizer": o["offload_optimizer"],
                "offload_param": o["offload_param"], "nvme_path": o["nvme_path"],
                "pin_memory": o["pin_memory"] == "yes", "micro_batch": o["micro_batch"],
                "grad_accum": o["grad_accum"], "adam": o["adam"]}

    def context(self, job: Prepared) -> dict:
        o = job.options
        s = self.settings(job.spec, job.cluster)
        gen_args = ["--precision", s["precision"], "--offload-optimizer", s["offload_optimizer"],
                    "--offload-param", s["offload_param"], "--pin-memory", o["pin_memory"],
                    "--micro-batch", str(s["micro_batch"]), "--grad-accum", str(s["grad_accum"]),
                    "--adam", s["adam"]]
        if s["nvme_path"]:
            gen_args += ["--nvme-path", s["nvme_path"]]
        return {
            "ds_user_config": os.path.abspath(o["ds_config"]) if o["ds_config"] else None,
            "ds_gen_args": gen_args,
            "ds_precision": s["precision"],
        }

    def files(self, job: Prepared) -> dict[str, str]:
        o = job.options
        if o["ds_config"]:
            # Verbatim copy: the record must reproduce the job even if the file changes later.
            with open(o["ds_config"], encoding="utf-8") as f:
                return {CONFIG_NAME: f.read()}
        return {CONFIG_NAME: json.dumps(build_config(**self.settings(job.spec, job.cluster)), indent=2) + "\n"}


def _render_suggestion(key: str, value, names) -> str:
    """The plan's suggestion in this kind's option names."""
    if key == "offload":
        return {"none": "--offload-optimizer none --offload-param none",
                "optimizer": "--offload-optimizer cpu",
                "all": "--offload-optimizer cpu --offload-param cpu"}[value]
    if key == "dtype":
        return "--precision " + {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[value]
    if key in ("tp", "pp"):
        return "" if value == 1 else (f"(a layout with {'tensor' if key == 'tp' else 'pipeline'} "
                                      f"parallel size {value}: not in this kind, see the megatron kind)")
    if key == "zero_stage":
        return ""
    if key == "micro_batch_size":
        return f"--micro-batch {value}"
    return _plan.default_render(key, value, names)


KIND = DeepSpeedKind()
