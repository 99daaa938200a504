"""The ``hpcjobs`` command: thin over :mod:`hpcjobs.api`.

Imports stay lazy (only click at start-up) so ``hpcjobs --help`` and ``render`` are fast;
each command imports what it uses. Exit codes: 0 ok, 1 job failed, 2 bad input, 3 Slurm.
"""

from __future__ import annotations

import json
import sys

from typing import ClassVar

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def fail(err) -> None:
    """Print an hpcjobs error as one line and exit with its code."""
    click.echo(f"hpcjobs: error: {err}", err=True)
    sys.exit(getattr(err, "exit_code", 1))


def guarded(fn):
    """Turn hpcjobs errors into one line + exit code instead of a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from hpcjobs.errors import HpcjobsError

        try:
            return fn(*args, **kwargs)
        except HpcjobsError as err:
            fail(err)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def _usage_error_one_line(self, file=None) -> None:
    """click's own usage errors (unknown option, bad choice) as one line naming the option,
    like every other bad input; exit code 2 as before. click would print the usage, a blank
    line and "Error: ..."."""
    where = f"; see '{self.ctx.command_path} --help'" if self.ctx else ""
    click.echo(f"hpcjobs: error: {self.format_message().rstrip('.')}{where}", err=True, file=file)


click.exceptions.UsageError.show = _usage_error_one_line


def cluster_of(ctx: click.Context, explicit: str | None = None):
    from hpcjobs.cluster import load_cluster

    root = ctx.find_root()
    return load_cluster(explicit or (root.obj or {}).get("cluster"))


class LazyGroup(click.Group):
    """Top-level group whose bigger commands live in their own modules, imported on use."""

    # name -> "module:attribute" of a click command; a feature adds one line here.
    lazy: ClassVar[dict[str, str]] = {
        "sandbox": "hpcjobs.sandbox.cli:sandbox",
        "doctor": "hpcjobs.doctor:doctor_cmd",
        "why": "hpcjobs.triage:why_cmd",
    }

    def list_commands(self, ctx):
        return sorted([*super().list_commands(ctx), *(n for n in self.lazy if self._load(n))])

    def get_command(self, ctx, name):
        return super().get_command(ctx, name) or self._load(name)

    def _load(self, name):
        import importlib

        target = self.lazy.get(name)
        if not target:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return None


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.version_option(package_name="hpcjobs", prog_name="hpcjobs")
@click.option("--cluster", "cluster_file", metavar="FILE", envvar="HPCJOBS_CLUSTER",
              help="Cluster profile (TOML). Default: $HPCJOBS_CLUSTER, the running sandbox, "
                   "~/.config/hpcjobs/cluster.toml, then the built-in pve1..pve3 profile.")
@click.pass_context
def main(ctx: click.Context, cluster_file: str | None) -> None:
    """Render, check, record and submit Slurm jobs that are right for the hardware."""
    ctx.obj = {"cluster": cluster_file}


# --- per-kind commands --------------------------------------------------------------------

def common_options() -> list[click.Option]:
    """Options every kind takes (built fresh for each command)."""
    return [
    click.Option(["--nodes", "-N"], type=int, help="Nodes (default: all of the partition)."),
    click.Option(["--ntasks-per-node"], type=int, help="Tasks per node (GPU kinds: one per GPU)."),
    click.Option(["--gpus-per-node"], type=int, help="GPUs per node (default: what the nodes have)."),
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
    click.Option(["--array"], metavar="SPEC", help="Job array, e.g. 0-15 or 0-99%10; each task "
                                                    "sees SLURM_ARRAY_TASK_ID."),
    click.Option(["--after"], multiple=True, metavar="JOBID[:STATE]",
                 help="Start after that job: STATE ok (default), any, notok, start, corr."),
    click.Option(["--signal"], default="USR2", show_default=True,
                 help="Warning signal before the time limit (forwarded to the program)."),
    click.Option(["--signal-seconds"], type=int, default=120, show_default=True,
                 help="Seconds before the limit that the signal comes."),
    click.Option(["--requeue/--no-requeue"], default=False, show_default=True,
                 help="Requeue after the warning signal or a node failure."),
    click.Option(["--nccl-debug"], is_flag=True, help="NCCL_DEBUG=INFO with INIT,NET,GRAPH."),
    click.Option(["--chdir"], metavar="DIR", help="Working directory of the job."),
    click.Option(["--python"], metavar="PATH",
                 help="Interpreter the job uses (default: the one running hpcjobs)."),
    click.Option(["--cluster", "cluster_file"], metavar="FILE", help="Cluster profile (TOML)."),
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
        options=options, python=params.pop("python", None) or sys.executable,
        **{k: v for k, v in params.items() if k in _SPEC_KEYS})


_SPEC_KEYS = {"nodes", "ntasks_per_node", "gpus_per_node", "cpus_per_task", "time", "partition",
              "job_name", "account", "qos", "output_dir", "array", "signal", "signal_seconds",
              "requeue", "nccl_debug", "chdir"}


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

        return click.Command(
            name, params=params, callback=callback, help=f"{kind.summary}\n\nPROG ARGS... follow "
            f"`--`, e.g. hpcjobs {self.name} {name} --nodes 2 -- {kind.usage}",
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
                     help="Wait for the end; exit 0 only if the job COMPLETED."),
        click.Option(["--follow"], is_flag=True, help="Stream the job's output until it ends."),
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
        click.echo(json.dumps({"job_id": sub.job_id, "run_dir": str(sub.run.path)}))
    else:
        click.echo(f"Submitted batch job {sub.job_id} (record: {sub.run.path})")
    if follow:
        sys.exit(_follow(sub.job_id))
    if wait_:
        sys.exit(_wait_one(sub.job_id))


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
main.add_command(submit)
main.add_command(render_cmd)
main.add_command(plan_cmd)


# --- watching jobs ------------------------------------------------------------------------

def _progress(tty: bool):
    def show(st, elapsed):
        if not tty:
            return
        reason = f" ({st.reason})" if st.reason else ""
        line = f"job {st.job_id}: {st.state}{reason}  {elapsed:6.1f}s"
        click.echo("\r\033[K" + line, nl=False, err=True)
    return show


def _wait_one(job_id: str) -> int:
    from hpcjobs import api

    tty = sys.stderr.isatty()
    st = api.wait(job_id, on_update=_progress(tty))
    if tty:
        click.echo("", err=True)
    msg = api.describe_end(st)
    click.echo(msg, err=st.state != "COMPLETED")
    return 0 if st.state == "COMPLETED" else 1


def _follow(job_id: str) -> int:
    """Stream the output file while the job runs, then report how it ended."""
    import time

    from hpcjobs import api, slurm

    path = api.logs(job_id)
    pos = 0
    delay = 0.2
    st = None
    while True:
        st = api._combine(job_id, list(slurm.job_status([job_id]).values()))
        pos = _drain(path, pos)
        if st.done or st.state == "UNKNOWN":
            time.sleep(0.2)
            _drain(path, pos)
            break
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    st = api.wait(job_id)
    msg = api.describe_end(st)
    click.echo(msg, err=st.state != "COMPLETED")
    return 0 if st.state == "COMPLETED" else 1


def _drain(path, pos: int) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(pos)
            data = f.read()
    except FileNotFoundError:
        return pos
    if data:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return pos + len(data)


@main.command(context_settings=CONTEXT)
@click.argument("job_ids", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--all", "show_all", is_flag=True, help="All recorded jobs, not the last 20.")
@click.option("--queue", "-q", is_flag=True, help="All your jobs in Slurm's queue, recorded or not.")
@guarded
def status(job_ids, as_json, show_all, queue):
    """State of jobs (default: the jobs hpcjobs recorded)."""
    from hpcjobs import api

    if queue:
        rows = api.queue()
    else:
        rows = api.status(list(job_ids) or None, limit=0 if show_all else 20)
    if as_json:
        click.echo(json.dumps([{**st.to_dict(), "run_dir": str(r.path) if r else None,
                                "kind": r.meta().get("kind") if r else None,
                                "endpoint": r.meta().get("endpoint") if r else None}
                               for st, r in rows], indent=2))
        return
    if not rows:
        click.echo("no jobs recorded yet (hpcjobs submit ...)" if not job_ids else "no such jobs")
        return
    click.echo(f"{'JOBID':<12} {'KIND':<16} {'STATE':<12} {'EXIT':<5} {'ELAPSED':>10}  {'NODES':<16} REASON/ENDPOINT")
    lines = []
    for st, r in rows:
        meta = r.meta() if r else {}
        extra = meta.get("endpoint") or st.reason or ""
        ec = "" if st.exit_code is None else str(st.exit_code)
        lines.append(f"{st.job_id:<12} {meta.get('kind', '-'):<16} {st.state:<12} {ec:<5} "
                     f"{st.elapsed:>10}  {st.nodes or '-':<16} {extra}")
    click.echo("\n".join(lines))


@main.command(context_settings=CONTEXT)
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the job ends.")
@guarded
def logs(job_id, follow):
    """Print a job's output."""
    from hpcjobs import api

    if follow:
        sys.exit(_follow(job_id))
    path = api.logs(job_id)
    if not path.exists():
        from hpcjobs.errors import BadInput

        raise BadInput("JOBID", f"output {path} does not exist (yet)", "the job may still be pending")
    _drain(path, 0)


