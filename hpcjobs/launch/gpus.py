"""GPU binding by local rank, unless Slurm already bound the task's GPUs.

Slurm sets CUDA_VISIBLE_DEVICES (renumbered inside the step) when the step has GPUs; it is then
left alone, like every variable already set. Without it, a node's GPUs are counted from
``/proc/driver/nvidia/gpus`` (one directory per GPU, named by PCI bus id) and task ``i`` is
bound to GPU ``i mod count`` in PCI bus order (CUDA's order under CUDA_DEVICE_ORDER=PCI_BUS_ID,
and nvidia-smi's and Slurm's), in one of two ways (``HPCJOBS_GPU_BIND``):

- ``visible``: all GPUs stay visible and the program picks ``cuda:LOCAL_RANK``. This is what
  torch (torchrun's convention), DeepSpeed, Megatron-LM and Horovod do themselves, so it is the
  default for them: narrowing the view to one GPU breaks them. Seen on 2x H100: DeepSpeed's
  ``init_distributed`` on local rank 1 failed with "device_id cuda:1 is out of range" and rank 0
  then waited in the rendezvous. vLLM and Ray need every GPU of the node in their one task.
- ``narrow``: CUDA_VISIBLE_DEVICES is the task's one GPU, which the program sees as device 0.
  The default for MPI programs, which usually take device 0 or ``local_rank % count``.

``torch.cuda.set_device(LOCAL_RANK % torch.cuda.device_count())`` is right under both.
"""

import os


def gpu_count(root: str) -> int:
    try:
        return len(os.listdir(os.path.join(root, "proc/driver/nvidia/gpus")))
    except OSError:
        return 0


# Frameworks whose programs choose cuda:LOCAL_RANK (or need all of a node's GPUs) themselves.
SELF_SELECTING = {"torch", "deepspeed", "megatron", "horovod", "vllm", "jax"}


def mode_for(env: dict, hooks: list[str]) -> tuple[str, str]:
    """(``visible`` or ``narrow``, why)."""
    asked = env.get("HPCJOBS_GPU_BIND", "").strip().lower()
    if asked in ("visible", "narrow"):
        return asked, f"HPCJOBS_GPU_BIND={asked}"
    if set(hooks) & SELF_SELECTING:
        return "visible", (f"{'/'.join(sorted(set(hooks) & SELF_SELECTING))} programs pick "
                           "cuda:LOCAL_RANK themselves")
    return "narrow", "MPI and other programs take device 0"


def binding(env: dict, root: str, local_rank: int, local_world_size: int,
            hooks: list[str] = ("mpi",)) -> tuple[list, list]:
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
    mode, mode_why = mode_for(env, list(hooks))
    if mode == "visible":
        notes.append(f"GPU binding 'visible' ({mode_why}): all {n} GPUs visible in PCI order; "
                     f"this task's is cuda:{gpu} ({why}); HPCJOBS_GPU_BIND=narrow to narrow")
        return out, notes
    out.append(("CUDA_VISIBLE_DEVICES", str(gpu), f"{why} (binding 'narrow': {mode_why})"))
    return out, notes
