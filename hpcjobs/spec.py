"""JobSpec: what one job asks for, and the checks every kind shares.

A spec is plain data (it is recorded as JSON beside the script); ``validate`` turns user
mistakes into :class:`BadInput` errors that name the option and the fix before anything
touches Slurm or the disk.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, fields

from hpcjobs.cluster import Cluster
from hpcjobs.errors import BadInput

# Slurm's --time forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, plus UNLIMITED / infinite.
_TIME = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2})$")
# --array: "0-15", "0-15:4", "1,3,5-7", with an optional "%N" throttle (parse_array).
_ARRAY_ITEM = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")
# The shape alone; parse_array also refuses what slurmctld would (5-1, a step of 0).
_ARRAY = re.compile(r"^\d+(-\d+(:\d+)?)?(,\d+(-\d+(:\d+)?)?)*(%\d+)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JOBID = re.compile(r"^\d+(_\d+)?$")
# --after JOBID[:STATE]: STATE maps onto Slurm's dependency types.
AFTER_STATES = {"ok": "afterok", "any": "afterany", "notok": "afternotok", "start": "after",
                "corr": "aftercorr"}
SIGNALS = ("USR1", "USR2", "TERM", "INT", "HUP", "URG")
# Default warning signal: not USR1, which some NCCL versions use themselves.
DEFAULT_SIGNAL = "USR2"
DEFAULT_SIGNAL_SECONDS = 120
# Who acts on the warning signal (hpcjobs/launch/signals.py, docs/launch.md): hpcjobs (the
# program starts with it ignored unless it asks; the batch script requeues) or program (left at
# its default for the program's own handler, e.g. Lightning's auto-requeue, which requeues itself).
SIGNAL_HANDLERS = ("hpcjobs", "program")
# What the preflight does about a bad node: end the job, or requeue it with the node excluded.
ON_BAD_NODE = ("fail", "exclude")
FABRIC_CHECKS = ("fail", "warn")
BAD_NODE_RETRIES_MAX = 10
# --retry N: resubmissions with the request adjusted (hpcjobs/retry.py, docs/retry.md).
RETRY_MAX = 10
RETRY_FACTOR_RANGE = (1.1, 10.0)
# The monitor's seconds between samples (hpcjobs/runners/monitor.py keeps the same bounds).
MONITOR_INTERVAL = 5.0
MONITOR_INTERVAL_RANGE = (0.5, 3600.0)


@dataclass(frozen=True)
class ArraySpec:
    """A job array as Slurm reads ``--array``: its task indices (sorted, each once) and the
    ``%N`` throttle (None: no limit). The one parser of array specs (spec.validate uses it; so
    may code that splits an array into chunks)."""

    text: str
    indices: tuple[int, ...]
    throttle: int | None = None

    @property
    def count(self) -> int:
        return len(self.indices)


def parse_array(text: str) -> ArraySpec:
    """Read an ``--array`` value: comma-separated items ``N``, ``N-M`` or ``N-M:STEP``, then
    an optional ``%THROTTLE`` (``%0``: none, as Slurm reads it). Raises BadInput naming the
    bad item where slurmctld would refuse the job ("Invalid job array specification",
    job_mgr.c _parse_array_tok: a range may not end before it starts, a step is at least 1)."""
    fix = "use e.g. 0-15, 0-15:4, 1,3,5 or 0-99%10"
    bad = f"{text!r} is not a Slurm array spec"
    body, pct, throttle = text.strip().partition("%")
    limit = None
    if pct:
        if not throttle.isdigit():
            raise BadInput("--array", f"{bad}: the throttle after % must be a number", fix)
        limit = int(throttle) or None  # Slurm reads %0 as no limit (ArrayTaskThrottle=0)
    if not body:
        raise BadInput("--array", bad, fix)
    indices: set[int] = set()
    for item in body.split(","):
        m = _ARRAY_ITEM.match(item)
        if not m:
            raise BadInput("--array", f"{bad}: {item!r} is not N, N-M or N-M:STEP", fix)
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        step = int(m.group(3)) if m.group(3) is not None else 1
        if last < first:
            raise BadInput("--array", f"{bad}: the range {item} ends before it starts",
                           f"write {last}-{first}" + (f":{step}" if m.group(3) else ""))
        if step < 1:
            raise BadInput("--array", f"{bad}: the step of {item} must be at least 1",
                           f"write {first}-{last}:1 or {first}-{last}")
        indices.update(range(first, last + 1, step))
    return ArraySpec(text, tuple(sorted(indices)), limit)


@dataclass
class JobSpec:
    kind: str
    program: list[str] = field(default_factory=list)
    nodes: int | None = None  # None: all nodes of the partition
    ntasks_per_node: int | None = None  # None: the kind decides (one per GPU for GPU kinds)
    gpus_per_node: int | None = None  # None: what the partition's nodes have
    cpus_per_task: int | None = None
    time: str | None = None
    partition: str | None = None
    job_name: str | None = None
    account: str | None = None
    qos: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    env_pass: list[str] = field(default_factory=list)  # passed by name; values never written
    output_dir: str | None = None
    array: str | None = None
    after: list[str] = field(default_factory=list)
    signal: str = DEFAULT_SIGNAL
    signal_seconds: int = DEFAULT_SIGNAL_SECONDS
    signal_handler: str = "hpcjobs"  # hpcjobs | program: see SIGNAL_HANDLERS
    requeue: bool = False
    nccl_debug: bool = False
    python: str = "python3"  # interpreter the job uses for `-m hpcjobs.launch` and .py programs
    chdir: str | None = None
    # sbatch options beyond the shape (hpcjobs/sbatch_options.py reads them; docs/sbatch-options.md)
    mem: str | None = None  # per node, Slurm's form: 64G, 512M; 0: all of a node's memory
    mem_per_gpu: str | None = None
    exclusive: bool = False
    constraint: str | None = None  # feature expression, e.g. ib&v100s
    exclude: str | None = None  # host list
    nodelist: str | None = None  # host list the job must include
    reservation: str | None = None
    mail_type: str | None = None  # comma list: BEGIN,END,FAIL,...
    mail_user: str | None = None
    gres: str | None = None  # other GRES; a gpu item here is the job's GPUs per node
    comment: str | None = None
    begin: str | None = None  # Slurm time forms: now+1hour, 16:00, 2026-12-24T08:00
    deadline: str | None = None
    sbatch_args: list[str] = field(default_factory=list)  # pass-through, --name=value each
    # The monitor beside the program (docs/report.md): off with --no-monitor; seconds per sample.
    monitor: bool = True
    monitor_interval: float = MONITOR_INTERVAL
    # The hang sentinel (docs/runtime-checks.md): a duration (30m, 600); None: the profile's
    # defaults.hang_timeout; validate makes it seconds, 0 = off.
    hang_timeout: int | str | None = None
    # The preflight step (docs/runtime-checks.md): None: the profile's defaults.preflight.
    preflight: bool | None = None
    on_bad_node: str = "fail"  # fail | exclude: see ON_BAD_NODE
    fabric_check: str = "fail"  # fail | warn: NCCL on sockets where the profile says IB/RoCE
    bad_node_retries: int = 2  # requeues with the bad nodes excluded (on_bad_node=exclude)
    # Retries that change the request (docs/retry.md): at most N new jobs, each after a failure
    # whose cause a rule knows; --time and --mem grow by these factors.
    retry: int = 0
    retry_time_factor: float = 2.0
    retry_mem_factor: float = 2.0
    options: dict = field(default_factory=dict)  # kind-specific options

    def to_dict(self) -> dict:
        return asdict(self)

    def gres_request(self, gpu_type: str) -> str:
        """The job's one ``--gres`` value: its GPUs per node (typed as the partition's nodes)
        and the other GRES of ``--gres``. sbatch keeps only the last of several --gres lines."""
        from hpcjobs.sbatch_options import gres

        items = gres(self.gres) if self.gres else []
        out = [] if any(g.name == "gpu" for g in items) or not self.gpus_per_node else \
            [f"gpu:{gpu_type}:{self.gpus_per_node}" if gpu_type else f"gpu:{self.gpus_per_node}"]
        return ",".join(out + ([self.gres] if self.gres else []))

    @classmethod
    def from_dict(cls, data: dict) -> JobSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _no_nul(fld: str, value: str) -> None:
    if "\0" in value:
        raise BadInput(fld, "contains a NUL byte, which no command line or environment can carry",
                       "remove it")


def _one_line(fld: str, value: str, what: str) -> None:
    """A value that lands on an ``#SBATCH`` line: a line break would end the comment there."""
    _no_nul(fld, value)
    if not value or "\n" in value or "\r" in value:
        raise BadInput(fld, f"must be a one-line {what}", "remove the line break")


