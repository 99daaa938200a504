"""Inside a Megatron job: pretrain_gpt.py's arguments, checked and completed for this node's GPUs.

``python -m hpcjobs.runners.megatron complete -- PROG ARGS`` runs in the direct-use script
(job_templates/megatron.sbatch), where no cluster profile is rendered in: it refuses what
pretrain_gpt.py would refuse at start-up (before any rank starts) and prints, one per line, the
arguments hpcjobs adds: TP inside the node, ``--fp16`` below compute capability 8.0 (``--bf16``
from 8.0) and ``--transformer-impl local`` where Transformer Engine cannot run.

The argument reader and the rules are shared with the megatron kind (hpcjobs/kinds/megatron.py),
which applies them before submission with the cluster profile's GPUs. Runs on a compute node:
standard library and hpcjobs.errors only.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from hpcjobs.errors import BadInput
from hpcjobs.runners.gpus import GpuProbeError, lowest_compute_capability

PRETRAIN = "pretrain_gpt.py"
SOURCE = "megatron/training/arguments.py"

# Tokenizer type -> the arguments it needs (megatron/core/tokenizers/utils/build_tokenizer.py).
TOKENIZER_FILES: dict[str, tuple[str, ...]] = {
    "GPT2BPETokenizer": ("--vocab-file", "--merge-file"),
    "BertWordPieceLowerCase": ("--vocab-file",),
    "BertWordPieceCase": ("--vocab-file",),
    "SentencePieceTokenizer": ("--tokenizer-model",),
    "GPTSentencePieceTokenizer": ("--tokenizer-model",),
    "Llama2Tokenizer": ("--tokenizer-model",),
    "HuggingFaceTokenizer": ("--tokenizer-model",),
    "TikTokenizer": ("--tokenizer-model",),
    "MultimodalTokenizer": ("--tokenizer-model",),
    "SFTTokenizer": ("--tokenizer-model",),
    "NullTokenizer": ("--vocab-size",),
    "NullMultimodalTokenizer": ("--vocab-size",),
}
DATA_ARGS = ("--data-path", "--mock-data", "--train-data-path", "--data-args-path",
             "--per-split-data-args-path")
REQUIRED = ("--num-layers", "--hidden-size", "--num-attention-heads", "--max-position-embeddings",
            "--micro-batch-size")


@dataclass
class MegatronArgs:
    """The pretrain_gpt.py arguments hpcjobs reads (``--name value``, ``--name=value``, flags)."""

    values: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, args: list[str]) -> MegatronArgs:
        values: dict[str, str | None] = {}
        i = 0
        while i < len(args):
            a = args[i]
            if a.startswith("--"):
                name, eq, value = a.partition("=")
                if eq:
                    values[name] = value
                elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                    values[name] = args[i + 1]
                    i += 1
                else:
                    values[name] = None  # a flag (store_true)
            i += 1
        return cls(values)

    def has(self, name: str) -> bool:
        return name in self.values

    def int(self, name: str) -> int | None:
        v = self.values.get(name)
        if v is None:
            return None
        try:
            return int(v)
        except ValueError:
            raise BadInput(name, f"{v!r} is not a whole number", f"give {name} N") from None


def is_pretrain(program: list[str]) -> bool:
    return any(os.path.basename(a) == PRETRAIN for a in program[:2])


def script_args(program: list[str]) -> list[str]:
    """The arguments after pretrain_gpt.py (after the interpreter and script, if given)."""
    for i, a in enumerate(program[:2]):
        if os.path.basename(a) == PRETRAIN:
            return program[i + 1:]
    return list(program)


def check_required(args: MegatronArgs) -> None:
    """What pretrain_gpt.py refuses at start-up, refused before the job waits in the queue."""
    for name in REQUIRED:
        if not args.has(name) or args.values[name] is None:
            raise BadInput(name, f"pretrain_gpt.py needs it ({SOURCE}: validate_args)",
                           f"add {name} N")
        args.int(name)
    if not (args.has("--train-iters") or args.has("--train-samples")):
        raise BadInput("--train-iters", "pretrain_gpt.py needs --train-iters or --train-samples",
                       "add --train-iters N (or --train-samples N)")
    data = [d for d in DATA_ARGS if args.has(d)]
    if not data:
        raise BadInput("--data-path", "no training data given",
                       "add --data-path PREFIX (preprocessed .bin/.idx) or --mock-data for "
                       "synthetic data")
    if len([d for d in data if d in ("--data-path", "--mock-data", "--train-data-path")]) > 1:
        raise BadInput(data[1], f"conflicts with {data[0]} (\"A single data source must be "
                       f"provided\", {SOURCE})", "give one data source")
    ttype = args.values.get("--tokenizer-type")
    if not ttype:
        raise BadInput("--tokenizer-type", "pretrain_gpt.py builds a tokenizer and none is given",
                       "add e.g. --tokenizer-type GPT2BPETokenizer --vocab-file F --merge-file F, "
                       "or --tokenizer-type NullTokenizer --vocab-size N with --mock-data")
    if ttype not in TOKENIZER_FILES:
        raise BadInput("--tokenizer-type", f"{ttype!r} is not a Megatron tokenizer type",
                       f"use one of {', '.join(TOKENIZER_FILES)}")
    for need in TOKENIZER_FILES[ttype]:
        if not args.values.get(need):
            raise BadInput(need, f"--tokenizer-type {ttype} needs it "
                           "(megatron/core/tokenizers/utils/build_tokenizer.py)", f"add {need} ...")
    if args.has("--fp16") and args.has("--bf16"):
        raise BadInput("--bf16", "--fp16 and --bf16 exclude each other", "give one of them")


def args_dtype(args: MegatronArgs, fallback: str) -> str:
    if args.has("--bf16"):
        return "bfloat16"
    if args.has("--fp16"):
        return "float16"
    return fallback


def precision_for(dtype: str, cc: tuple[int, int] | None) -> str:
    """fp16/bf16/fp32 for a plan dtype on a GPU of compute capability ``cc`` (None: no GPU)."""
    if cc is None:
        return "fp32"
    if dtype == "auto":
        return "bf16" if cc >= (8, 0) else "fp16"
    return {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}[dtype]


def additions(args: MegatronArgs, *, tp: int | None, pp: int | None, cc: tuple[int, int] | None,
              dtype: str = "auto") -> list[str]:
    """Arguments hpcjobs appends to pretrain_gpt.py's: layout, precision, transformer impl."""
    out: list[str] = []
    if tp is not None and not args.has("--tensor-model-parallel-size"):
        out += ["--tensor-model-parallel-size", str(tp)]
    if pp is not None and not args.has("--pipeline-model-parallel-size"):
        out += ["--pipeline-model-parallel-size", str(pp)]
    if not (args.has("--fp16") or args.has("--bf16")):
        prec = precision_for(dtype, cc)
        if prec in ("fp16", "bf16"):
            out.append(f"--{prec}")
    if cc is not None and cc < (8, 0) and not args.has("--transformer-impl"):
        out += ["--transformer-impl", "local"]
    return out