@main.command(context_settings=CONTEXT)
@click.argument("job_ids", nargs=-1, required=True)
@guarded
def cancel(job_ids):
    """Cancel jobs."""
    from hpcjobs import api

    api.cancel(list(job_ids))
    click.echo(f"cancelled {' '.join(job_ids)}")


@main.command("wait", context_settings=CONTEXT)
@click.argument("job_ids", nargs=-1, required=True)
@guarded
def wait_cmd(job_ids):
    """Wait for jobs to end; exit 0 only if all COMPLETED."""
    rc = 0
    for jid in job_ids:
        rc = max(rc, _wait_one(jid))
    sys.exit(rc)


@main.command(context_settings=CONTEXT)
def kinds():
    """List job kinds."""
    from hpcjobs import kinds as k

    for name in k.names():
        click.echo(f"{name:<18} {k.get(name).summary}")


@main.group(context_settings=CONTEXT)
def cluster():
    """The cluster profile."""


@cluster.command("show", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@guarded
def cluster_show(ctx, as_json):
    """Print the profile in use and where it came from."""
    c = cluster_of(ctx)
    if as_json:
        click.echo(c.to_json())
        return
    click.echo(f"cluster {c.name}  (from {c.source})")
    f = c.fabric
    click.echo(f"fabric  {f.kind} {f.device or '-'} port {f.port} via {f.interface or '-'}, "
               f"{f.rate_gbps:g} Gb/s")
    for p in c.partitions:
        click.echo(f"partition {p.name}{' (default)' if p.default else ''}: {len(p.nodes)} nodes, "
                   f"max time {p.max_time or '-'}")
    for n in c.nodes:
        gpu = f"{n.gpu.count}x {n.gpu.model or n.gpu.type} {n.gpu.memory_gb:g} GB CC {n.gpu.compute_capability}" \
            if n.gpu else "no GPU"
        click.echo(f"  {n.name:<12} {n.address or '-':<16} {n.cpus} CPUs {n.memory_mb} MB  {gpu}")


@cluster.command("slurm-conf", context_settings=CONTEXT)
@click.option("--out", metavar="DIR", help="Write slurm.conf, gres.conf and cgroup.conf there "
                                           "(default: print them).")
@click.pass_context
@guarded
def cluster_slurm_conf(ctx, out):
    """slurm.conf, gres.conf and cgroup.conf for the profile in use (slurm.conf.d/ is this
    for the built-in profile)."""
    from hpcjobs import slurmconf

    files = slurmconf.generate(cluster_of(ctx))
    if out:
        for p in slurmconf.write(files, out):
            click.echo(f"wrote {p}")
        return
    click.echo("\n".join(f"# ===== {name} =====\n{text}" for name, text in files.items()), nl=False)


if __name__ == "__main__":
    main(prog_name="hpcjobs")