def _nbytes(value: str) -> int:
    """Length as Slurm counts it (bytes); surrogates are the undecodable bytes of argv."""
    return len(value.encode("utf-8", "surrogateescape"))


# Slurm's own limits (slurmctld job_mgr.c _test_strlen): name 1024 bytes, std_out MAXPATHLEN.
JOB_NAME_MAX = 1024
PATH_MAX = 4095


def validate(spec: JobSpec, cluster: Cluster, *, default_gpus: int | None = None) -> JobSpec:
    """Check what every kind shares and fill cluster defaults; returns a completed copy.

    ``default_gpus``: GPUs per node when the spec names none (None: what the nodes have; the
    mpi kinds pass 0, so that a CPU program does not hold a node's GPUs).
    """
    s = JobSpec.from_dict(spec.to_dict())
    for i, arg in enumerate(s.program):
        _no_nul(f"program argument {i + 1}", arg)

    part = cluster.partition(s.partition)  # raises naming --partition
    s.partition = part.name
    avail = _placement(s, cluster, cluster.partition_nodes(part.name))

    if s.nodes is None:
        s.nodes = len(avail)
    if s.nodes < 1:
        raise BadInput("--nodes", f"must be at least 1, got {s.nodes}", "use --nodes 1 or more")
    if s.nodes > len(avail):
        raise BadInput("--nodes", f"{s.nodes} nodes asked but partition {part.name!r} of cluster "
                       f"{cluster.name!r} has {len(avail)}", f"use --nodes {len(avail)} or fewer")

    node_gpus = min((n.gpus for n in avail), default=0)
    _gpus_from_gres(s)
    if s.gpus_per_node is None:
        s.gpus_per_node = node_gpus if default_gpus is None else min(default_gpus, node_gpus)
    if s.gpus_per_node < 0:
        raise BadInput("--gpus-per-node", f"must not be negative, got {s.gpus_per_node}",
                       "use 0 for a CPU-only job, or leave it out")
    if s.gpus_per_node > node_gpus:
        raise BadInput("--gpus-per-node", f"{s.gpus_per_node} GPUs per node asked but the nodes of "
                       f"partition {part.name!r} have {node_gpus}", f"use --gpus-per-node {node_gpus} or fewer")

    node_cpus = min(n.cpus for n in avail)
    if s.ntasks_per_node is not None:
        if s.ntasks_per_node < 1:
            raise BadInput("--ntasks-per-node", f"must be at least 1, got {s.ntasks_per_node}",
                           "use --ntasks-per-node 1 or more, or leave it out")
        if s.ntasks_per_node > node_cpus:
            raise BadInput("--ntasks-per-node", f"{s.ntasks_per_node} tasks per node but nodes have "
                           f"{node_cpus} CPUs", f"use --ntasks-per-node {node_cpus} or fewer")
    if s.cpus_per_task is not None:
        if s.cpus_per_task < 1:
            raise BadInput("--cpus-per-task", f"must be at least 1, got {s.cpus_per_task}",
                           "use --cpus-per-task 1 or more, or leave it out")
        if s.cpus_per_task * (s.ntasks_per_node or 1) > node_cpus:
            raise BadInput("--cpus-per-task", f"{s.cpus_per_task} CPUs per task x "
                           f"{s.ntasks_per_node or 1} tasks exceeds the {node_cpus} CPUs of a node",
                           "lower --cpus-per-task or --ntasks-per-node")

    if s.time is None:
        s.time = part.default_time or cluster.defaults.time
    s.time = s.time.strip()
    if not (_TIME.match(s.time) or s.time.upper() in ("UNLIMITED", "INFINITE")):
        raise BadInput("--time", f"{s.time!r} is not a Slurm time",
                       "use MINUTES, HH:MM:SS or D-HH:MM:SS, e.g. --time 02:00:00")
    check_time_limit(s.time, part.name, part.max_time)

    if s.job_name is not None:
        _no_nul("--job-name", s.job_name)
        if not s.job_name or "\n" in s.job_name or "\r" in s.job_name:
            raise BadInput("--job-name", "must be one non-empty line", "remove the line break")
        if _nbytes(s.job_name) > JOB_NAME_MAX:
            raise BadInput("--job-name", f"is {_nbytes(s.job_name)} bytes; Slurm takes at most "
                           f"{JOB_NAME_MAX}", "shorten it")
    for label, v in (("--account", s.account), ("--qos", s.qos)):
        if v is not None and not re.match(r"^[A-Za-z0-9_.+-]+$", v):
            raise BadInput(label, f"{v!r} is not a Slurm name", "use letters, digits and _ . + -")

    for name, value in s.env.items():
        if not _ENV_NAME.match(name):
            raise BadInput("--env", f"{name!r} is not a variable name", "use NAME=VALUE with NAME like [A-Za-z_][A-Za-z0-9_]*")
        _no_nul(f"--env {name}", value)
    for name in s.env_pass:
        if not _ENV_NAME.match(name):
            raise BadInput("--env-pass", f"{name!r} is not a variable name", "give the NAME of a variable")
        if name not in os.environ:
            raise BadInput("--env-pass", f"{name} is not set in this environment", f"export {name} first")

    if s.output_dir is not None:
        _one_line("--output-dir", s.output_dir, "path")
        # Slurm reads a backslash in --output as "no %-patterns" and strips it (slurmd
        # fname.c remove_path_slashes): slurm-%j.out would be written literally.
        if "\\" in s.output_dir:
            raise BadInput("--output-dir", f"{s.output_dir!r} contains a backslash, which Slurm's "
                           "--output takes as an escape", "use a directory without backslashes")
        s.output_dir = os.path.abspath(os.path.expanduser(s.output_dir))
        # Slurm expands %j, %x, %A ... in --output; the template doubles a literal %.
        if _nbytes(s.output_dir) + len("/slurm-%A_%a.out") > PATH_MAX:
            raise BadInput("--output-dir", "is too long for Slurm's --output (4095 bytes)",
                           "use a shorter path")
    if s.chdir is not None:
        _one_line("--chdir", s.chdir, "directory")
        if not os.path.isdir(s.chdir):
            raise BadInput("--chdir", f"{s.chdir} is not a directory", "give an existing directory")
        s.chdir = os.path.abspath(s.chdir)

    if s.array is not None:
        parse_array(s.array)
    for dep in s.after:
        jid, _, state = dep.partition(":")
        if not _JOBID.match(jid) or (state and state not in AFTER_STATES):
            raise BadInput("--after", f"{dep!r} is not JOBID[:STATE]",
                           f"use e.g. --after 1234 or --after 1234:any (states: {', '.join(AFTER_STATES)})")

    if s.signal not in SIGNALS:
        raise BadInput("--signal", f"{s.signal!r} is not supported", f"use one of {', '.join(SIGNALS)}")
    if s.signal_handler not in SIGNAL_HANDLERS:
        raise BadInput("--signal-handler", f"{s.signal_handler!r} is not supported",
                       "use hpcjobs (hpcjobs.preempted() and the batch script's requeue) or program "
                       "(the program's own handler, e.g. Lightning's auto-requeue)")
    _sbatch_extras(s, part.name, avail)
    if not 1 <= s.signal_seconds <= 65535:
        raise BadInput("--signal-seconds", f"must be between 1 and 65535, got {s.signal_seconds}",
                       "e.g. --signal-seconds 120")
    lo, hi = MONITOR_INTERVAL_RANGE
    if not lo <= s.monitor_interval <= hi:
        raise BadInput("--monitor-interval", f"must be between {lo:g} and {hi:g} seconds, got "
                       f"{s.monitor_interval:g}", f"e.g. --monitor-interval {MONITOR_INTERVAL:g}")
    limit = time_seconds(s.time)
    if limit is not None and s.signal_seconds >= limit:
        # Slurm would send the warning at once (its first check, ~30 s in).
        if s.signal_seconds == DEFAULT_SIGNAL_SECONDS:
            s.signal_seconds = max(1, limit // 2)  # the default warning fits a short job
        else:
            raise BadInput("--signal-seconds", f"{s.signal_seconds} s is not shorter than the time "
                           f"limit {s.time} ({limit} s): the warning would come at once",
                           f"use --signal-seconds {max(1, limit // 2)} or a longer --time")
    _hang_timeout(s, cluster, limit)
    _preflight(s, cluster)
    _retry(s)
    return s


def _hang_timeout(s: JobSpec, cluster: Cluster, limit: int | None) -> None:
    """--hang-timeout (else the profile's default) as seconds; 0 = no sentinel."""
    from hpcjobs.runners.sentinel import parse_duration  # the job side reads the same values

    given, label = s.hang_timeout, "--hang-timeout"
    if given is None:
        given, label = cluster.defaults.hang_timeout, "cluster profile: defaults.hang_timeout"
    try:
        s.hang_timeout = parse_duration(given)
    except ValueError as e:
        raise BadInput(label, str(e), "use e.g. --hang-timeout 30m (600, 90s, 15m, 2h; 0 or off: "
                       "no sentinel)") from None
    if limit is not None and s.hang_timeout >= limit and label == "--hang-timeout":
        raise BadInput("--hang-timeout", f"{s.hang_timeout} s is not shorter than the time limit "
                       f"{s.time} ({limit} s): the sentinel would never act",
                       "use a shorter --hang-timeout or a longer --time")


def check_time_limit(time: str, partition: str, max_time: str | None) -> None:
    """A time limit above the partition's MaxTime (or none at all: 0, UNLIMITED) is accepted by
    sbatch and then pends for ever (reason PartitionTimeLimit): refuse it here."""
    limit = None if max_time is None else time_seconds(max_time)
    if limit is None:
        return
    asked = time_seconds(time)
    if asked is None:
        raise BadInput("--time", f"{time} means no time limit, but partition {partition!r} allows "
                       f"at most {max_time} (MaxTime): the job would pend for ever",
                       f"use --time {max_time} or less")
    if asked > limit:
        raise BadInput("--time", f"{time} is above the MaxTime {max_time} of partition "
                       f"{partition!r}: the job would pend for ever (PartitionTimeLimit)",
                       f"use --time {max_time} or less")


def placeholder_gpus(cluster: Cluster) -> bool:
    """The cluster's GPUs are GRES without a device behind them: the sandbox's (gres.conf
    File=/dev/null; a profile with ``sandbox = true``, or a GPU model marked "(fake)")."""
    return cluster.sandbox or any(n.gpu is not None and "(fake)" in n.gpu.model for n in cluster.nodes)


def check_live(s: JobSpec, cluster_name: str, parts: list, nodes: list) -> None:
    """A validated spec against what the live Slurm says (slurm.partitions() and the nodes of
    the job's partition, slurm.nodes()): it overrules the profile where they differ. Refuses
    what sbatch would accept and then never run: an unknown or not-UP partition, a time or
    node count above its limits, GPUs, memory, features or GRES that no node has."""
    from hpcjobs.sbatch_options import constraint_features, gres, hosts, memory_mb

    part = next((p for p in parts if p.name == s.partition), None)
    if part is None:
        known = ", ".join(p.name for p in parts) or "(none)"
        raise BadInput("--partition", f"Slurm has no partition {s.partition!r} (the profile of "
                       f"cluster {cluster_name!r} names one)", f"use one of: {known}; and update "
                       "the profile (hpcjobs cluster show)")
    if part.state.upper() != "UP":
        up = ", ".join(p.name for p in parts if p.state.upper() == "UP") or "none"
        raise BadInput("--partition", f"partition {part.name!r} is {part.state}: jobs there do not "
                       "start until an administrator sets it UP", f"use an UP partition ({up})")
    check_time_limit(s.time, part.name, None if part.max_time.upper() in ("UNLIMITED", "INFINITE")
                     else part.max_time)
    excluded = set(hosts("--exclude", s.exclude)) if s.exclude else set()
    usable = [n for n in nodes if n.name not in excluded]
    total = part.total_nodes - len(excluded & {n.name for n in nodes})
    if s.nodes > total:
        raise BadInput("--nodes", f"{s.nodes} nodes asked but partition {part.name!r} has {total}"
                       + (" not excluded" if excluded else "") + " (Slurm's TotalNodes)",
                       f"use --nodes {total} or fewer")
    if part.max_nodes is not None and s.nodes > part.max_nodes:
        raise BadInput("--nodes", f"{s.nodes} nodes asked but partition {part.name!r} allows "
                       f"{part.max_nodes} per job (MaxNodes): the job would pend for ever",
                       f"use --nodes {part.max_nodes} or fewer")
    if not usable:
        return  # nothing known about the nodes: the partition's figures were all there was
    if s.nodelist:
        names = {n.name for n in nodes}
        outside = [h for h in hosts("--nodelist", s.nodelist) if h not in names]
        if outside:
            raise BadInput("--nodelist", f"{outside[0]!r} is not a node of partition {part.name!r} "
                           "in Slurm", f"name nodes of {part.nodes}")
    fits = usable
    if s.gpus_per_node:
        fits = [n for n in fits if n.gpus >= s.gpus_per_node]
        if len(fits) < s.nodes:
            most = max(n.gpus for n in usable)
            raise BadInput("--gpus-per-node", f"{s.gpus_per_node} GPUs per node asked but "
                           f"{len(fits)} node(s) of partition {part.name!r} have that many "
                           f"(Slurm's Gres; at most {most})",
                           f"use --gpus-per-node {most} or fewer, or fewer --nodes")
    if s.mem and memory_mb("--mem", s.mem):
        mb = memory_mb("--mem", s.mem)
        fits = [n for n in fits if n.memory_mb >= mb]
        if len(fits) < s.nodes:
            most = max(n.memory_mb for n in usable)
            raise BadInput("--mem", f"{s.mem} per node asked but {len(fits)} node(s) of partition "
                           f"{part.name!r} have that much (Slurm's RealMemory; at most {most} MB)",
                           f"use --mem {most}M or less")
    if s.mem_per_gpu and s.gpus_per_node:
        mb = memory_mb("--mem-per-gpu", s.mem_per_gpu) * s.gpus_per_node
        most = max(n.memory_mb for n in usable)
        if mb > most:
            raise BadInput("--mem-per-gpu", f"{s.mem_per_gpu} x {s.gpus_per_node} GPU(s) is more "
                           f"than the nodes of partition {part.name!r} have (RealMemory at most "
                           f"{most} MB)", f"use --mem-per-gpu {most // s.gpus_per_node}M or less")
    if s.constraint:
        have = {f for n in usable for f in n.features}
        for feat in constraint_features(s.constraint):
            if feat not in have:
                raise BadInput("--constraint", f"no node of partition {part.name!r} has feature "
                               f"{feat!r} (Slurm: \"Invalid feature specification\")",
                               f"use one of: {', '.join(sorted(have))}" if have else
                               "drop --constraint: its nodes have no features")
    if s.gres:
        have = {g for n in usable for g in n.gres}
        for g in gres(s.gres):
            if g.name not in have:
                raise BadInput("--gres", f"no node of partition {part.name!r} has GRES {g.name!r} "
                               "(Slurm: \"Invalid generic resource (gres) specification\")",
                               f"use one of: {', '.join(sorted(have))}" if have else "drop --gres")


def check_after(s: JobSpec, found: dict) -> None:
    """Each ``--after`` job against what Slurm (or the run record) says of it: ``found`` maps
    the id to its statuses (an array: its tasks). Slurm takes a dependency on a job it does not
    know as satisfied, so the job would start at once; one on a job that ended the wrong way
    is never satisfied (with --kill-on-invalid-dep=yes the new job is cancelled at once)."""
    for dep in s.after:
        jid, _, state = dep.partition(":")
        kind = AFTER_STATES[state or "ok"]
        sts = found.get(jid) or []
        if not sts:
            raise BadInput("--after", f"Slurm does not know job {jid} (not queued, running or "
                           "ended within MinJobAge, and not in accounting): it would count as "
                           "done and the job would start at once",
                           f"check the id (hpcjobs status {jid}), or drop --after")
        # afterok: one task that ended other than COMPLETED is enough; afternotok: all ended
        # and all COMPLETED.
        if kind == "afterok":
            bad = [st for st in sts if st.done and st.state != "COMPLETED"]
        elif kind == "afternotok":
            bad = sts if all(st.done and st.state == "COMPLETED" for st in sts) else []
        else:
            bad = []
        if bad:
            other = "any" if kind == "afterok" else "ok"
            raise BadInput("--after", f"job {jid} already ended {bad[0].state}, so {kind}:{jid} "
                           "can never be satisfied (Slurm would cancel the new job at once)",
                           f"use --after {jid}:{other}, or resubmit job {jid} first")


def _placement(s: JobSpec, cluster: Cluster, avail: list) -> list:
    """``--exclude`` and ``--nodelist`` against the partition's nodes; returns the nodes the
    job may still use (those not excluded)."""
    from hpcjobs.sbatch_options import hosts

    names = [n.name for n in avail]
    excluded: list[str] = []
    if s.exclude is not None:
        excluded = hosts("--exclude", s.exclude)
        unknown = [h for h in excluded if cluster.node(h) is None]
        if unknown:
            raise BadInput("--exclude", f"no node {unknown[0]!r} in cluster {cluster.name!r} "
                           "(Slurm: \"Invalid node name specified\")",
                           f"name nodes of partition {s.partition!r}: {_hostlist(names)}")
        avail = [n for n in avail if n.name not in excluded]
        if not avail:
            raise BadInput("--exclude", f"excludes every node of partition {s.partition!r}",
                           "exclude fewer nodes")
    if s.nodelist is not None:
        wanted = hosts("--nodelist", s.nodelist)
        outside = [h for h in wanted if h not in names]
        if outside:
            raise BadInput("--nodelist", f"{outside[0]!r} is not a node of partition "
                           f"{s.partition!r} of cluster {cluster.name!r}",
                           f"name nodes of {_hostlist(names)}")
        both = [h for h in wanted if h in excluded]
        if both:
            raise BadInput("--nodelist", f"{both[0]} is also in --exclude", "drop it from one")
        if s.nodes is not None and 0 < s.nodes < len(wanted):
            raise BadInput("--nodelist", f"names {len(wanted)} nodes but --nodes is {s.nodes} "
                           f"(Slurm: \"invalid number of nodes (-N {len(wanted)}-{s.nodes})\")",
                           f"use --nodes {len(wanted)} or name fewer nodes")
    return avail


def _hostlist(names: list[str]) -> str:
    import hostlist

    return hostlist.collect_hostlist(names) if names else "(none)"


def _gpus_from_gres(s: JobSpec) -> None:
    """A gpu item in ``--gres`` is the job's GPUs per node; it must agree with --gpus-per-node."""
    from hpcjobs.sbatch_options import gres

    if s.gres is None:
        return
    _one_line("--gres", s.gres, "GRES request")
    gpu = [g for g in gres(s.gres) if g.name == "gpu"]
    if len(gpu) > 1:
        raise BadInput("--gres", f"{s.gres!r} asks for gpu twice", "give one gpu item")
    if gpu:
        if not gpu[0].count.isdigit():
            raise BadInput("--gres", f"gpu count {gpu[0].count!r} is not a number", "e.g. gpu:1")
        n = int(gpu[0].count)
        if s.gpus_per_node is not None and s.gpus_per_node != n:
            raise BadInput("--gres", f"asks for {n} GPU(s) per node but --gpus-per-node is "
                           f"{s.gpus_per_node}", "give the GPUs once: --gpus-per-node N")
        s.gpus_per_node = n


# Slurm's own limit on a comment (slurmctld job_mgr.c _test_strlen; a longer one is refused
# with "Pathname of a file, directory or other parameter too long").
COMMENT_MAX = 1024


def _sbatch_extras(s: JobSpec, partition: str, avail: list) -> None:
    """Memory, features, reservation, mail, comment, begin/deadline and the pass-through
    --sbatch-arg (sbatch_options reads each form); ``avail``: the nodes the job may use."""
    from datetime import datetime

    from hpcjobs import sbatch_options as so

    node_mem = min((n.memory_mb for n in avail), default=0)
    if s.mem is not None and s.mem_per_gpu is not None:
        raise BadInput("--mem", "Slurm takes one of --mem and --mem-per-gpu", "give one of them")
    if s.mem is not None:
        _one_line("--mem", s.mem, "memory size")
        mb = so.memory_mb("--mem", s.mem)
        if node_mem and mb > node_mem:
            raise BadInput("--mem", f"{s.mem} per node is more than the {node_mem} MB (RealMemory) "
                           f"of partition {partition!r}'s nodes: the job could never start",
                           f"use --mem {node_mem}M or less (--mem 0: all of a node's memory)")
    if s.mem_per_gpu is not None:
        _one_line("--mem-per-gpu", s.mem_per_gpu, "memory size")
        mb = so.memory_mb("--mem-per-gpu", s.mem_per_gpu)
        if not s.gpus_per_node:
            raise BadInput("--mem-per-gpu", "the job asks for no GPU (Slurm: \"Requested "
                           "mem_per_tres=gres:gpu but did not request any GPU\")",
                           "add --gpus-per-node N, or use --mem")
        if mb < 1:
            raise BadInput("--mem-per-gpu", "must be at least 1M", "e.g. --mem-per-gpu 16G")
        if node_mem and mb * s.gpus_per_node > node_mem:
            raise BadInput("--mem-per-gpu", f"{s.mem_per_gpu} x {s.gpus_per_node} GPU(s) is more "
                           f"than the {node_mem} MB (RealMemory) of partition {partition!r}'s "
                           "nodes", f"use --mem-per-gpu {node_mem // s.gpus_per_node}M or less")
    if s.constraint is not None:
        _one_line("--constraint", s.constraint, "feature expression")
        so.constraint_features(s.constraint)
    if s.reservation is not None:
        _one_line("--reservation", s.reservation, "reservation name")
        so.name_list("--reservation", s.reservation, "reservation name")
    if s.mail_type is not None:
        _one_line("--mail-type", s.mail_type, "mail type list")
        s.mail_type = ",".join(so.mail_types(s.mail_type))
    if s.mail_user is not None:
        _one_line("--mail-user", s.mail_user, "address")
        if any(c.isspace() for c in s.mail_user) or "," in s.mail_user:
            raise BadInput("--mail-user", f"{s.mail_user!r} is not one address or user name",
                           "give one, e.g. --mail-user me@example.org")
        if s.mail_type is None:
            raise BadInput("--mail-user", "without --mail-type Slurm sends no mail (the default "
                           "type is NONE)", "add e.g. --mail-type END,FAIL")
    if s.comment is not None:
        _one_line("--comment", s.comment, "comment")
        if _nbytes(s.comment) > COMMENT_MAX:
            raise BadInput("--comment", f"is {_nbytes(s.comment)} bytes; Slurm takes at most "
                           f"{COMMENT_MAX}", "shorten it")
    now = datetime.now().replace(microsecond=0)
    begin = deadline = None
    if s.begin is not None:
        _one_line("--begin", s.begin, "time")
        begin = so.slurm_time("--begin", s.begin, now)
    if s.deadline is not None:
        _one_line("--deadline", s.deadline, "time")
        deadline = so.slurm_time("--deadline", s.deadline, now)
        start = max(begin or now, now)
        if deadline <= now:
            raise BadInput("--deadline", f"{s.deadline} ({deadline:%Y-%m-%dT%H:%M:%S}) has passed",
                           "give a time to come, e.g. --deadline now+1day")
        if begin is not None and deadline < begin:
            raise BadInput("--deadline", f"{deadline:%Y-%m-%dT%H:%M:%S} comes before --begin "
                           f"{begin:%Y-%m-%dT%H:%M:%S} (Slurm: \"Incompatible begin and deadline "
                           "time specification\")", "give a later --deadline or an earlier --begin")
        limit = time_seconds(s.time)
        room = int((deadline - start).total_seconds())
        if limit is not None and room < limit:
            fit = max(60, room // 60 * 60)
            raise BadInput("--deadline", f"leaves {_hms(room)} from the earliest start but --time "
                           f"is {s.time}: Slurm would remove the job (DEADLINE) before it could "
                           "end", f"give a later --deadline or --time {_hms(fit)} or less")
    seen = set()
    for arg in s.sbatch_args:
        name, _value = so.sbatch_arg(arg)
        if name in seen:
            raise BadInput("--sbatch-arg", f"--{name} is given twice (sbatch keeps the last)",
                           "give it once")
        seen.add(name)


def _hms(seconds: int) -> str:
    """A duration as Slurm's --time reads it (H:MM:SS; days as D-HH:MM:SS)."""
    d, rest = divmod(max(0, seconds), 86400)
    h, rest = divmod(rest, 3600)
    text = f"{h:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{d}-{text}" if d else text


def _retry(s: JobSpec) -> None:
    """--retry and the factors of its rules (hpcjobs/retry.py applies them)."""
    if not 0 <= s.retry <= RETRY_MAX:
        raise BadInput("--retry", f"must be between 0 and {RETRY_MAX}, got {s.retry}",
                       "e.g. --retry 3")
    lo, hi = RETRY_FACTOR_RANGE
    for name, value in (("--retry-time-factor", s.retry_time_factor),
                        ("--retry-mem-factor", s.retry_mem_factor)):
        if not lo <= value <= hi:
            raise BadInput(name, f"must be between {lo:g} and {hi:g}, got {value:g}",
                           f"e.g. {name} 2")
    if s.retry and s.array:
        raise BadInput("--retry", "not with --array: a failed array task would need a retry of "
                       "its own, which hpcjobs does not do", "drop --retry, or submit the failed "
                       "tasks again as an array of their own")


def _preflight(s: JobSpec, cluster: Cluster) -> None:
    """The preflight's options: the profile's default, and values the job script can take."""
    if s.preflight is None:
        s.preflight = cluster.defaults.preflight
    if s.on_bad_node not in ON_BAD_NODE:
        raise BadInput("--on-bad-node", f"{s.on_bad_node!r} is not one of {', '.join(ON_BAD_NODE)}",
                       "use fail (end the job) or exclude (requeue it without the bad node)")
    if s.fabric_check not in FABRIC_CHECKS:
        raise BadInput("--fabric-check", f"{s.fabric_check!r} is not one of {', '.join(FABRIC_CHECKS)}",
                       "use fail or warn")
    if not 0 <= s.bad_node_retries <= BAD_NODE_RETRIES_MAX:
        raise BadInput("--bad-node-retries", f"must be between 0 and {BAD_NODE_RETRIES_MAX}, got "
                       f"{s.bad_node_retries}", "e.g. --bad-node-retries 2")


def time_seconds(text: str) -> int | None:
    """Seconds of a Slurm --time value (None for no limit: UNLIMITED, INFINITE or 0).
    Forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:
        h, m, sec = (parts + [0, 0])[:3]
        return ((int(days) * 24 + h) * 60 + m) * 60 + sec
    if len(parts) == 1:
        seconds = parts[0] * 60
    elif len(parts) == 2:
        seconds = parts[0] * 60 + parts[1]
    else:
        seconds = (parts[0] * 60 + parts[1]) * 60 + parts[2]
    return seconds or None  # Slurm: a time limit of 0 means none


def dependency(spec: JobSpec) -> str | None:
    """The --dependency value for ``spec.after`` (all must hold)."""
    if not spec.after:
        return None
    parts = []
    for dep in spec.after:
        jid, _, state = dep.partition(":")
        parts.append(f"{AFTER_STATES[state or 'ok']}:{jid}")
    return ",".join(parts)
