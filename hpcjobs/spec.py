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
# --array: "0-15", "0-15:4", "1,3,5-7", with an optional "%N" throttle.
_ARRAY_ITEM = r"\d+(-\d+(:\d+)?)?"
_ARRAY = re.compile(rf"^{_ARRAY_ITEM}(,{_ARRAY_ITEM})*(%\d+)?$")
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
    # The hang sentinel (docs/runtime-checks.md): a duration (30m, 600); None: the profile's
    # defaults.hang_timeout; validate makes it seconds, 0 = off.
    hang_timeout: int | str | None = None
    # The preflight step (docs/runtime-checks.md): None: the profile's defaults.preflight.
    preflight: bool | None = None
    on_bad_node: str = "fail"  # fail | exclude: see ON_BAD_NODE
    fabric_check: str = "fail"  # fail | warn: NCCL on sockets where the profile says IB/RoCE
    bad_node_retries: int = 2  # requeues with the bad nodes excluded (on_bad_node=exclude)
    options: dict = field(default_factory=dict)  # kind-specific options

    def to_dict(self) -> dict:
        return asdict(self)

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


def validate(spec: JobSpec, cluster: Cluster) -> JobSpec:
    """Check what every kind shares and fill cluster defaults; returns a completed copy."""
    s = JobSpec.from_dict(spec.to_dict())
    for i, arg in enumerate(s.program):
        _no_nul(f"program argument {i + 1}", arg)

    part = cluster.partition(s.partition)  # raises naming --partition
    s.partition = part.name
    avail = cluster.partition_nodes(part.name)

    if s.nodes is None:
        s.nodes = len(avail)
    if s.nodes < 1:
        raise BadInput("--nodes", f"must be at least 1, got {s.nodes}", "use --nodes 1 or more")
    if s.nodes > len(avail):
        raise BadInput("--nodes", f"{s.nodes} nodes asked but partition {part.name!r} of cluster "
                       f"{cluster.name!r} has {len(avail)}", f"use --nodes {len(avail)} or fewer")

    node_gpus = min((n.gpus for n in avail), default=0)
    if s.gpus_per_node is None:
        s.gpus_per_node = node_gpus
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

    if s.array is not None and not _ARRAY.match(s.array):
        raise BadInput("--array", f"{s.array!r} is not a Slurm array spec",
                       "use e.g. 0-15, 0-15:4, 1,3,5 or 0-99%10")
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
    if not 1 <= s.signal_seconds <= 65535:
        raise BadInput("--signal-seconds", f"must be between 1 and 65535, got {s.signal_seconds}",
                       "e.g. --signal-seconds 120")
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
