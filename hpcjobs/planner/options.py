"""The shared options of the plan: kinds put these in ``Kind.options`` so every kind spells them alike.

Also the plan parameter -> option tables: ``OPTION_KEYS`` (the ``spec.options`` key a suggestion
feeds back into), ``NAMES`` (the option named in refusals and suggestions) and ``MEGATRON_NAMES``
(Megatron-LM's own argument names).
"""

from __future__ import annotations

from hpcjobs.option import Option

DTYPES = ("auto", "float16", "bfloat16", "float32")
QUANTIZATIONS = ("none", "gptq", "awq", "bitsandbytes", "gguf", "marlin")
RECOMPUTE = ("none", "selective", "full")
OFFLOAD = ("none", "optimizer", "all")


MODEL_OPTION = Option("model", str, None,
                      "Model shape for the plan: a built-in name (llama-2-7b, llama-2-13b, "
                      "llama-2-70b, llama-3-8b, llama-3-70b, mixtral-8x7b) or a local Hugging Face "
                      "directory / config.json")
TP_OPTION = Option("tensor-parallel-size", int, None,
                   "Tensor parallel size (default: the GPUs of one node)")
PP_OPTION = Option("pipeline-parallel-size", int, None,
                   "Pipeline parallel size (serving default: the number of nodes; training: 1)")
CP_OPTION = Option("context-parallel-size", int, 1, "Context parallel size (training)")
DTYPE_OPTION = Option("dtype", str, "auto", "Weight/activation dtype (auto: the checkpoint's, "
                      "float16 where the GPU has no bfloat16)", choices=DTYPES)
QUANT_OPTION = Option("quantization", str, "none", "Weight quantization of the checkpoint",
                      choices=QUANTIZATIONS)
QBITS_OPTION = Option("quantization-bits", int, None, "Bits per weight of --quantization (default 4)")
MAXLEN_OPTION = Option("max-model-len", int, None,
                       "Longest sequence served (default: the model's max positions)")
GMU_OPTION = Option("gpu-memory-utilization", float, 0.9,
                    "Fraction of each GPU's memory the server may use (vLLM's default 0.9)")
XTP_OPTION = Option("allow-cross-node-tp", bool, False,
                    "Allow tensor parallelism across nodes (all-reduce bound over the fabric)")
SEQ_OPTION = Option("seq-length", int, None, "Training sequence length (default: model max "
                    "positions, at most 4096)")
MBS_OPTION = Option("micro-batch-size", int, 1, "Micro-batch size per GPU (training)")
RECOMPUTE_OPTION = Option("recompute", str, "none", "Activation recomputation (training)",
                          choices=RECOMPUTE)

SERVING_OPTIONS: tuple[Option, ...] = (MODEL_OPTION, TP_OPTION, PP_OPTION, DTYPE_OPTION,
                                       QUANT_OPTION, QBITS_OPTION, MAXLEN_OPTION, GMU_OPTION,
                                       XTP_OPTION)
TRAINING_OPTIONS: tuple[Option, ...] = (MODEL_OPTION, TP_OPTION, PP_OPTION, CP_OPTION,
                                        DTYPE_OPTION, SEQ_OPTION, MBS_OPTION, RECOMPUTE_OPTION,
                                        XTP_OPTION)
PLAN_OPTIONS: tuple[Option, ...] = tuple({o.name: o for o in SERVING_OPTIONS + TRAINING_OPTIONS}.values())

# plan parameter -> spec.options key of the shared option
OPTION_KEYS = {"model": "model", "tp": "tensor_parallel_size", "pp": "pipeline_parallel_size",
               "cp": "context_parallel_size", "dtype": "dtype", "quantization": "quantization",
               "quant_bits": "quantization_bits", "max_model_len": "max_model_len",
               "gpu_memory_utilization": "gpu_memory_utilization",
               "allow_cross_node_tp": "allow_cross_node_tp", "seq_length": "seq_length",
               "micro_batch_size": "micro_batch_size", "recompute": "recompute"}

# plan parameter -> the option named in refusals and suggestions
NAMES: dict[str, str] = {
    "tp": "--tensor-parallel-size", "pp": "--pipeline-parallel-size",
    "cp": "--context-parallel-size", "dp": "--data-parallel-size", "dtype": "--dtype",
    "quantization": "--quantization", "quant_bits": "--quantization-bits",
    "max_model_len": "--max-model-len", "gpu_memory_utilization": "--gpu-memory-utilization",
    "allow_cross_node_tp": "--allow-cross-node-tp", "seq_length": "--seq-length",
    "micro_batch_size": "--micro-batch-size", "recompute": "--recompute",
    "distributed_optimizer": "--use-distributed-optimizer", "zero_stage": "--zero-stage",
    "offload": "--offload", "model": "--model", "nodes": "--nodes",
}
# Megatron-LM's own argument names (megatron/training/arguments.py), for a kind that checks the
# arguments the user wrote for pretrain_gpt.py.
MEGATRON_NAMES: dict[str, str] = {
    **NAMES, "tp": "--tensor-model-parallel-size", "pp": "--pipeline-model-parallel-size",
    "dtype": "--fp16/--bf16", "recompute": "--recompute-granularity",
}
