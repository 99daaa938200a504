"""Bring the sandbox up, check it, take it down.

``up`` is idempotent: a healthy sandbox is left alone; anything half-there (a crash, a machine
whose processes were killed, leftovers of another run) is removed first. ``down`` stops the
processes the sandbox started (recorded with their start times in its state directory) and
whatever runs inside its own network namespaces (slurmstepd and job tasks), then removes the
namespaces, the bridge, the generated files and the client config link: nothing is left.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hpcjobs.errors import BadInput, HpcjobsError
from hpcjobs.sandbox import accounting as accounting_mod
from hpcjobs.sandbox import config, daemons, netns
from hpcjobs.sandbox.layout import CLIENT_CONF, Layout, layout

REQUIRED = {"slurmctld": "slurmctld", "slurmd": "slurmd", "sinfo": "slurm-client",
            "munged": "munge", "ip": "iproute2", "nsenter": "util-linux", "unshare": "util-linux"}
# The shipped MinJobAge (hpcjobs/slurmconf.py): how long a finished job stays in squeue and
# scontrol when there is no accounting.
MIN_JOB_AGE_S = 600
CONTROLLER_WAIT_S = 20.0
NODES_WAIT_S = 40.0
# "planned" (Slurm >= 21.08): idle, but held by the backfill scheduler for a pending job
# (seen on 24.11 while a test's job waited for all nodes).
HEALTHY_STATES = ("idle", "mixed", "allocated", "completing", "planned")


class SandboxError(HpcjobsError):
    """The sandbox did not come up; the daemons' log tails were printed."""

    exit_code = 1


@dataclass
class Health:
    up: bool
    nodes: int = 0
    accounting: bool = False
    problems: list[str] = field(default_factory=list)
    sinfo: str = ""


def client_env(lay: Layout) -> dict:
    return {**os.environ, "SLURM_CONF": str(lay.conf)}


# --- checks ---------------------------------------------------------------------------------

def _preflight(accounting: bool = False) -> None:
    if os.geteuid() != 0:
        raise BadInput("sandbox", "needs root (namespaces, a bridge, daemons)",
                       "run it as root, e.g. sudo .venv/bin/hpcjobs sandbox up")
    required = {**REQUIRED, **(accounting_mod.REQUIRED if accounting else {})}
    missing = sorted({pkg for exe, pkg in required.items() if not shutil.which(exe)
                      and not os.path.exists(f"/usr/sbin/{exe}")})
    if missing:
        raise BadInput("sandbox", f"missing Debian packages: {' '.join(missing)}",
                       f"run scripts/install{' --accounting' if accounting else ''} "
                       "(or apt-get install them)")


def _check_subnet() -> None:
    users = netns.subnet_users()
    if users:
        raise BadInput(f"sandbox subnet {config.SUBNET}", f"already routed by {users[0]}",
                       "free that subnet (ip route / ip addr) before `hpcjobs sandbox up`")


def _client_conf_state(lay: Layout) -> str:
    """'ours', 'free' (absent or a dangling link of an old sandbox) or 'foreign'."""
    c = CLIENT_CONF
    if c.is_symlink():
        target = os.readlink(c)
        if target == str(lay.conf):
            return "ours"
        return "free" if not os.path.exists(c) else "foreign"
    return "foreign" if c.exists() else "free"


def health(lay: Layout | None = None, settle: float = 2.0) -> Health:
    """Up = started, every recorded daemon alive (a zombie is dead), every namespace there and
    every node in a usable state. A Slurm-level problem (a busy controller, a node not
    answering yet) is looked at again for ``settle`` seconds before it counts: ``up`` restarts
    an unhealthy sandbox, and must not do so over a hiccup."""
    lay = lay or layout()
    try:
        meta = json.loads(lay.meta.read_text())
    except (OSError, ValueError):
        return Health(False, problems=[f"not started ({lay.meta} is missing)"])
    h = Health(True, nodes=int(meta.get("nodes", 0)), accounting=bool(meta.get("accounting")))
    recorded, _ = daemons.load(lay)
    for d in recorded:
        if not d.alive():
            h.problems.append(f"{d.name} (pid {d.pid}) is not running; see {d.log}")
    missing_ns = {netns.CONTROLLER_NS, *map(netns.node_ns, range(1, h.nodes + 1))} - \
        set(netns.namespaces())
    if missing_ns:
        h.problems.append(f"namespaces missing: {' '.join(sorted(missing_ns))}")
    deadline = time.monotonic() + settle
    while not h.problems:
        problems, h.sinfo = _slurm_view(lay, h.nodes)
        if not problems or time.monotonic() > deadline:
            h.problems = problems
            break
        time.sleep(0.5)
    h.up = not h.problems
    return h


