"""A small megatron-core GPTModel trained a few steps with tensor parallelism; loss per step.

    hpcjobs submit megatron --nodes 1 --gpus-per-node 2 -- examples/megatron_gpt_tp.py --steps 30
    (or tests/gpu/run_megatron_gpu.sh: 2 ranks through hpcjobs.launch on one 2-GPU machine)

No Apex, no Transformer Engine: the layers are megatron-core's local implementation
(``get_gpt_layer_local_spec``), which is also what Volta GPUs need. The data is synthetic and
learnable (each sequence counts upward modulo the vocabulary from a random start), so the loss
must fall well below ln(vocab) within a few dozen steps; rank 0 prints it every step and a
verdict at the end (exit 1 if it did not fall).

TP/PP come from the command line or HPCJOBS_TP_SIZE / HPCJOBS_PP_SIZE (set by the megatron job
kind from its plan); the world size must be a multiple of TP x PP (the rest is data parallel).
Precision: --precision auto picks bf16 on compute capability >= 8.0, fp16 below (dynamic loss
scaling), fp32 with --precision fp32; half precision as Megatron's own training loop runs it:
Float16Module around the model, megatron-core's optimizer keeping fp32 main parameters.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time


def parse(argv=None):
    env = os.environ
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tensor-model-parallel-size", type=int, default=int(env.get("HPCJOBS_TP_SIZE", 2)))
    p.add_argument("--pipeline-model-parallel-size", type=int, default=int(env.get("HPCJOBS_PP_SIZE", 1)))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"),
                   default=env.get("HPCJOBS_PRECISION", "auto"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    import torch
    import torch.distributed as dist

    if not torch.cuda.is_available():
        # megatron-core's model code allocates on CUDA (DotProductAttention's global memory
        # buffer, the schedules, DDP's gradient buffers): parallel_state alone runs on CPUs.
        print("megatron_gpt_tp: needs CUDA GPUs (examples/megatron_parallel_state.py runs on CPUs)",
              file=sys.stderr)
        return 2
    # hpcjobs.launch may show each task only its own GPU: index modulo what is visible.
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group(backend="nccl", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()

    from megatron.core import parallel_state as ps
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
    )
    from megatron.core.distributed.finalize_model_grads import finalize_model_grads
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.models.gpt.gpt_model import GPTModel
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel.schedules import get_forward_backward_func
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed
    from megatron.core.transformer.module import Float16Module
    from megatron.core.transformer.transformer_config import TransformerConfig

    tp, pp = a.tensor_model_parallel_size, a.pipeline_model_parallel_size
    ps.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    model_parallel_cuda_manual_seed(1234)  # the RNG tracker TP layers use
    torch.manual_seed(1234)

    precision = a.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.get_device_capability() >= (8, 0) else "fp16"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    config = TransformerConfig(
        num_layers=a.layers, hidden_size=a.hidden, num_attention_heads=a.heads,
        use_cpu_initialization=True, pipeline_dtype=dtype, params_dtype=dtype,
        bf16=precision == "bf16", fp16=precision == "fp16",
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
        hidden_dropout=0.0, attention_dropout=0.0,  # the same batch every step: no noise
    )
    model = GPTModel(config=config, transformer_layer_spec=get_gpt_layer_local_spec(),
                     vocab_size=a.vocab, max_sequence_length=a.seq,
                     pre_process=ps.is_pipeline_first_stage(), post_process=ps.is_pipeline_last_stage())
    device = torch.device("cuda")
    model.to(device)
    if precision != "fp32":  # as Megatron's training loop: half-precision module, fp32 main params
        model = Float16Module(config, model)
    model = DistributedDataParallel(config=config, module=model, ddp_config=DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, overlap_grad_reduce=False, use_distributed_optimizer=False))
    # Megatron's optimizer, not torch.optim on model.parameters(): Megatron's DDP moves every
    # gradient into param.main_grad and leaves param.grad None, so a plain torch optimizer would
    # never step. Without Apex/TE it wraps torch's Adam (fp32 main params for bf16/fp16, dynamic
    # loss scaling for fp16).
    optim = get_megatron_optimizer(
        OptimizerConfig(optimizer="adam", lr=a.lr, weight_decay=0.0, clip_grad=1.0,
                        bf16=precision == "bf16", fp16=precision == "fp16", params_dtype=dtype,
                        initial_loss_scale=2.0 ** 16),
        [model])
    config.grad_scale_func = optim.scale_loss  # the schedule scales the loss (fp16) with it

    # One fixed synthetic batch per data-parallel rank: counting sequences mod vocab.
    g = torch.Generator().manual_seed(100 + ps.get_data_parallel_rank())
    start = torch.randint(0, a.vocab, (a.micro_batch, 1), generator=g)
    seq = (start + torch.arange(a.seq + 1)) % a.vocab
    tokens, labels = seq[:, :-1].to(device), seq[:, 1:].to(device)
    position_ids = torch.arange(a.seq, device=device).unsqueeze(0).expand(a.micro_batch, -1)
    # Megatron's convention: True = masked out (the upper triangle, for causal attention).
    mask = torch.triu(torch.ones(a.seq, a.seq, dtype=torch.bool, device=device), 1)[None, None]

    def forward_step(data_iterator, model):
        out = model(tokens, position_ids, mask, labels=labels)

        def loss_func(output):
            loss = output.float().mean()
            return loss, {"lm loss": loss.detach()}

        return out, loss_func

    fwd_bwd = get_forward_backward_func()
    losses = []
    t0 = time.monotonic()
    for step in range(a.steps):
        optim.zero_grad()
        model.zero_grad_buffer()
        out = fwd_bwd(forward_step_func=forward_step, data_iterator=iter([None]), model=model,
                      num_microbatches=1, seq_length=a.seq, micro_batch_size=a.micro_batch,
                      decoder_seq_length=a.seq, forward_only=False)
        # Gradients of replicated parameters over TP, and all of them over DP.
        finalize_model_grads([model])
        stepped, grad_norm, _ = optim.step()
        # The loss lives on the last pipeline stage; average it over data parallel ranks.
        loss = torch.tensor([out[0]["lm loss"].item() if out else 0.0], device=device)
        if ps.is_pipeline_last_stage():
            dist.all_reduce(loss, group=ps.get_data_parallel_group())
            loss /= ps.get_data_parallel_world_size()
        src = ps.get_pipeline_model_parallel_last_rank()
        dist.broadcast(loss, src=src, group=ps.get_pipeline_model_parallel_group())
        losses.append(loss.item())
        if rank == 0:
            gn = f"{grad_norm:.3f}" if grad_norm is not None else "-"
            print(f"step {step:3d} loss {losses[-1]:.4f} grad-norm {gn}"
                  + ("" if stepped else " (skipped: inf/nan, loss scale lowered)"), flush=True)
    took = time.monotonic() - t0
    torch.cuda.synchronize()
    ok = losses[-1] < losses[0] * 0.5
    if rank == 0:
        dp = ps.get_data_parallel_world_size()
        name = torch.cuda.get_device_name()
        print(f"megatron-core GPTModel: {a.layers} layers, hidden {a.hidden}, {a.heads} heads, "
              f"vocab {a.vocab}; TP {tp} x PP {pp} x DP {dp} = {world} ranks on {name}; "
              f"{precision}; local transformer layers (no Apex/TE); "
              f"CUDA_DEVICE_MAX_CONNECTIONS={os.environ.get('CUDA_DEVICE_MAX_CONNECTIONS', 'unset')}")
        print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} in {a.steps} steps (ln vocab = "
              f"{math.log(a.vocab):.2f}); {took / a.steps * 1000:.1f} ms/step: "
              f"{'loss fell' if ok else 'LOSS DID NOT FALL'}", flush=True)
    ps.destroy_model_parallel()
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    # Leave without C++ static destructors: torch 2.13's gloo can abort in one at interpreter
    # exit ("terminate called without an active exception"), failing a finished job
    # (hpcjobs/shutdown.py says more). Without hpcjobs (torchrun, say): the ordinary exit.
    try:
        from hpcjobs import finish
    except ImportError:
        finish = sys.exit
    finish(main())