def check_transformer_impl(args: MegatronArgs, cc: tuple[int, int] | None, gpu: str) -> None:
    if cc is not None and cc < (8, 0) and args.values.get("--transformer-impl") == "transformer_engine":
        raise BadInput("--transformer-impl", f"Transformer Engine needs compute capability 8.0; "
                       f"{gpu} is {cc[0]}.{cc[1]}", "use --transformer-impl local (or drop it: "
                       "hpcjobs adds it on this GPU)")


def complete(argv: list[str], env: dict) -> tuple[int, list[str], str]:
    """(exit code, arguments to append, message) for the direct-use script's program."""
    program = argv[1:] if argv[:1] == ["--"] else argv
    if not is_pretrain(program):
        return 0, [], ""
    args = MegatronArgs.parse(script_args(program))
    try:
        cc = lowest_compute_capability()
    except GpuProbeError:
        cc = (7, 0)  # a GPU of unknown age: fp16 and the local implementation run everywhere
    try:
        check_required(args)
        if cc is None:
            raise BadInput("GPU", "no NVIDIA GPU on this node (nvidia-smi)",
                           "pretrain_gpt.py needs CUDA: submit to a GPU partition (--gres=gpu:N)")
        check_transformer_impl(args, cc, "this node's GPU")
        if args.has("--bf16") and cc < (8, 0):
            raise BadInput("--bf16", f"no bf16 below compute capability 8.0 (this GPU is "
                           f"{cc[0]}.{cc[1]})", "use --fp16 (dynamic loss scaling)")
        heads = args.int("--num-attention-heads")
        gpus = env.get("SLURM_GPUS_ON_NODE", "")
        tp = None
        if not args.has("--tensor-model-parallel-size") and gpus.isdigit() and int(gpus) > 0:
            tp = int(gpus)
            while heads % tp:  # the largest TP inside the node that divides the heads
                tp -= 1
    except BadInput as e:
        return 2, [], f"hpcjobs: error: {e}"
    return 0, additions(args, tp=tp, pp=None, cc=cc), ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["complete"]:
        print("usage: python -m hpcjobs.runners.megatron complete -- PROG [ARGS...]\n"
              "Checks pretrain_gpt.py's required arguments and prints, one per line, the ones "
              "hpcjobs adds (TP inside the node, --fp16/--bf16, --transformer-impl local).",
              file=sys.stderr)
        return 2
    rc, extra, msg = complete(argv[1:], os.environ)
    if msg:
        print(msg, file=sys.stderr)
    for a in extra:
        print(a)
    return rc


if __name__ == "__main__":
    sys.exit(main())
