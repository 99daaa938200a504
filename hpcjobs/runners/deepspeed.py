"""Inside a DeepSpeed job: write the ZeRO-3 config where no run record holds one, or inspect one.

``python -m hpcjobs.runners.deepspeed --write-config PATH [--precision ...]`` runs in the batch
script of the direct-use script (job_templates/deepspeed.sbatch) and of scripts printed by
``hpcjobs render``: there is no run directory with a config in it, so the job writes its own.
``--pinned PATH`` answers whether a config pins offload buffers (the memlock warning).

Runs on a compute node: standard library and the node-side modules only. The defaults here
(:data:`DEFAULTS`) are the deepspeed kind's option defaults too (hpcjobs/kinds/deepspeed.py reads
them), and ``HPCJOBS_DS_<NAME>`` in the environment overrides each, which is how the direct-use
script is configured (``HPCJOBS_DS_OFFLOAD_OPTIMIZER=cpu sbatch deepspeed.sbatch train.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
OFFLOAD_DEVICES = ("none", "cpu", "nvme")
ADAMS = ("torch", "deepspeed")
CONFIG_NAME = "ds_config.json"
# The one source of the generator's defaults (the kind's options take theirs from here).
DEFAULTS = {"precision": "auto", "offload_optimizer": "none", "offload_param": "none",
            "nvme_path": None, "pin_memory": "yes", "micro_batch": 1, "grad_accum": 1,
            "adam": "torch"}


def build_config(*, precision: str = "fp32", offload_optimizer: str = "none",
                 offload_param: str = "none", nvme_path: str | None = None, pin_memory: bool = True,
                 micro_batch: int = 1, grad_accum: int = 1, adam: str = "torch",
                 lr: float = 1e-3) -> dict:
    """A ZeRO stage-3 DeepSpeed config (a plain dict, JSON-ready).

    ``precision`` must already be resolved (bf16, fp16 or fp32). ``adam="torch"`` sets
    ``torch_adam: true``: DeepSpeed then uses torch.optim.AdamW instead of its JIT-compiled
    FusedAdam/CPUAdam, so nothing is compiled at start-up (slower optimizer step with CPU
    offload; ``adam="deepspeed"`` compiles once into TORCH_EXTENSIONS_DIR).
    """
    if precision not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"precision must be resolved to bf16, fp16 or fp32, not {precision!r}")
    zero: dict = {
        "stage": 3,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": 50_000_000,
        "stage3_prefetch_bucket_size": 50_000_000,
        # Parameters smaller than this stay whole on every rank (saves tiny all-gathers).
        "stage3_param_persistence_threshold": 100_000,
        "stage3_max_live_parameters": 1_000_000_000,
        "stage3_max_reuse_distance": 1_000_000_000,
        "stage3_gather_16bit_weights_on_model_save": True,
    }
    for key, device in (("offload_optimizer", offload_optimizer), ("offload_param", offload_param)):
        if device == "none":
            continue
        entry: dict = {"device": device, "pin_memory": bool(pin_memory)}
        if device == "nvme":
            if not nvme_path:
                raise ValueError(f"{key} to nvme needs nvme_path")
            entry["nvme_path"] = nvme_path
        zero[key] = entry
    params: dict = {"lr": lr, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
    if adam == "torch":
        params["torch_adam"] = True
    config: dict = {
        "train_micro_batch_size_per_gpu": int(micro_batch),
        "gradient_accumulation_steps": int(grad_accum),
        "gradient_clipping": 1.0,
        "steps_per_print": 1_000_000,  # the program prints its own progress
        "wall_clock_breakdown": False,
        "optimizer": {"type": "AdamW", "params": params},
        "zero_optimization": zero,
    }
    if precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif precision == "fp16":
        # loss_scale 0 = dynamic loss scaling: needed for fp16 training to survive overflows.
        config["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16,
                          "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1}
    return config


def pinned_offload(config: dict) -> bool:
    """Does the config ask for page-locked offload buffers (which count against ``ulimit -l``)?"""
    zero = config.get("zero_optimization") or {}
    for key in ("offload_optimizer", "offload_param"):
        entry = zero.get(key) or {}
        if entry.get("device", "none") not in ("none", None) and entry.get("pin_memory", False):
            return True
    return False


def detect_precision() -> str:
    """``auto`` at run time: bf16 from compute capability 8.0, fp16 below, fp32 without a GPU.

    Used where no cluster profile was rendered in (the direct-use script): this node decides.
    """
    from hpcjobs.runners.gpus import GpuProbeError, lowest_compute_capability

    if os.environ.get("DS_ACCELERATOR", "") == "cpu":
        return "fp32"
    try:
        cc = lowest_compute_capability()
    except GpuProbeError:
        return "fp16"  # a GPU of unknown age: fp16 runs everywhere bf16 does
    if cc is None:
        return "fp32"
    return "bf16" if cc >= (8, 0) else "fp16"


def _default(name: str, env: dict):
    value = env.get("HPCJOBS_DS_" + name.upper())
    return value if value not in (None, "") else DEFAULTS[name]


def main(argv: list[str] | None = None, env: dict | None = None) -> int:
    env = os.environ if env is None else env
    p = argparse.ArgumentParser(prog="python -m hpcjobs.runners.deepspeed",
                                description="Write the ZeRO-3 config for a job, or inspect one. "
                                            "Each default can be set as HPCJOBS_DS_<OPTION>.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write-config", metavar="PATH", help="write the generated config here")
    g.add_argument("--pinned", metavar="PATH",
                   help="exit 0 if this config asks for pinned offload buffers, else 1")
    p.add_argument("--precision", choices=PRECISIONS, default=_default("precision", env))
    p.add_argument("--offload-optimizer", choices=OFFLOAD_DEVICES,
                   default=_default("offload_optimizer", env))
    p.add_argument("--offload-param", choices=OFFLOAD_DEVICES, default=_default("offload_param", env))
    p.add_argument("--nvme-path", default=_default("nvme_path", env))
    p.add_argument("--pin-memory", choices=("yes", "no"), default=_default("pin_memory", env))
    p.add_argument("--micro-batch", type=int, default=_default("micro_batch", env))
    p.add_argument("--grad-accum", type=int, default=_default("grad_accum", env))
    p.add_argument("--adam", choices=ADAMS, default=_default("adam", env))
    a = p.parse_args(argv)
    # Values from HPCJOBS_DS_* skip argparse's choices: check them the same way.
    for name, choices in (("precision", PRECISIONS), ("offload_optimizer", OFFLOAD_DEVICES),
                          ("offload_param", OFFLOAD_DEVICES), ("pin_memory", ("yes", "no")),
                          ("adam", ADAMS)):
        if getattr(a, name) not in choices:
            print(f"hpcjobs: HPCJOBS_DS_{name.upper()}={getattr(a, name)!r} is not one of "
                  f"{', '.join(choices)}", file=sys.stderr)
            return 2
    if a.pinned:
        try:
            with open(a.pinned, encoding="utf-8") as f:
                return 0 if pinned_offload(json.load(f)) else 1
        except (OSError, ValueError) as e:
            print(f"hpcjobs: cannot read DeepSpeed config {a.pinned}: {e}", file=sys.stderr)
            return 2
    precision = detect_precision() if a.precision == "auto" else a.precision
    try:
        config = build_config(precision=precision, offload_optimizer=a.offload_optimizer,
                              offload_param=a.offload_param, nvme_path=a.nvme_path,
                              pin_memory=a.pin_memory == "yes", micro_batch=a.micro_batch,
                              grad_accum=a.grad_accum, adam=a.adam)
    except ValueError as e:
        print(f"hpcjobs: {e}", file=sys.stderr)
        return 2
    if a.micro_batch < 1 or a.grad_accum < 1:
        print("hpcjobs: --micro-batch and --grad-accum must be at least 1", file=sys.stderr)
        return 2
    tmp = f"{a.write_config}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.replace(tmp, a.write_config)
    print(f"hpcjobs: DeepSpeed config {a.write_config} ({precision}, offload optimizer "
          f"{a.offload_optimizer}, parameters {a.offload_param})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
