"""``hpcjobs submit|render|plan KIND [OPTIONS] -- PROG ARGS``: one subcommand per job kind."""

from __future__ import annotations

import json
import sys

import click

from hpcjobs.cli.kit import CONTEXT, cluster_of, fail, guarded


# --- per-kind commands --------------------------------------------------------------------

def common_options() -> list[click.Option]:
    """Options every kind takes (built fresh for each command)."""
    return [
    click.Option(["--nodes", "-N"], type=int, help="Nodes (default: all of the partition)."),
    click.Option(["--ntasks-per-node"], type=int, help="Tasks per node (GPU kinds: one per GPU)."),
    click.Option(["--gpus-per-node"], type=int, help="GPUs per node (default: what the nodes "
                 "have; mpi and bench-mpi: none)."),
    click.Option(["--cpus-per-task"], type=int, help="CPUs per task."),
    click.Option(["--time", "-t"], help="Time limit, e.g. 30, 02:00:00, 1-00:00:00."),
    click.Option(["--partition", "-p"], help="Partition (default: the profile's)."),
    click.Option(["--job-name", "-J"], help="Job name."),
    click.Option(["--account", "-A"], help="Slurm account."),
    click.Option(["--qos"], help="Slurm QOS."),
    click.Option(["--env", "env"], multiple=True, metavar="NAME=VALUE",
                 help="Set a variable in the job (repeatable)."),
    click.Option(["--env-pass"], multiple=True, metavar="NAME",
                 help="Pass a variable of this environment by name; its value is never written."),
    click.Option(["--output-dir"], metavar="DIR",
                 help="Where slurm-<jobid>.out goes (default: the run record's directory)."),
    click.Option(["--array"], metavar="SPEC", help="Job array, e.g. 0-15 or 0-99%10, of any size "
                 "(split into several Slurm arrays past MaxArraySize, the throttle held across "
                 "them); each task sees its index as HPCJOBS_ARRAY_INDEX."),
    click.Option(["--after"], multiple=True, metavar="JOBID[:STATE]",
                 help="Start after that job: STATE ok (default), any, notok, start, corr."),
    click.Option(["--signal"], default="USR2", show_default=True,
                 help="Warning signal before the time limit (forwarded to the program)."),
    click.Option(["--signal-seconds"], type=int, default=120, show_default=True,
                 help="Seconds before the limit that the signal comes."),
    click.Option(["--signal-handler"], type=click.Choice(["hpcjobs", "program"]), default="hpcjobs",
                 show_default=True,
                 help="Who acts on the warning signal: hpcjobs (the program starts with it ignored "
                      "unless it calls hpcjobs.preempted(); the job script requeues) or program (its "
                      "own handler, e.g. Lightning's auto-requeue: --signal USR1, it requeues itself)."),
    click.Option(["--requeue/--no-requeue"], default=False, show_default=True,
                 help="Requeue after the warning signal or a node failure."),
    click.Option(["--nccl-debug"], is_flag=True, help="NCCL_DEBUG=INFO with INIT,NET,GRAPH."),
    click.Option(["--preflight/--no-preflight"], default=None,
                 help="Check every node before the program (interpreter, framework import, program "
                      "file, free space, memlock, GPUs, RDMA port, a tiny all-reduce and the transport "
                      "NCCL chose). Default: the profile's defaults.preflight (off)."),
    click.Option(["--on-bad-node"], type=click.Choice(["fail", "exclude"]), default="fail",
                 show_default=True,
                 help="A node fails the preflight: fail (the job ends, exit 78) or exclude (the job "
                      "requeues with the node in its ExcNodeList)."),
    click.Option(["--bad-node-retries"], type=int, default=2, show_default=True, metavar="N",
                 help="With --on-bad-node exclude: requeue at most N times."),
    click.Option(["--fabric-check"], type=click.Choice(["fail", "warn"]), default="fail",
                 show_default=True,
                 help="NCCL over sockets between nodes where the profile says InfiniBand/RoCE: "
                      "fail the preflight, or only warn."),
    click.Option(["--hang-timeout"], metavar="DURATION",
                 help="Hang sentinel: no progress (heartbeat, output, NCCL) for this long, e.g. 30m: "
                      "every rank's stacks into the record, then the job is stopped (requeued with "
                      "--requeue). Default: the profile's, else off (0)."),
    click.Option(["--retry"], type=int, default=0, show_default=True, metavar="N",
                 help="Resubmit at most N times after a failure whose cause a rule knows, with "
                      "the request adjusted: TIMEOUT -> longer --time, NODE_FAIL or a bad node -> "
                      "--exclude it, out of memory -> more --mem, NCCL timeout or hang -> as is, "
                      "once; other causes are not retried (docs/retry.md)."),
    click.Option(["--retry-time-factor"], type=float, default=2.0, show_default=True,
                 metavar="F", help="With --retry: a TIMEOUT's next --time is F times longer "
                                   "(capped at the partition's MaxTime)."),
    click.Option(["--retry-mem-factor"], type=float, default=2.0, show_default=True,
                 metavar="F", help="With --retry: an out-of-memory's next --mem is F times more "
                                   "(capped by the nodes' RealMemory)."),
    click.Option(["--chdir"], metavar="DIR", help="Working directory of the job."),
    click.Option(["--python"], metavar="PATH",
                 help="Interpreter the job uses (default: the one running hpcjobs)."),
    click.Option(["--cluster", "cluster_file"], metavar="FILE", help="Cluster profile (TOML)."),
    click.Option(["--monitor/--no-monitor"], default=True, show_default=True,
                 help="A light sampler per node beside the program (CPU, memory, the job's GPUs, "
                      "energy) for `hpcjobs report JOBID`."),
    click.Option(["--monitor-interval"], type=float, default=5.0, show_default=True,
                 metavar="SECONDS", help="Seconds between the monitor's samples (0.5-3600)."),
    *sbatch_options(),
    ]


