"""``bench-allreduce``: all-reduce sweep through torch.distributed with nccl-tests' figures.

One rank per GPU (train-kind style) through hpcjobs.launch, so the benchmark sees exactly the
NCCL/fabric environment a training job gets: a slow result here is a slow training job there.
Rank 0 prints size, time, algbw and busbw per size and a verdict against the profile's line
rate; the JSON (and PNG) land in the output directory (the run record's by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpcjobs.bench.report import parse_size
from hpcjobs.cluster import Cluster
from hpcjobs.errors import BadInput
from hpcjobs.kinds.base import Kind, Option
from hpcjobs.spec import JobSpec

if TYPE_CHECKING:
    from hpcjobs.prepared import Prepared


class BenchAllreduceKind(Kind):
    name = "bench-allreduce"
    summary = "all-reduce bandwidth sweep (torch.distributed, nccl-tests busbw) judged against the link rate"
    template = "bench-allreduce.sbatch.j2"
    task_per_gpu = True
    needs_program = False
    usage = "[--max-size 64M] [--iters 20] ..."
    cli_example = "--max-size 64M --iters 20"  # its own options; nothing after --
    options = (
        Option("min-size", str, "1K", "Smallest message in bytes (K/M/G suffixes, powers of 2)."),
        Option("max-size", str, None, "Largest message (default: 1G with NCCL, 16M with gloo on CPU)."),
        Option("step-factor", int, 2, "Multiply the message size by this at each step."),
        Option("iters", int, None, "Timed iterations per size; the median is reported "
               "(default: 20 with NCCL, 10 with gloo)."),
        Option("warmup", int, None, "Untimed iterations before each size (default: 5 / 2)."),
        Option("dtype", str, "float", "Element type.", choices=("float", "half", "bfloat16")),
        Option("backend", str, "auto", "torch.distributed backend (auto: nccl on GPUs, else gloo).",
               choices=("auto", "nccl", "gloo")),
    )

    def check(self, spec: JobSpec, cluster: Cluster) -> None:
        check_no_program(self.name, spec)
        o = spec.options
        sizes = {}
        for key in ("min_size", "max_size"):
            if o.get(key) is not None:
                try:
                    sizes[key] = parse_size(o[key])
                except ValueError as e:
                    raise BadInput(f"--{key.replace('_', '-')}", str(e)) from None
                if sizes[key] < 4:
                    raise BadInput(f"--{key.replace('_', '-')}", "must be at least 4 bytes (one float)")
        if "max_size" in sizes and sizes["min_size"] > sizes["max_size"]:
            raise BadInput("--max-size", f"{o['max_size']} is below --min-size {o['min_size']}")
        if o.get("step_factor", 2) < 2:
            raise BadInput("--step-factor", "must be at least 2")
        for key in ("iters", "warmup"):
            if o.get(key) is not None and o[key] < (1 if key == "iters" else 0):
                raise BadInput(f"--{key}", f"must be at least {1 if key == 'iters' else 0}")

    def context(self, job: Prepared) -> dict:
        o = job.options
        args = [f"--min-size={o['min_size']}", f"--step-factor={o['step_factor']}",
                f"--dtype={o['dtype']}", f"--backend={o['backend']}"]
        args += [f"--{k.replace('_', '-')}={o[k]}" for k in ("max_size", "iters", "warmup")
                 if o.get(k) is not None]
        return {"bench_args": args + link_args(job)}


def check_no_program(kind: str, spec: JobSpec) -> None:
    if spec.program:
        raise BadInput("PROG", f"{kind} runs its own program; got {' '.join(spec.program)!r}",
                       f"drop the arguments after --; see hpcjobs submit {kind} --help")


def link_args(job: Prepared) -> list[str]:
    """The profile's line rate and fabric kind, for the verdict. None for the direct-use
    script: the benchmark reads the profile in use where it runs (bench.report.link_from_profile),
    as a script rendered for one cluster cannot know another's link."""
    if job.direct:
        return []
    fabric = job.cluster.fabric
    return [f"--link-gbps={fabric.rate_gbps:g}", f"--fabric={fabric.kind}"]


KIND = BenchAllreduceKind()
