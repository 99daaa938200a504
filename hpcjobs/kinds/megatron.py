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

The node-side half (``python -m hpcjobs.runners.megatron complete -- ARGS``, where the argument
reader and these rules live) does the same checks and additions for the direct-use script,
where no cluster profile is rendered in: the GPUs of the node decide (nvidia-smi).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import os

import hpcjobs.planner as planmod
from hpcjobs.cluster import Cluster
from hpcjobs.errors import BadInput
from hpcjobs.kinds.base import Kind, Option
from hpcjobs.models import ModelShape
from hpcjobs.runners.megatron import (PRETRAIN, MegatronArgs, additions, args_dtype,
                                      check_required, check_transformer_impl, is_pretrain,
                                      precision_for, script_args)
from hpcjobs.spec import JobSpec, placeholder_gpus

if TYPE_CHECKING:
    from hpcjobs.prepared import Prepared

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


def _megatron_support(hw, model) -> planmod.PlanCheck:
    cc = f"{hw.cc[0]}.{hw.cc[1]}"
    src = ("Transformer Engine requires CC >= 8.0 (TE install docs); megatron arguments.py "
           "--transformer-impl local; grouped GEMM needs CC >= 8.0")
    if hw.cc < (8, 0):
        moe = "; MoE without grouped GEMM" if model.num_experts > 1 else ""
        return planmod.PlanCheck("framework", planmod.WARN, f"CC {cc}: no Transformer Engine: "
                                 f"--transformer-impl local, --fp16, no FlashAttention{moe}", source=src)
    return planmod.PlanCheck("framework", planmod.PASS,
                             f"Megatron-Core with Transformer Engine on CC {cc}", source=src)


# The planner's rules for Megatron: TP defaults to a node's GPUs, layers divide into PP stages,
# the (distributed) optimizer holds the model states, and the attention is fused only with
# Transformer Engine (CC >= 8.0; below it --transformer-impl local stores the s x s scores).
MEGATRON = planmod.Framework(
    "megatron", support=_megatron_support, tp_per_node=True, layers_divide_pp=True,
    fused_attention=lambda hw: hw.cc is not None and hw.cc >= (8, 0),
    names=planmod.MEGATRON_NAMES, render=planmod.megatron_render)


class MegatronKind(Kind):
    name = "megatron"
    summary = "Megatron-LM pretrain_gpt.py or a megatron-core script, one task per GPU, TP/PP/DP from the plan"
    template = "megatron.sbatch.j2"
    task_per_gpu = True
    usage = "pretrain_gpt.py ARGS... | script.py [ARGS...]"
    cpu_fallback = ("gloo: megatron-core's parallel_state runs there, its CUDA models do not "
                    "(examples/megatron_gpt_tp.py stops with a one-line message)")
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
        if placeholder_gpus(cluster):
            raise BadInput("--megatron-path" if o.get("megatron_path") else "PROG",
                           f"pretrain_gpt.py needs CUDA GPUs and those of cluster {cluster.name!r} "
                           "are placeholders (GRES without a driver)", "there, run megatron-core's "
                           "CPU part: hpcjobs submit megatron --nodes 3 -- "
                           "examples/megatron_parallel_state.py")
        # pretrain_gpt.py's required arguments are checked by plan(), which reads them anyway
        # (api.prepare runs it right after this, once).
        check_transformer_impl(self._args(spec), gpu.cc, gpu.model or gpu.type)

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
                spec, cluster, shape, framework=MEGATRON, tp=tp, pp=pp, cp=cp or 1,
                dtype=args_dtype(args, o.get("dtype") or "auto"), seq_length=seq,
                micro_batch_size=args.int("--micro-batch-size") or 1,
                recompute=rg if rg in planmod.RECOMPUTE else "none",
                distributed_optimizer=args.has("--use-distributed-optimizer"),
                sequence_parallel=args.has("--sequence-parallel"),
                allow_cross_node_tp=bool(o.get("allow_cross_node_tp")))
            p.assumptions += notes
            return p
        if not o.get("model"):
            return None
        return planmod.training_from_spec(spec, cluster, framework=MEGATRON)

    # -- what the template gets ------------------------------------------------------------

    def context(self, job: Prepared) -> dict:
        spec, o = job.spec, job.options
        gpu = self._gpu(spec, job.cluster)
        cc = gpu.cc if gpu else None
        p = job.plan
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