def notes(h: Health, lay: Layout | None = None) -> list[str]:
    """What a user of the running sandbox must know beyond its nodes (``sandbox status``):
    whether ``sacct`` answers, and the address at which jobs reach this host."""
    lay = lay or layout()
    if h.accounting:
        acct = (f"accounting: on (slurmdbd on {config.CONTROLLER_ADDRESS}:6819, MariaDB in the "
                "controller's namespace): sacct answers, as on a cluster with a database")
    else:
        acct = ("accounting: off, as in the cluster's shipped slurm.conf: sacct knows no job, "
                "so clients that read job state from sacct (submitit, for one) see every job "
                "as UNKNOWN; hpcjobs, squeue and `scontrol show job` work (a finished job "
                f"stays there {MIN_JOB_AGE_S} s), and {lay.log / 'jobcomp.txt'} keeps every "
                "finished job. For sacct: scripts/install --accounting, then "
                "hpcjobs sandbox down && hpcjobs sandbox up --accounting")
    host = (f"this host, seen from jobs: {config.BRIDGE_ADDRESS} (bridge {netns.BRIDGE}); a "
            "service that jobs must reach (a dask scheduler, a Ray head) listens there or on "
            "0.0.0.0: 127.0.0.1 in a job is the node's own loopback")
    return [acct, host]


def _slurm_view(lay: Layout, nodes: int) -> tuple[list[str], str]:
    """Problems Slurm reports, and its node table (sinfo)."""
    try:
        proc = subprocess.run(["sinfo", "-N", "-o", "%N %P %T %G %c %m"], capture_output=True,
                              text=True, env=client_env(lay), timeout=30)
    except subprocess.TimeoutExpired:
        return ["sinfo: no answer within 30 s"], ""
    if proc.returncode != 0:
        return [f"sinfo: {proc.stderr.strip()}"], ""
    states = {}
    for line in proc.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            states[parts[0]] = parts[2]
    problems = [f"{n} is {st}" for n, st in sorted(states.items()) if not _healthy_state(st)]
    if len(states) != nodes:
        problems.append(f"{len(states)} nodes known to Slurm, expected {nodes}")
    return problems, proc.stdout.rstrip()


def _healthy_state(state: str) -> bool:
    s = state.lower()
    return not s.endswith("*") and s.rstrip("+~#!%$@^-") in HEALTHY_STATES


def _node_states(lay: Layout) -> dict[str, str]:
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True,
                          env=client_env(lay), timeout=30)
    states: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def leftovers(lay: Layout) -> list[str]:
    """What a previous sandbox left behind (empty when the machine is clean)."""
    found = []
    if lay.root.exists():
        found.append(str(lay.root))
    found += [f"netns {ns}" for ns in netns.namespaces()]
    found += [f"link {ln}" for ln in netns.links()]
    if CLIENT_CONF.is_symlink() and _client_conf_state(lay) != "foreign":
        found.append(str(CLIENT_CONF))
    return found


# --- up -------------------------------------------------------------------------------------