def sbatch_options() -> list[click.Option]:
    """sbatch's own options beyond the job's shape: checked (hpcjobs/sbatch_options.py), quoted
    onto #SBATCH lines and kept in the run record (docs/sbatch-options.md)."""
    return [
    click.Option(["--mem"], metavar="SIZE", help="Memory per node, as Slurm writes it: 64G, "
                 "512M (0: all of it); checked against the nodes' RealMemory."),
    click.Option(["--mem-per-gpu"], metavar="SIZE", help="Memory per GPU (needs GPUs; not with --mem)."),
    click.Option(["--exclusive"], is_flag=True, help="Whole nodes: no other job shares them."),
    click.Option(["--constraint", "-C"], metavar="FEATURES", help="Node features, e.g. ib&v100s."),
    click.Option(["--exclude", "-x"], metavar="HOSTLIST", help="Nodes not to use, e.g. node[2-3]."),
    click.Option(["--nodelist", "-w"], metavar="HOSTLIST", help="Nodes the job must include."),
    click.Option(["--reservation"], metavar="NAME", help="Run in this reservation."),
    click.Option(["--mail-type"], metavar="TYPES", help="Mail on BEGIN, END, FAIL, ALL, "
                 "TIME_LIMIT_80, ... (comma list)."),
    click.Option(["--mail-user"], metavar="ADDRESS", help="Where the mail goes (needs --mail-type)."),
    click.Option(["--gres"], metavar="LIST", help="Other GRES, e.g. nvme:1 (a gpu item here is "
                 "--gpus-per-node)."),
    click.Option(["--comment"], metavar="TEXT", help="A comment Slurm keeps with the job."),
    click.Option(["--begin"], metavar="TIME", help="Start no earlier: now+1hour, 16:00, "
                 "tomorrow, 2026-12-24T08:00."),
    click.Option(["--deadline"], metavar="TIME", help="Remove the job if it cannot end by then "
                 "(same forms as --begin)."),
    click.Option(["--sbatch-arg", "sbatch_args"], multiple=True, metavar="--NAME[=VALUE]",
                 help="Any other sbatch option, written as one #SBATCH line (repeatable); "
                      "refused where an option above sets it."),
    ]


def _kind_option(opt) -> click.Option:
    flag = f"--{opt.name}"
    if opt.type is bool:
        return click.Option([flag, opt.key], is_flag=True, default=bool(opt.default), help=opt.help)
    typ = click.Choice(opt.choices) if opt.choices else (
        click.Path(exists=True, dir_okay=True) if opt.type == "path" else opt.type)
    return click.Option([flag, opt.key], type=typ, default=opt.default, multiple=opt.multiple,
                        show_default=opt.default is not None, help=opt.help)


