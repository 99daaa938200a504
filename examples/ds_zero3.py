"""DeepSpeed ZeRO-3: a small transformer language model on synthetic tokens.

    hpcjobs submit deepspeed --nodes 3 -- examples/ds_zero3.py --steps 20
    sbatch job_templates/deepspeed.sbatch examples/ds_zero3.py --steps 20

Runs under hpcjobs.launch (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from Slurm):
NCCL on GPUs; on CPU-only nodes set DS_ACCELERATOR=cpu (DeepSpeed then uses gloo). The config
is --ds-config, else $HPCJOBS_DS_CONFIG (the kind's generated ZeRO-3 config), else one built
here for the detected device.

Prints, per rank, its identity and how much of the model ZeRO-3 left on it (each rank holds
about 1/WORLD of every parameter), then on rank 0 the mean loss of every optimizer step, the
step time, and a summary with the peak memory of the busiest rank.

The synthetic data has structure (each token determines the next, t[i+1] = (a * t[i] + c) mod V)
so the loss falls quickly from ln(V) toward 0: a falling loss shows the sharded optimizer works.
"""

import argparse
import json
import math
import os
import resource
import socket
import sys
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ds-config", default=os.environ.get("HPCJOBS_DS_CONFIG"),
                   help="DeepSpeed JSON config (default: $HPCJOBS_DS_CONFIG)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps")
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--shm-comm", action="store_true",
                   help="let DeepSpeed's CPU accelerator JIT-build its shared-memory comm op "
                        "(off by default: a compile of tens of seconds, used only for inference "
                        "all-reduce inside one node)")
    return p.parse_args()


class Block(nn.Module):
    """Pre-norm transformer block. Every parameter is used through its own module's forward,
    as ZeRO-3's gather-on-use hooks expect (nn.MultiheadAttention reads out_proj.weight from
    the parent's forward, which ZeRO-3 would have to be told about)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, d // self.heads).unbind(2)
        att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, s, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyLM(nn.Module):
    def __init__(self, vocab: int, d: int, layers: int, heads: int, seq: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tok(tokens) + self.pos(pos)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def batch(gen: torch.Generator, n: int, seq: int, vocab: int) -> torch.Tensor:
    """Sequences following t[i+1] = (5 t[i] + 3) mod vocab from random starts."""
    out = torch.empty(n, seq + 1, dtype=torch.long)
    out[:, 0] = torch.randint(0, vocab, (n,), generator=gen)
    for i in range(1, seq + 1):
        out[:, i] = (5 * out[:, i - 1] + 3) % vocab
    return out


def default_config(device: str) -> dict:
    """The kind's own generator if hpcjobs is importable (it is under hpcjobs.launch)."""
    precision = "fp32"
    if device == "cuda":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    try:
        from hpcjobs.kinds.deepspeed import build_config

        return build_config(precision=precision)
    except ImportError:
        return {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
                "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
                "zero_optimization": {"stage": 3}, **({precision: {"enabled": True}}
                                                       if precision != "fp32" else {})}


def memlock_warning(config: dict, rank: int) -> None:
    """Pinned offload buffers count against RLIMIT_MEMLOCK (`ulimit -l`) on this very rank."""
    zero = config.get("zero_optimization") or {}
    pinned = any((zero.get(k) or {}).get("device", "none") != "none" and (zero.get(k) or {}).get("pin_memory")
                 for k in ("offload_optimizer", "offload_param"))
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if pinned and soft != resource.RLIM_INFINITY:
        print(f"rank {rank}: warning: pinned offload with a locked-memory limit of {soft // 1024} KiB "
              "(ulimit -l); raise it (slurm.conf PropagateResourceLimitsExcept=MEMLOCK, slurmd "
              "LimitMEMLOCK=infinity) or set pin_memory false", flush=True)


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (process RSS)


