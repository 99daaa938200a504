"""``megatron``: Megatron-LM's ``pretrain_gpt.py`` or any megatron-core script, one task per GPU.

Ranks come from Slurm through hpcjobs.launch (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT: what Megatron's ``torch.distributed.init_process_group`` reads), and the launcher
sets ``CUDA_DEVICE_MAX_CONNECTIONS=1`` for this kind (Megatron asserts it for sequence parallel
and TP communication overlap: one hardware queue keeps the communication kernels ordered
before the compute that waits for them).

Two ways to name the program:

- ``--megatron-path DIR``: the program is ``DIR/pretrain_gpt.py`` and everything after ``--`` is
  its arguments; so is any PROG whose file is called ``pretrain_gpt.py``. Then the required
  arguments are checked before submission (megatron/training/arguments.py): ``--num-layers
  --hidden-size --num-attention-heads --max-position-embeddings --micro-batch-size``, one of
  ``--train-iters/--train-samples``, data (``--data-path``, ``--train-data-path``, ...
  or ``--mock-data``) and the tokenizer with the files its type needs. The model shape comes
  from those arguments and goes through the plan with Megatron's own option names; hpcjobs adds
  ``--tensor-model-parallel-size``/``--pipeline-model-parallel-size`` from the plan when absent,
  ``--fp16`` below compute capability 8.0 (``--bf16`` from 8.0) when no precision is given, and
  ``--transformer-impl local`` where Transformer Engine cannot run (CC < 8.0).
- any other script (megatron-core directly): its arguments are passed as they are; the layout
  reaches it as ``HPCJOBS_TP_SIZE``, ``HPCJOBS_PP_SIZE``, ``HPCJOBS_CP_SIZE``, ``HPCJOBS_DP_SIZE``,
  ``HPCJOBS_PRECISION`` (fp16, bf16, fp32) and ``HPCJOBS_TRANSFORMER_IMPL`` (local or
  transformer_engine). ``--model`` (a shape) turns the memory plan on.

The run-time half (``python -m hpcjobs.kinds.megatron complete -- ARGS``) does the same checks
and additions for the direct-use script, where no cluster profile is rendered in: the GPUs of
the node decide (nvidia-smi).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import hpcjobs.plan as planmod
from hpcjobs.cluster import Cluster
from hpcjobs.errors import BadInput
from hpcjobs.kinds.base import Kind, Option
from hpcjobs.models import ModelShape
from hpcjobs.spec import JobSpec

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


def shape_from_args(args: MegatronArgs) -> tuple[ModelShape, list[str]]:
    """The model shape pretrain_gpt.py will build, with the assumptions made reading it."""
    notes = []
    h = args.int("--hidden-size")
    heads = args.int("--num-attention-heads")
    kv = args.int("--num-query-groups") if args.has("--group-query-attention") else None
    swiglu = args.has("--swiglu")
    ffn = args.int("--ffn-hidden-size") or (int(4 * h * 2 / 3 / 64) * 64 if swiglu else 4 * h)
    vocab = args.int("--vocab-size")
    if vocab is None:
        ttype = args.values.get("--tokenizer-type")
        vocab = 50257 if ttype == "GPT2BPETokenizer" else 32000
        notes.append(f"vocabulary {vocab} assumed for --tokenizer-type {ttype} (the tokenizer "
                     "file is read only by the job; give --vocab-size to be exact)")
    shape = ModelShape(
        name="pretrain_gpt.py arguments", num_layers=args.int("--num-layers"), hidden_size=h,
        num_attention_heads=heads, num_kv_heads=kv or heads, intermediate_size=ffn,
        vocab_size=vocab, max_position_embeddings=args.int("--max-position-embeddings"),
        head_dim=args.int("--kv-channels") or 0,
        tie_word_embeddings=not args.has("--untie-embeddings-and-output-weights"),
        gated_mlp=swiglu, source="pretrain_gpt.py arguments")
    return shape, notes


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


class MegatronKind(Kind):
    name = "megatron"
    summary = "Megatron-LM pretrain_gpt.py or a megatron-core script, one task per GPU, TP/PP/DP from the plan"
    template = "megatron.sbatch.j2"
    task_per_gpu = True
    usage = "pretrain_gpt.py ARGS... | script.py [ARGS...]"
    options = (
        Option("megatron-path", "path", None, "Megatron-LM checkout: run its pretrain_gpt.py with "
               "the arguments after -- (checked before submission)"),
        *planmod.TRAINING_OPTIONS,
    )

    # -- what the spec asks for ------------------------------------------------------------

    def _pretrain(self, spec: JobSpec) -> bool:
        return bool(spec.options.get("megatron_path")) or is_pretrain(spec.program)

    def _args(self, spec: JobSpec) -> MegatronArgs:
        prog = spec.program if spec.options.get("megatron_path") else script_args(spec.program)
        return MegatronArgs.parse(prog)

    def _layout_value(self, spec: JobSpec, args: MegatronArgs | None, ours: str, theirs: str):
        """One of TP/PP/CP from the hpcjobs option or pretrain_gpt.py's own; both must agree."""
        mine = spec.options.get(ours.lstrip("-").replace("-", "_"))
        if args is None or not args.has(theirs):
            return mine
        value = args.int(theirs)
        if mine is not None and mine != value and not (ours == "--context-parallel-size" and mine == 1):
            raise BadInput(ours, f"{mine} contradicts {theirs} {value} in the program's arguments",
                           "give it once")
        return value

    @staticmethod
    def _gpu(spec: JobSpec, cluster: Cluster):
        if not spec.gpus_per_node:
            return None
        gpus = [n.gpu for n in cluster.partition_nodes(spec.partition) if n.gpu]
        return min(gpus, key=lambda g: g.cc) if gpus else None

    def check(self, spec: JobSpec, cluster: Cluster) -> None:
        o = spec.options
        gpu = self._gpu(spec, cluster)
        if gpu and spec.ntasks_per_node not in (None, spec.gpus_per_node):
            raise BadInput("--ntasks-per-node", f"Megatron runs one task per GPU ({spec.gpus_per_node} "
                           f"per node), got {spec.ntasks_per_node}", "drop --ntasks-per-node")
        if o.get("megatron_path"):
            script = os.path.join(o["megatron_path"], PRETRAIN)
            if not os.path.isfile(script):
                raise BadInput("--megatron-path", f"{o['megatron_path']} has no {PRETRAIN}",
                               "give the Megatron-LM checkout (the directory holding pretrain_gpt.py)")
        if not self._pretrain(spec):
            if not spec.program:
                raise BadInput("PROG", "no program given", "put the script after --, or use "
                               "--megatron-path DIR with pretrain_gpt.py's arguments")
            if not o.get("model"):
                self._check_layout(spec)
            return
        if not gpu:
            raise BadInput("--gpus-per-node", "pretrain_gpt.py needs CUDA GPUs (megatron-core's "
                           "model code runs on CUDA)", "run on a GPU partition; on CPUs only "
                           "parallel_state runs (examples/megatron_parallel_state.py)")
        args = self._args(spec)
        check_required(args)
        check_transformer_impl(args, gpu.cc, gpu.model or gpu.type)

    def _check_layout(self, spec: JobSpec) -> None:
        """Without a model shape: world size and TP placement only."""
        o = spec.options
        per_node = self.tasks_per_node(spec)
        world = per_node * spec.nodes
        tp, pp, cp = (o.get("tensor_parallel_size") or 1, o.get("pipeline_parallel_size") or 1,
                      o.get("context_parallel_size") or 1)
        for name, v in (("--tensor-parallel-size", tp), ("--pipeline-parallel-size", pp),
                        ("--context-parallel-size", cp)):
            if v < 1:
                raise BadInput(name, f"must be at least 1, got {v}")
        if world % (tp * pp * cp):
            raise BadInput("--tensor-parallel-size" if tp > 1 else "--pipeline-parallel-size",
                           f"TP {tp} x PP {pp} x CP {cp} = {tp * pp * cp} does not divide the "
                           f"{world} ranks ({spec.nodes} nodes x {per_node})",
                           "Megatron needs world size = TP x PP x CP x DP (parallel_state)")
        if (tp > per_node or per_node % tp) and not o.get("allow_cross_node_tp"):
            raise BadInput("--tensor-parallel-size", f"TP {tp} spans nodes ({per_node} ranks per "
                           "node): every layer all-reduces over the fabric",
                           f"keep TP <= {per_node} dividing it and use PP/DP across nodes, or "
                           "insist with --allow-cross-node-tp")

    def plan(self, spec: JobSpec, cluster: Cluster):
        o = spec.options
        if not spec.gpus_per_node:
            return None  # CPU ranks (gloo): parallel_state only, checked in check()
        if self._pretrain(spec):
            args = self._args(spec)
            check_required(args)
            shape, notes = shape_from_args(args)
            tp = self._layout_value(spec, args, "--tensor-parallel-size", "--tensor-model-parallel-size")
            pp = self._layout_value(spec, args, "--pipeline-parallel-size", "--pipeline-model-parallel-size")
            cp = self._layout_value(spec, args, "--context-parallel-size", "--context-parallel-size")
            rg = args.values.get("--recompute-granularity") or "none"
            seq = args.int("--seq-length") or o.get("seq_length") or shape.max_position_embeddings
            p = planmod.check_training(
                spec, cluster, shape, framework="megatron", tp=tp, pp=pp, cp=cp or 1,
                dtype=args_dtype(args, o.get("dtype") or "auto"), seq_length=seq,
                micro_batch_size=args.int("--micro-batch-size") or 1,
                recompute=rg if rg in planmod.RECOMPUTE else "none",
                distributed_optimizer=args.has("--use-distributed-optimizer"),
                sequence_parallel=args.has("--sequence-parallel"),
                allow_cross_node_tp=bool(o.get("allow_cross_node_tp")),
                names=planmod.MEGATRON_NAMES, render=planmod.megatron_render)
            p.assumptions += notes
            return p
        if not o.get("model"):
            return None
        return planmod.training_from_spec(spec, cluster, framework="megatron")

    # -- what the template gets ------------------------------------------------------------

    def context(self, spec: JobSpec, cluster: Cluster) -> dict:
        o = {**self.defaults(), **spec.options}
        gpu = self._gpu(spec, cluster)
        cc = gpu.cc if gpu else None
        p = self.plan(spec, cluster) if spec.program or o.get("megatron_path") else None
        if p is not None:
            tp, pp, cp = p.params["tp"], p.params["pp"], p.params["cp"]
            dp = p.numbers.get("dp") or spec.nodes * self.tasks_per_node(spec) // (tp * pp * cp)
        else:
            tp = o.get("tensor_parallel_size") or (spec.gpus_per_node or 1 if gpu else 1)
            pp, cp = o.get("pipeline_parallel_size") or 1, o.get("context_parallel_size") or 1
            dp = max(1, spec.nodes * self.tasks_per_node(spec) // (tp * pp * cp))
        dtype = o.get("dtype") or "auto"
        extra: list[str] = []
        if self._pretrain(spec) and gpu:
            args = self._args(spec)
            dtype = args_dtype(args, dtype)
            extra = additions(args, tp=tp, pp=pp, cc=cc, dtype=dtype)
        precision = precision_for(dtype, cc)
        return {
            "megatron_script": (os.path.join(os.path.abspath(o["megatron_path"]), PRETRAIN)
                                if o.get("megatron_path") else None),
            "megatron_extra": extra,
            "megatron_layout": {"HPCJOBS_TP_SIZE": tp, "HPCJOBS_PP_SIZE": pp,
                                "HPCJOBS_CP_SIZE": cp, "HPCJOBS_DP_SIZE": dp,
                                "HPCJOBS_PRECISION": precision,
                                "HPCJOBS_TRANSFORMER_IMPL": ("local" if cc is None or cc < (8, 0)
                                                             else "transformer_engine")},
        }


KIND = MegatronKind()


# --- run time: `python -m hpcjobs.kinds.megatron complete -- ARGS` (direct-use script) -------

def detect_cc() -> tuple[int, int] | None:
    """The lowest compute capability of this node's GPUs (nvidia-smi), None without GPUs."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        ccs = [tuple(int(x) for x in line.strip().split(".")[:2]) for line in out.splitlines()
               if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return (7, 0)  # a GPU of unknown age: fp16 and the local implementation run everywhere
    return min(ccs) if ccs else None


def complete(argv: list[str], env: dict) -> tuple[int, list[str], str]:
    """(exit code, arguments to append, message) for the direct-use script's program."""
    program = argv[1:] if argv[:1] == ["--"] else argv
    if not is_pretrain(program):
        return 0, [], ""
    args = MegatronArgs.parse(script_args(program))
    cc = detect_cc()
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
        print("usage: python -m hpcjobs.kinds.megatron complete -- PROG [ARGS...]\n"
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