def spec_from(kind, params: dict):
    """A JobSpec from the command's parameters."""
    from hpcjobs.errors import BadInput
    from hpcjobs.spec import JobSpec

    env = {}
    for item in params.pop("env", ()) or ():
        name, eq, value = item.partition("=")
        if not eq:
            raise BadInput("--env", f"{item!r} is not NAME=VALUE", "write --env NAME=VALUE")
        env[name] = value
    options = {o.key: params.pop(o.key) for o in kind.options if o.key in params}
    for o in kind.options:
        if o.multiple and o.key in options:
            options[o.key] = list(options[o.key])
    params.pop("cluster_file", None)
    return JobSpec(
        kind=kind.name, program=list(params.pop("program", ())), env=env,
        env_pass=list(params.pop("env_pass", ()) or ()), after=list(params.pop("after", ()) or ()),
        sbatch_args=list(params.pop("sbatch_args", ()) or ()),
        options=options, python=params.pop("python", None) or sys.executable,
        **{k: v for k, v in params.items() if k in _SPEC_KEYS})


_SPEC_KEYS = {"nodes", "ntasks_per_node", "gpus_per_node", "cpus_per_task", "time", "partition",
              "job_name", "account", "qos", "output_dir", "array", "signal", "signal_seconds",
              "signal_handler", "requeue", "nccl_debug", "chdir",
              "mem", "mem_per_gpu", "exclusive", "constraint", "exclude", "nodelist", "reservation",
              "mail_type", "mail_user", "gres", "comment", "begin", "deadline",
              "hang_timeout"}


class KindCommand(click.Command):
    """One kind's command: an option it does not know is most often the program's, typed before
    `--` (`submit train --epochs 3 -- train.py`): say where it goes, whatever click suggests."""

    def parse_args(self, ctx, args):
        given = list(args)  # click's parser consumes the list it is given
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as e:
            args = given
            name = e.option_name
            where = args.index(name) if name in args else next(
                (i for i, a in enumerate(args) if a.startswith(name + "=")), None)
            shown = [args[where]] if where is not None else [name]
            if where is not None and "=" not in args[where] and where + 1 < len(args) and \
                    not args[where + 1].startswith("-"):
                shown.append(args[where + 1])
            close = f" (did you mean {', '.join(repr(p) for p in e.possibilities)}?)" \
                if e.possibilities else ""
            raise click.NoSuchOption(name, message=(
                f"No such option {name!r}{close}: the program's own options go after --, e.g. "
                f"{ctx.command_path} [OPTIONS] -- PROG {' '.join(shown)}"), ctx=ctx) from None

# The preflight's options (docs/runtime-checks.md).
_SPEC_KEYS |= {"preflight", "on_bad_node", "bad_node_retries", "fabric_check"}
_SPEC_KEYS |= {"monitor", "monitor_interval"}  # the monitor beside the job (docs/report.md)
_SPEC_KEYS |= {"retry", "retry_time_factor", "retry_mem_factor"}  # docs/retry.md