def main() -> int:
    args = parse()
    # torch 2.13 deprecates collectives that DeepSpeed calls on every step (DeepSpeed's to change).
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated",
                            category=FutureWarning)
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    accel = get_accelerator()
    on_gpu = accel.device_name() == "cuda"
    if accel.device_name() == "cpu" and not args.shm_comm:
        # DeepSpeed's CPU accelerator JIT-compiles a shared-memory comm op in init_distributed()
        # when its compatibility probe says it can; there is no switch, but the probe result is
        # a module-level dict that DeepSpeed keeps and consults (deepspeed/ops/__init__.py).
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if on_gpu:
        # Right both when the launcher bound one GPU per task and when all GPUs are visible.
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    # No MPI discovery: a missing RANK/MASTER_ADDR is an error, not a guess from `hostname -I`.
    deepspeed.init_distributed(auto_mpi_discovery=False)
    import deepspeed.comm as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    if args.ds_config:
        with open(args.ds_config, encoding="utf-8") as f:
            config = json.load(f)
        source = args.ds_config
    else:
        config = default_config(device.type)
        source = "built-in default"
    opt = config.setdefault("optimizer", {"type": "AdamW", "params": {}})
    opt.setdefault("params", {})["lr"] = args.lr
    precision = "bf16" if (config.get("bf16") or {}).get("enabled") else \
        "fp16" if (config.get("fp16") or {}).get("enabled") else "fp32"
    zero = config.get("zero_optimization") or {}
    offload = {k: (zero.get(k) or {}).get("device", "none") for k in ("offload_optimizer", "offload_param")}
    print(f"rank {rank} of {world} local_rank {local_rank} on {socket.gethostname()} device {device} "
          f"backend {torch.distributed.get_backend()} "
          f"master {os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}", flush=True)
    if rank == 0:
        print(f"config {source}: ZeRO stage {zero.get('stage')}, {precision}, offload optimizer "
              f"{offload['offload_optimizer']}, parameters {offload['offload_param']}, micro batch "
              f"{config.get('train_micro_batch_size_per_gpu')}, grad accumulation "
              f"{config.get('gradient_accumulation_steps', 1)}", flush=True)
    memlock_warning(config, rank)

    torch.manual_seed(0)  # same initial weights on every rank
    # zero.Init partitions each parameter as it is created: the full model never has to fit
    # on one device (the point of ZeRO-3 for large models).
    with deepspeed.zero.Init(config_dict_or_path=config):
        model = TinyLM(args.vocab, args.d_model, args.layers, args.heads, args.seq_len)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=config)

    if rank == 0:
        print(f"engine: ZeRO stage {engine.zero_optimization_stage()}, optimizer "
              f"{engine.basic_optimizer.__class__.__name__}, optimizer offload "
              f"{getattr(engine.optimizer, 'offload_optimizer', False)}, parameter offload "
              f"{getattr(engine.optimizer, 'offload_param', False)}", flush=True)

    # Partitioning: ds_numel is a parameter's full size, ds_tensor this rank's shard of it.
    full = sum(p.ds_numel for p in model.parameters())
    mine = sum(p.ds_tensor.numel() for p in model.parameters())
    print(f"rank {rank} partition: {mine} of {full} parameters ({mine / full:.3f}, "
          f"1/world = {1 / world:.3f})", flush=True)

    micro = engine.train_micro_batch_size_per_gpu()
    accum = engine.gradient_accumulation_steps()
    gen = torch.Generator().manual_seed(1000 + rank)
    losses, times = [], []
    for step in range(1, args.steps + 1):
        # Data first, outside the timed region: the step time is the model's.
        seqs = [batch(gen, micro, args.seq_len, args.vocab).to(device) for _ in range(accum)]
        if on_gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        total = 0.0
        for seq in seqs:
            logits = engine(seq[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, args.vocab), seq[:, 1:].reshape(-1))
            engine.backward(loss)
            engine.step()  # DeepSpeed steps the optimizer at the accumulation boundary
            total += loss.item()
        mean = torch.tensor([total / accum], device=device)
        dist.all_reduce(mean)
        if on_gpu:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        losses.append(mean.item() / world)
        times.append(dt)
        if rank == 0:
            print(f"step {step}/{args.steps} loss {losses[-1]:.4f} time {dt * 1000:.1f} ms", flush=True)

    peak = torch.tensor([peak_memory_gib(device)], device=device)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    if rank == 0:
        steady = times[2:] if len(times) > 4 else times
        kind = "GPU max allocated" if on_gpu else "process max RSS"
        print(f"summary: world {world} {precision} offload optimizer {offload['offload_optimizer']} "
              f"param {offload['offload_param']}: loss {losses[0]:.4f} -> {losses[-1]:.4f} "
              f"(ln V = {math.log(args.vocab):.4f}); step {sum(steady) / len(steady) * 1000:.1f} ms "
              f"mean over steps {args.steps - len(steady) + 1}-{args.steps}; peak memory "
              f"{peak.item():.2f} GiB ({kind}, busiest rank); parameters {full}", flush=True)
        print("loss fell: " + ("OK" if losses[-1] < losses[0] * 0.8 else "NO"), flush=True)
    dist.barrier()
    return 0


if __name__ == "__main__":
    # Leave without C++ static destructors: torch 2.13's gloo can abort in one at interpreter
    # exit ("terminate called without an active exception"), failing a finished job
    # (hpcjobs/shutdown.py says more). Without hpcjobs (torchrun, say): the ordinary exit.
    try:
        from hpcjobs import finish
    except ImportError:
        finish = sys.exit
    finish(main())
