"""GPU binding: one GPU per task by local rank, unless Slurm already bound the task's GPUs.

Slurm sets CUDA_VISIBLE_DEVICES (renumbered inside the step) when the step has GPUs; it is then
left alone, like every variable already set. Without it, a node's GPUs are counted from
``/proc/driver/nvidia/gpus`` (one directory per GPU, named by PCI bus id), and task ``i`` gets
GPU ``i mod count`` in PCI bus order, which is CUDA's order under CUDA_DEVICE_ORDER=PCI_BUS_ID
(and nvidia-smi's). The program then sees its GPU as device 0: use
``torch.cuda.set_device(LOCAL_RANK % torch.cuda.device_count())``, which is right both here and
when Slurm shows each task all of the node's GPUs.
"""

from __future__ import annotations

import os


def gpu_count(root: str) -> int:
    try:
        return len(os.listdir(os.path.join(root, "proc/driver/nvidia/gpus")))
    except OSError:
        return 0


def binding(env: dict, root: str, local_rank: int, local_world_size: int) -> tuple[list, list]:
    """(variables as (key, value, why), notes)."""
    out = [("CUDA_DEVICE_ORDER", "PCI_BUS_ID",
            "CUDA numbers GPUs as nvidia-smi and Slurm do (PCI bus order), not fastest-first")]
    notes = []
    bound_by = next((k for k in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS") if k in env), None)
    if bound_by:
        notes.append(f"GPUs bound by Slurm or the user ({bound_by}={env[bound_by]}): no binding")
        return out, notes
    n = gpu_count(root)
    if n == 0:
        notes.append("no NVIDIA GPU on this node (/proc/driver/nvidia/gpus is empty or missing): no binding")
        return out, notes
    gpu = local_rank % n
    why = f"local rank {local_rank} of {local_world_size} on a node with {n} GPU(s)"
    if local_world_size > n:
        why += f"; {local_world_size} tasks share {n} GPU(s) round-robin"
    out.append(("CUDA_VISIBLE_DEVICES", str(gpu), why))
    return out, notes