class KindGroup(click.Group):
    """``submit``/``render``/``plan`` take KIND as a subcommand, so each kind has its options."""

    def __init__(self, *args, action, extra_params=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.action = action
        self.extra_params = extra_params

    def list_commands(self, ctx):
        from hpcjobs import kinds

        return kinds.names()

    def get_command(self, ctx, name):
        from hpcjobs import kinds
        from hpcjobs.errors import HpcjobsError

        if name not in kinds.names():
            return None
        try:
            kind = kinds.get(name)
        except HpcjobsError as err:
            fail(err)
        params = [*common_options(), *(_kind_option(o) for o in kind.options), *self.extra_params(),
                  click.Argument(["program"], nargs=-1, type=click.UNPROCESSED)]
        action = self.action

        @guarded
        def callback(**kw):
            return action(click.get_current_context(), kind, kw)

        # The kind's own example where its program is not PROG ARGS (vllm: --model M -- ARGS).
        example = getattr(kind, "cli_example", None) or f"-- {kind.usage}"
        return KindCommand(
            name, params=params, callback=callback, help=f"{kind.summary}\n\nPROG ARGS... follow "
            f"`--`, e.g. hpcjobs {self.name} {name} --nodes 2 {example}",
            short_help=kind.summary, context_settings={**CONTEXT, "allow_interspersed_args": False})

    def resolve_command(self, ctx, args):
        from hpcjobs import kinds

        if args and not args[0].startswith("-") and args[0] not in kinds.names():
            from hpcjobs.errors import BadInput

            fail(BadInput("KIND", f"unknown job kind {args[0]!r}", f"use one of: {', '.join(kinds.names())}"))
        return super().resolve_command(ctx, args)


def _submit_params():
    return [
        click.Option(["--dry-run"], is_flag=True, help="Print the script; submit nothing."),
        click.Option(["--wait", "wait_"], is_flag=True,
                     help="Wait for the end, showing each state change; exit 0 only if the "
                          "job COMPLETED. Ctrl-C stops waiting, not the job."),
        click.Option(["--follow"], is_flag=True, help="Stream the job's output until it ends "
                     "(Ctrl-C stops following, not the job)."),
        click.Option(["--json", "as_json"], is_flag=True, help="Print the submission as JSON."),
    ]


def _render_params():
    return [click.Option(["--direct"], is_flag=True,
                         help="Render the generic script shipped as job_templates/KIND.sbatch.")]


def _plan_params():
    return [click.Option(["--json", "as_json"], is_flag=True, help="Print the plan as JSON.")]


def do_render(ctx, kind, kw):
    from hpcjobs import api

    direct = kw.pop("direct")
    cluster = cluster_of(ctx, kw.get("cluster_file"))
    spec = spec_from(kind, kw)
    click.echo(api.render(spec, cluster, direct=direct).script, nl=False)


def do_submit(ctx, kind, kw):
    from hpcjobs import api

    dry, wait_, follow, as_json = (kw.pop(k) for k in ("dry_run", "wait_", "follow", "as_json"))
    cluster = cluster_of(ctx, kw.get("cluster_file"))
    spec = spec_from(kind, kw)
    sub = api.submit(spec, cluster, dry_run=dry)
    if dry:
        click.echo(sub.rendered.script, nl=False)
        return
    if as_json:
        extra = {"retry_follower": sub.follower} if spec.retry else {}
        if sub.array is not None:  # the chunks queued now (feeders queue the others later)
            extra["array_chunks"] = sub.array.job_ids
            extra["array_chunk_count"] = len(sub.array.chunks)
        click.echo(json.dumps({"job_id": sub.job_id, "run_dir": str(sub.run.path), **extra}))
    else:
        click.echo(f"Submitted batch job {sub.job_id} (record: {sub.run.path})")
        if sub.array is not None:
            click.echo(f"  {sub.array.describe()}")
        if spec.retry:
            click.echo(f"  retry: up to {spec.retry} resubmission(s) with the request adjusted; "
                       f"job {sub.follower} decides if this one fails (hpcjobs status "
                       f"{sub.job_id} shows the chain)")
    if follow:
        from hpcjobs.cli.watch import follow_job

        sys.exit(follow_job(sub.job_id, submitted=True))
    if wait_:
        from hpcjobs.cli.watch import wait_one

        sys.exit(wait_one(sub.job_id))


def do_plan(ctx, kind, kw):
    from hpcjobs import api

    as_json = kw.pop("as_json")
    cluster = cluster_of(ctx, kw.get("cluster_file"))
    spec = spec_from(kind, kw)
    p = api.plan(spec, cluster)
    if p is None:
        click.echo(f"kind {kind.name!r} has no plan checks beyond the common ones: fits")
        return
    click.echo(json.dumps(p.to_dict(), indent=2) if as_json else p.text())
    sys.exit(0 if p.ok else 2)


submit = KindGroup("submit", action=do_submit, extra_params=_submit_params,
                   help="Render, check, record and submit a job: hpcjobs submit KIND [OPTIONS] -- PROG ARGS...",
                   context_settings=CONTEXT)
render_cmd = KindGroup("render", action=do_render, extra_params=_render_params,
                       help="Print the sbatch script of a job to stdout.", context_settings=CONTEXT)
plan_cmd = KindGroup("plan", action=do_plan, extra_params=_plan_params,
                     help="Check that a job fits the cluster before it queues (exit 2 if not).",
                     context_settings=CONTEXT)
