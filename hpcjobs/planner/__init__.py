"""The planner: arithmetic that refuses impossible LLM jobs before they wait in a queue.

A kind calls ONE function, :func:`check_serving` (vLLM, SGLang) or :func:`check_training`
(Megatron-LM, DeepSpeed ZeRO), or the ``*_from_spec`` wrappers that read the shared options
(:mod:`hpcjobs.planner.options`) from ``spec.options``. Each returns a :class:`Plan`: every check
with PASS/WARN/FAIL and its numbers, the verdict, and, when something fails, a concrete option set
that passes (the suggestion is found by running the same checks on candidates, so it passes by
construction).

Rules, formulas and their sources are in docs/plan.md; each check names its source too.
Nothing here imports torch or a framework: the plan runs on a login node in milliseconds.

The modules, each importing only those above it:

- ``options``: the shared Option objects and the option-name tables
- ``core``: PlanCheck, Hardware, Plan, :func:`hardware`, units and small helpers
- ``checks``: the checks serving and training share (dtype, cross-node TP)
- ``frameworks``: :class:`Framework`, the rules a kind gives the planner about its framework
- ``suggest``: the search for an option set that passes, in the user's option names
- ``serving`` / ``training``: each mode's rules, memory and candidates

This package re-exports the public names (``import hpcjobs.planner as planner; planner.X``). It is
not called ``plan``: that is the API function (``hpcjobs.plan``) and the Kind method that return
a :class:`Plan`, and a package of the same name would shadow the function.
Names with a leading underscore are private to the package (shared between its modules).
"""

from hpcjobs.planner.core import DTYPE_BYTES, FAIL, GB, PASS, WARN, PlanCheck, Hardware, Plan, hardware
from hpcjobs.planner.frameworks import Framework, check_support, runs_anywhere
from hpcjobs.planner.options import (CP_OPTION, DTYPE_OPTION, DTYPES, GMU_OPTION, MAXLEN_OPTION,
                                  MBS_OPTION, MEGATRON_NAMES, MODEL_OPTION, NAMES, OFFLOAD,
                                  OPTION_KEYS, PLAN_OPTIONS, PP_OPTION, QBITS_OPTION, QUANT_OPTION,
                                  QUANTIZATIONS, RECOMPUTE, RECOMPUTE_OPTION, SEQ_OPTION,
                                  SERVING_OPTIONS, TP_OPTION, TRAINING_OPTIONS, XTP_OPTION)
from hpcjobs.planner.serving import (MAX_NUM_SEQS, PREFILL_TOKENS, QUANTS, SERVING_OVERHEAD_GB, Quant,
                                  check_serving, serving_from_spec)
from hpcjobs.planner.suggest import Render, default_render, megatron_render
from hpcjobs.planner.training import (MEGATRON_BYTES, TRAINING_OVERHEAD_GB, ZERO3_BYTES, ZERO_BYTES,
                                   check_training, training_from_spec)

__all__ = [
                                  "CP_OPTION",
                                  "DTYPES",
                                  "DTYPE_BYTES",
                                  "DTYPE_OPTION",
                                  "FAIL",
                                  "GB",
                                  "GMU_OPTION",
                                  "MAXLEN_OPTION",
                                  "MAX_NUM_SEQS",
                                  "MBS_OPTION",
                                  "MEGATRON_BYTES",
                                  "MEGATRON_NAMES",
                                  "MODEL_OPTION",
                                  "NAMES",
                                  "OFFLOAD",
                                  "OPTION_KEYS",
                                  "PASS",
                                  "PLAN_OPTIONS",
                                  "PP_OPTION",
                                  "PREFILL_TOKENS",
                                  "QBITS_OPTION",
                                  "QUANTIZATIONS",
                                  "QUANTS",
                                  "QUANT_OPTION",
                                  "RECOMPUTE",
                                  "RECOMPUTE_OPTION",
                                  "SEQ_OPTION",
                                  "SERVING_OPTIONS",
                                  "SERVING_OVERHEAD_GB",
                                  "TP_OPTION",
                                  "TRAINING_OPTIONS",
                                  "TRAINING_OVERHEAD_GB",
                                  "WARN",
                                  "XTP_OPTION",
                                  "ZERO3_BYTES",
                                  "ZERO_BYTES",
                                  "Framework",
                                  "Hardware",
                                  "Plan",
                                  "PlanCheck",
                                  "Quant",
                                  "Render",
                                  "check_serving",
                                  "check_support",
                                  "check_training",
                                  "default_render",
                                  "hardware",
                                  "megatron_render",
                                  "runs_anywhere",
                                  "serving_from_spec",
                                  "training_from_spec",
]
