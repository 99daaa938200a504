"""``srun python -m hpcjobs.launch [OPTIONS] -- PROG ARGS...``: set the task's environment, exec PROG.

Exit codes (the program's own once it runs): 2 a Slurm variable is missing or inconsistent, the
cluster profile is unreadable, an option is wrong, or rank 0 finds MASTER_PORT taken (one line
naming the variable and the fix; nothing runs); 126 PROG cannot be executed; 127 PROG not found.
Arguments are parsed by hand: argparse is not needed for four flags.
"""

import os
import sys

from hpcjobs.errors import BadInput

USAGE = ("usage: python -m hpcjobs.launch [--dry-run] [--explain] [--nccl-debug] "
         "[--framework NAME[,NAME]] [--] PROG [ARGS...]")
HELP = USAGE + """

Run as a task of a Slurm job step (srun ... python -m hpcjobs.launch -- PROG ARGS): sets RANK,
LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR, MASTER_PORT from SLURM_*,
OMP_NUM_THREADS from the task's CPUs, the NCCL/UCX/Open MPI fabric variables from the node's
sysfs and GPU binding, then execs PROG. Variables already set are kept. The job's warning
signal (HPCJOBS_SIGNAL) starts ignored, or at its default with HPCJOBS_SIGNAL_HANDLER=program
(for a program whose framework handles it, e.g. Lightning's auto-requeue).

  --dry-run        print the variables it would add (sorted KEY=VALUE) and exit
  --explain        print each variable, its value and the reason (stderr; stdout with --dry-run)
  --nccl-debug     NCCL_DEBUG=INFO, NCCL_DEBUG_SUBSYS=INIT,NET,GRAPH (also HPCJOBS_NCCL_DEBUG=1)
  --framework N    hooks: torch, deepspeed, megatron, mpi, horovod, vllm, jax (comma-separated;
                   default from HPCJOBS_FRAMEWORK or HPCJOBS_KIND, else torch)
See docs/launch.md.
"""


def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    opts = {"dry_run": False, "explain": False, "nccl_debug": False, "framework": None}
    flags = {"--dry-run": "dry_run", "--explain": "explain", "--nccl-debug": "nccl_debug"}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if a in flags:
            opts[flags[a]] = True
        elif a == "--framework" or a.startswith("--framework="):
            if a == "--framework":
                i += 1
                if i == len(argv):
                    raise BadInput("--framework", "needs a value", "e.g. --framework megatron")
                opts["framework"] = argv[i]
            else:
                opts["framework"] = a.partition("=")[2]
        elif a in ("-h", "--help"):
            opts["help"] = True
        elif a.startswith("-"):
            raise BadInput(a, "unknown option", USAGE)
        else:
            break
        i += 1
    return opts, argv[i:]


def port_taken(port: int, host: str = "") -> str | None:
    """Why ``port`` cannot be listened on here (in use), or None. Only rank 0 calls this, so
    the C module _socket is imported here (socket.py would add ~3 ms for nothing)."""
    import _socket
    import errno

    for family, addr in ((_socket.AF_INET, host or "0.0.0.0"), (_socket.AF_INET6, host or "::")):
        if host and (":" in host) != (family == _socket.AF_INET6):
            continue
        try:
            s = _socket.socket(family, _socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this node
        try:
            # As torch's TCPStore does: a port left in TIME_WAIT by an earlier step is reusable.
            s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            if family == _socket.AF_INET6:
                s.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
            s.listen(1)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return f"port {port} is already in use on this node ({addr})"
        finally:
            s.close()
    return None


def main(argv: list[str] | None = None, env: dict | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ if env is None else env
    err = sys.stderr.write
    try:
        opts, prog = parse_args(argv)
    except BadInput as e:
        err(f"hpcjobs.launch: {e}\n")
        return 2
    if opts.get("help"):
        sys.stdout.write(HELP)
        return 0
    if not prog and not opts["dry_run"]:
        err(f"hpcjobs.launch: PROG: missing; {USAGE}\n")
        return 2

    from hpcjobs.launch import signals
    from hpcjobs.launch.environment import build, dry_run, explain

    try:
        task = build(env, nccl_debug=opts["nccl_debug"], framework=opts["framework"])
    except BadInput as e:
        err(f"hpcjobs.launch: {e}\n")
        return 2
    if task.step.rank == 0:
        for w in task.warnings:
            err(w + "\n")
    if opts["dry_run"]:
        # No port check here: a dry run changes nothing and binds nothing.
        sys.stdout.write(explain(task) if opts["explain"] else dry_run(task))
        return 0
    if opts["explain"]:
        err(explain(task))
    if task.check_port is not None:
        why = port_taken(task.check_port)
        if why:
            err(f"hpcjobs.launch: MASTER_PORT: {why}; rank 0 cannot host the rendezvous there. "
                "Set MASTER_PORT to a free port for this step (srun --export=ALL,MASTER_PORT=N ...)\n")
            return 2
    new_env = dict(env)
    new_env.update(task.additions())
    signals.apply(task.warning_signal)  # ignored, or default for the program's own handler
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(prog[0], prog, new_env)
    except FileNotFoundError:
        err(f"hpcjobs.launch: {prog[0]}: command not found\n")
        return 127
    except OSError as e:
        err(f"hpcjobs.launch: {prog[0]}: cannot execute: {e.strerror}\n")
        return 126
    return 0  # not reached: execvpe replaced this process


if __name__ == "__main__":
    sys.exit(main())
