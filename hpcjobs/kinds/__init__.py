"""Registry of job kinds. Modules are imported only when their kind is used."""

from __future__ import annotations

import importlib

from hpcjobs.errors import BadInput

# name -> module; each module defines KIND, an instance of hpcjobs.kinds.base.Kind.
KINDS: dict[str, str] = {
    "mpi": "hpcjobs.kinds.mpi",
    "train": "hpcjobs.kinds.train",
    "deepspeed": "hpcjobs.kinds.deepspeed",
    "horovod": "hpcjobs.kinds.horovod",
    "bench-allreduce": "hpcjobs.kinds.bench_allreduce",
    "bench-mpi": "hpcjobs.kinds.bench_mpi",
    "megatron": "hpcjobs.kinds.megatron",
    "vllm": "hpcjobs.kinds.vllm",
}


def names() -> list[str]:
    return list(KINDS)


def get(name: str):
    try:
        module = KINDS[name]
    except KeyError:
        raise BadInput("KIND", f"unknown job kind {name!r}",
                       f"use one of: {', '.join(KINDS)}") from None
    return importlib.import_module(module).KIND
