"""How often a finished distributed program still fails at exit, with and without hpcjobs.finish.

    python benchmarks/exit_aborts.py [--runs 60] [--ranks 3] [--plain-exit] -- PROG [ARGS...]

Starts RANKS processes of PROG on this host through ``python -m hpcjobs.launch``, with the
variables srun sets for a one-node step of that many tasks, RUNS times one after the other,
and counts the runs in which any rank exited non-zero (and how many of those printed
"terminate called without an active exception"). PROG's own last statement runs as written;
``--plain-exit`` instead loads PROG as a module and ends with ``sys.exit(main())``, which is
how the examples ended before hpcjobs.finish (docs/reliability.md, section 9). Not a test:
the figure is a rate, and the machine's load changes it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time

# Loads the program under another name (its `if __name__ == "__main__"` block does not run)
# and exits the ordinary way, through the interpreter's teardown.
PLAIN_EXIT = (
    "import runpy, sys; sys.argv = sys.argv[1:]; "
    "ns = runpy.run_path(sys.argv[0], run_name='__plain_exit__'); sys.exit(ns['main']())"
)


def rank_env(rank: int, ranks: int, job_id: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "MASTER_")) and k not in ("RANK", "WORLD_SIZE")}
    env.update(SLURM_JOB_ID=str(job_id), SLURM_STEP_ID="0", SLURM_PROCID=str(rank),
               SLURM_LOCALID=str(rank), SLURM_NTASKS=str(ranks), SLURM_NODEID="0",
               SLURM_NNODES="1", SLURM_TASKS_PER_NODE=str(ranks),
               SLURM_JOB_NODELIST="localhost", SLURM_STEP_NODELIST="localhost",
               OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    return env


def one_run(prog: list[str], ranks: int, job_id: int, plain: bool, tmp: str) -> tuple[list[int], bool, str]:
    argv = [sys.executable, "-c", PLAIN_EXIT, *prog] if plain else [sys.executable, *prog]
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(open(os.path.join(tmp, f"rank{r}.out"), "w+b"))
                for r in range(ranks)]
        procs = [subprocess.Popen([sys.executable, "-m", "hpcjobs.launch", "--", *argv],
                                  stdout=log, stderr=subprocess.STDOUT, env=rank_env(r, ranks, job_id))
                 for r, log in enumerate(logs)]
        codes = [p.wait() for p in procs]
        aborted, tails = False, []
        for r, (log, code) in enumerate(zip(logs, codes)):
            log.seek(0)
            text = log.read()
            aborted |= b"terminate called without an active exception" in text
            if code:  # the last lines of a failed rank: an abort, or an error of the program's own
                last = text.decode(errors="replace").rstrip().splitlines()[-3:]
                tails.append("".join(f"\n    rank {r}: {ln}" for ln in last))
    return codes, aborted, "".join(tails)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--ranks", type=int, default=3)
    p.add_argument("--plain-exit", action="store_true",
                   help="end with sys.exit(main()) instead of PROG's own last statement")
    p.add_argument("prog", nargs=argparse.REMAINDER, help="-- PROG [ARGS...]")
    a = p.parse_args()
    prog = a.prog[1:] if a.prog[:1] == ["--"] else a.prog
    if not prog:
        p.error("give the program after --")
    failed = aborted = 0
    t0 = time.monotonic()
    base = 700000 + os.getpid() % 10000 * 10  # distinct job ids: distinct MASTER_PORTs
    with tempfile.TemporaryDirectory(prefix="exit-aborts-") as tmp:
        for i in range(1, a.runs + 1):
            codes, abort, tail = one_run(prog, a.ranks, base + i, a.plain_exit, tmp)
            if any(codes):
                failed += 1
                aborted += abort
                print(f"run {i}: exit codes {codes}{' (std::terminate)' if abort else ''}{tail}",
                      flush=True)
    took = time.monotonic() - t0
    mode = "sys.exit(main()) (--plain-exit)" if a.plain_exit else "the program's own exit"
    print(f"{a.runs} runs of {a.ranks} ranks, {mode}: {failed} failed "
          f"({aborted} with std::terminate) in {took:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
