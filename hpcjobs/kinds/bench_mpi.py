"""``bench-mpi``: MPI ping-pong latency and bandwidth between two ranks (osu_latency/osu_bw style).

Two tasks, normally one on each of two nodes (``--nodes 2``), started by ``srun --mpi=pmix``
through hpcjobs.launch (so Open MPI gets the same UCX/TCP environment as any MPI job). The
verdict holds the bandwidth at the largest size against the profile's line rate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpcjobs.bench.report import parse_size
from hpcjobs.cluster import Cluster
from hpcjobs.errors import BadInput
from hpcjobs.kinds.base import Kind, Option
from hpcjobs.kinds.bench_allreduce import check_no_program, link_args
from hpcjobs.kinds.mpi import MpiKind
from hpcjobs.spec import JobSpec

if TYPE_CHECKING:
    from hpcjobs.prepared import Prepared


class BenchMpiKind(Kind):
    name = "bench-mpi"
    summary = "MPI ping-pong latency and bandwidth between two nodes (mpi4py), judged against the link rate"
    template = "bench-mpi.sbatch.j2"
    needs_program = False
    gpus_by_default = False  # host-to-host MPI: no GPU held (as the mpi kind)
    cpu_fallback = ""
    usage = "[--max-size 4M ...]"
    cli_example = "--max-size 4M"  # its own options; nothing after --
    options = (
        *MpiKind.options,  # --mpi pmix|pmi2|none
        Option("max-size", str, "4M", "Largest message in bytes (K/M/G suffixes)."),
        Option("iters", int, 1000, "Round trips per size up to 8K (a tenth above); median reported."),
        Option("window", int, 64, "Messages in flight for the bandwidth test (osu_bw: 64)."),
    )

    def check(self, spec: JobSpec, cluster: Cluster) -> None:
        check_no_program(self.name, spec)
        ntasks = spec.nodes * self.tasks_per_node(spec)
        if ntasks != 2:
            raise BadInput("--nodes", f"bench-mpi runs 2 ranks; {spec.nodes} node(s) x "
                           f"{self.tasks_per_node(spec)} task(s) gives {ntasks}",
                           "use --nodes 2 (one rank per node), or --nodes 1 --ntasks-per-node 2 "
                           "for the intra-node figure")
        try:
            if parse_size(spec.options.get("max_size") or "4M") < 1:
                raise ValueError("must be at least 1 byte")
        except ValueError as e:
            raise BadInput("--max-size", str(e)) from None
        for key in ("iters", "window"):
            if spec.options.get(key) is not None and spec.options[key] < 1:
                raise BadInput(f"--{key}", "must be at least 1")

    def context(self, job: Prepared) -> dict:
        o = job.options
        args = [f"--max-size={o['max_size']}", f"--iters={o['iters']}", f"--window={o['window']}"]
        return {"bench_args": args + link_args(job)}


KIND = BenchMpiKind()