@contextmanager
def _locked(lay: Layout):
    """One up/down at a time (flock on the state directory's parent: leaves no file)."""
    parent = lay.root.parent
    parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def up(nodes: int | None = None, log=print, accounting: bool = False) -> Health:
    """Start the sandbox with ``nodes`` nodes (default 3), with MariaDB + slurmdbd if
    ``accounting``; returns its health."""
    if nodes is not None and not 1 <= nodes <= config.MAX_NODES:
        raise BadInput("--nodes", f"must be 1..{config.MAX_NODES}, got {nodes}",
                       f"the nodes are 10.200.0.1..{config.MAX_NODES}")
    _preflight(accounting)
    lay = layout()
    with _locked(lay):
        h = health(lay, settle=10.0)
        if h.up:
            if nodes is not None and nodes != h.nodes:
                raise BadInput("--nodes", f"the sandbox is already up with {h.nodes} nodes",
                               f"run `hpcjobs sandbox down` first to start {nodes}")
            if accounting and not h.accounting:
                raise BadInput("--accounting", "the sandbox is already up without accounting",
                               "run `hpcjobs sandbox down` first")
            log(f"sandbox already up: {h.nodes} nodes, healthy")
            return h
        left = leftovers(lay)
        if left:
            log(f"sandbox: cleaning up a half-up sandbox ({', '.join(left[:4])}"
                f"{', ...' if len(left) > 4 else ''})")
            _teardown(lay)
        _check_subnet()
        if _client_conf_state(lay) == "foreign":
            raise BadInput(str(CLIENT_CONF), "exists and is not the sandbox's",
                           "the sandbox's clients read that path; move the file away or run the "
                           "sandbox on a machine that is not a Slurm client")
        n = nodes or config.DEFAULT_NODES
        t0 = time.monotonic()
        try:
            _start(lay, n, accounting)
        except BaseException as err:
            tails = _log_tails(lay)
            _teardown(lay)
            if isinstance(err, KeyboardInterrupt):
                raise
            print(tails, file=sys.stderr)
            raise SandboxError(f"sandbox did not come up: {err}") from None
        took = time.monotonic() - t0
        major, minor = config.slurm_version()
        meta = {"nodes": n, "accounting": accounting, "slurm_version": f"{major}.{minor:02d}",
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "bringup_s": round(took, 3)}
        _atomic(lay.meta, json.dumps(meta, indent=2) + "\n")
        log(f"sandbox up: {n} nodes node[1-{n}] idle after {took:.2f} s "
            f"(Slurm {meta['slurm_version']}{', accounting on' if accounting else ''}); "
            f"profile {lay.profile}; stop it with `hpcjobs sandbox down`")
        return health(lay)


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _prepare_files(lay: Layout, n: int, version: tuple[int, int], accounting: bool) -> None:
    import pwd

    slurm = pwd.getpwnam("slurm")
    lay.root.mkdir(mode=0o755, parents=True)
    os.chmod(lay.root, 0o755)
    for d in (lay.etc, lay.spool, lay.tmp):
        d.mkdir(mode=0o755)
    # slurmctld runs as SlurmUser=slurm: it writes its state, log, pid and jobcomp file.
    for d in (lay.log, lay.pid, lay.ctld):
        d.mkdir(mode=0o755)
        os.chown(d, slurm.pw_uid, slurm.pw_gid)
    for name in config.node_names(n):
        (lay.spool / name).mkdir(mode=0o755)  # slurmd does not create its spool dir
        (lay.tmp / name).mkdir()
        os.chmod(lay.tmp / name, 0o1777)  # TmpFS: every user's jobs write there
    for fname, text in config.generate(lay, n, version, accounting).items():
        (lay.etc / fname).write_text(text)
    lay.hosts.write_text(config.hosts_file(n))
    # Slurm's clients in the root namespace (sbatch, srun, sinfo, hpcjobs) read this path.
    CLIENT_CONF.parent.mkdir(parents=True, exist_ok=True)
    if CLIENT_CONF.is_symlink():
        CLIENT_CONF.unlink()
    CLIENT_CONF.symlink_to(lay.conf)


