"""What the node's GPUs are, asked of the driver (nvidia-smi), for runners with no cluster profile.

The direct-use scripts run on any cluster, so the node decides what the rendered scripts take
from the profile: the compute capability picks fp16 or bf16 and Transformer Engine or not.
"""

from __future__ import annotations


class GpuProbeError(Exception):
    """nvidia-smi is there but did not answer (a broken driver, a GPU fallen off the bus)."""


def lowest_compute_capability(timeout: float = 30.0) -> tuple[int, int] | None:
    """The lowest compute capability of this node's GPUs; None when the node has no NVIDIA GPU
    (no nvidia-smi, or it lists none)."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=timeout, check=True).stdout
        ccs = [tuple(int(x) for x in line.strip().split(".")[:2]) for line in out.splitlines()
               if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise GpuProbeError(str(e)) from None
    return min(ccs) if ccs else None
