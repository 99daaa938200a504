"""Registry of job kinds. Modules are imported only when their kind is used."""

from __future__ import annotations

from hpcjobs.errors import BadInput
from hpcjobs.lazy import load

# name -> "module:KIND"; each module defines KIND, an instance of hpcjobs.kinds.base.Kind.
KINDS: dict[str, str] = {
    "mpi": "hpcjobs.kinds.mpi:KIND",
    "train": "hpcjobs.kinds.train:KIND",
    "deepspeed": "hpcjobs.kinds.deepspeed:KIND",
    "horovod": "hpcjobs.kinds.horovod:KIND",
    "bench-allreduce": "hpcjobs.kinds.bench_allreduce:KIND",
    "bench-mpi": "hpcjobs.kinds.bench_mpi:KIND",
    "megatron": "hpcjobs.kinds.megatron:KIND",
    "vllm": "hpcjobs.kinds.vllm:KIND",
    "jax": "hpcjobs.kinds.jax:KIND",
    "ray": "hpcjobs.kinds.ray:KIND",
}


def names() -> list[str]:
    return list(KINDS)


def get(name: str):
    try:
        module = KINDS[name]
    except KeyError:
        raise BadInput("KIND", f"unknown job kind {name!r}",
                       f"use one of: {', '.join(KINDS)}") from None
    return load(module)