def _start(lay: Layout, n: int, accounting: bool = False) -> None:
    version = config.slurm_version()
    _prepare_files(lay, n, version, accounting)
    started: list[daemons.Daemon] = []
    extra: dict = {}

    def record():
        daemons.save(lay, started, extra)

    netns.create(n)
    if not daemons.munge_works():
        munged, created = daemons.start_munged(lay)
        started.append(munged)
        extra["munge_dirs"] = created
        record()
        _wait(lambda: daemons.munge_works(), 10.0, "munged to answer", started)
    env = client_env(lay)
    if accounting:
        accounting_mod.start(lay, env, started, record,
                             lambda cond, timeout, what: _wait(cond, timeout, what, started))
    started.append(daemons.start_in_namespace(
        "slurmctld", netns.ns_path(netns.CONTROLLER_NS), config.CONTROLLER, lay.hosts,
        ["slurmctld", "-D"], lay.log / "slurmctld.out", env))
    record()
    _wait(lambda: _ping(lay), CONTROLLER_WAIT_S, "slurmctld to answer `scontrol ping`", started)
    for k, name in enumerate(config.node_names(n), 1):
        started.append(daemons.start_in_namespace(
            f"slurmd-{name}", netns.ns_path(netns.node_ns(k)), name, lay.hosts,
            ["slurmd", "-D", "-N", name], lay.log / f"slurmd-{name}.out", env))
    record()
    names = set(config.node_names(n))

    def all_idle() -> bool:
        states = _node_states(lay)
        return set(states) == names and all(s == "idle" for s in states.values())

    _wait(all_idle, NODES_WAIT_S, f"{n} nodes to be idle", started)
    # Last: its presence makes hpcjobs commands use the sandbox.
    _atomic(lay.profile, config.profile_toml(n))


def _ping(lay: Layout) -> bool:
    # Not a bare TCP connect: slurmctld logs an error for every connection that sends nothing.
    proc = subprocess.run(["scontrol", "ping"], capture_output=True, text=True,
                          env=client_env(lay), timeout=30)
    return proc.returncode == 0 and " is UP" in proc.stdout


def _wait(cond, timeout: float, what: str, started: list[daemons.Daemon]) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if cond():
            return
        dead = [d.name for d in started if not d.alive()]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def _log_tails(lay: Layout, lines: int = 15) -> str:
    out = []
    if not lay.log.is_dir():
        return ""
    for p in sorted(lay.log.iterdir()):
        if p.name == "jobcomp.txt":
            continue
        t = daemons.tail(p, lines)
        if t.strip():
            out.append(f"----- {p.name} (last {lines} lines) -----\n{t}")
    return "\n".join(out)


# --- down -----------------------------------------------------------------------------------

def down(log=print) -> bool:
    """Stop and remove everything; returns False if there was nothing to remove."""
    if os.geteuid() != 0:
        raise BadInput("sandbox", "needs root", "run it as root")
    lay = layout()
    with _locked(lay):
        left = leftovers(lay)
        if not left:
            log("sandbox is not up; nothing to remove")
            return False
        t0 = time.monotonic()
        _teardown(lay)
        log(f"sandbox down: daemons stopped, namespaces, bridge and {lay.root} removed "
            f"({time.monotonic() - t0:.2f} s)")
        return True


def _teardown(lay: Layout) -> None:
    recorded, extra = daemons.load(lay)
    # Slurm first (slurmd before slurmctld so that no node is marked down, then slurmdbd and
    # its database, one at a time), munged last.
    slurm = [d for d in recorded if d.name != "munged"]
    last = ("slurmctld", "slurmdbd", "mariadbd")
    for group in ([d for d in slurm if d.name not in last],
                  *([d for d in slurm if d.name == name] for name in last)):
        daemons.stop(group)
    # Whatever still runs inside the sandbox's namespaces: slurmstepd and job tasks.
    daemons.stop_pids(netns.pids_in(netns.namespaces()), timeout=3.0)
    netns.destroy()
    munged = [d for d in recorded if d.name == "munged"]
    if munged:
        daemons.stop(munged)
        for d in extra.get("munge_dirs", []):
            shutil.rmtree(d, ignore_errors=True)
    if CLIENT_CONF.is_symlink() and _client_conf_state(lay) != "foreign":
        CLIENT_CONF.unlink()
    shutil.rmtree(lay.root, ignore_errors=True)
