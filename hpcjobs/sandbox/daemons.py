"""Starting, checking and stopping the sandbox's daemons.

Each Slurm daemon starts as ``nsenter --net=NS unshare --uts --mount --propagation slave sh -c
'hostname H; mount --bind HOSTS /etc/hosts; exec DAEMON -D ...'``: nsenter, unshare and sh all
exec, so the pid Popen returns is the daemon's own, recorded with its start time (a recycled
pid is never taken for ours). Not ``ip netns exec``: it remounts /sys, which hides
/sys/fs/cgroup, and slurmd dies with "Unable to initialize cgroup plugin".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hpcjobs.sandbox.layout import Layout

# Runs inside the new UTS + mount namespaces: $1 hostname, $2 hosts file, then the daemon.
# IPv6 off in the namespace (Slurm 22.05 speaks IPv4 only; no stray link-local addresses).
# Unlimited locked memory where the host allows it (it needs CAP_SYS_RESOURCE, which some
# containers lack), as docs/cluster-setup.md has slurmd run (LimitMEMLOCK=infinity): with
# PropagateResourceLimitsExcept=MEMLOCK, jobs get slurmd's limit, as on the cluster.
_PRELUDE = ('echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null; '
            'ulimit -l unlimited 2>/dev/null; '
            'hostname "$1" && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"')


@dataclass
class Daemon:
    name: str  # munged, slurmctld, slurmd-node1, ...
    pid: int
    start: int  # field 22 of /proc/PID/stat: tells a recycled pid apart
    log: str  # where its stdout/stderr went

    def alive(self) -> bool:
        """Running and still the process we started; a zombie (state Z) counts as dead."""
        st = _stat(self.pid)
        return st is not None and st[1] != "Z" and st[2] == self.start


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, start time) of a process, or None if it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return comm, fields[0], int(fields[19])


def _spawn(name: str, argv: list[str], log: Path, env: dict | None = None,
           user: str | None = None) -> Daemon:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                start_new_session=True, close_fds=True,
                                user=user, group=user, extra_groups=[] if user else None)
    st = _stat(proc.pid)
    # The Popen object is dropped on purpose: the daemon outlives this process and is reaped
    # by init; `down` finds it again by pid + start time.
    return Daemon(name, proc.pid, st[2] if st else 0, str(log))


def start_in_namespace(name: str, ns_path: str, hostname: str, hosts: Path, argv: list[str],
                       log: Path, env: dict) -> Daemon:
    cmd = ["nsenter", f"--net={ns_path}", "unshare", "--uts", "--mount", "--propagation",
           "slave", "sh", "-c", _PRELUDE, "sh", hostname, str(hosts), *argv]
    return _spawn(name, cmd, log, env=env)


# --- munge ----------------------------------------------------------------------------------

def munge_works() -> bool:
    """A credential made and decoded through the running munged's socket."""
    try:
        enc = subprocess.run(["munge", "-n"], capture_output=True, timeout=5)
        if enc.returncode != 0:
            return False
        dec = subprocess.run(["unmunge"], input=enc.stdout, capture_output=True, timeout=5)
        return dec.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_munged(lay: Layout) -> tuple[Daemon, list[str]]:
    """munged in the foreground as the munge user (as root it refuses the munge-owned key).

    Returns the daemon and the directories it had to create (removed again by ``down``).
    """
    import grp
    import pwd

    uid, gid = pwd.getpwnam("munge").pw_uid, grp.getgrnam("munge").gr_gid
    created = []
    for d in ("/run/munge", "/var/lib/munge", "/var/log/munge"):
        if not os.path.isdir(d):
            os.makedirs(d, mode=0o755 if d == "/run/munge" else 0o700)
            os.chown(d, uid, gid)
            created.append(d)
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        # Debian's postinst normally makes it; a machine that lost it gets a fresh one.
        subprocess.run(["mungekey", "--create"], check=True, user="munge", group="munge",
                       extra_groups=[], capture_output=True)
    d = _spawn("munged", ["munged", "--foreground"], lay.log / "munged.log", user="munge")
    return d, created


# --- records and stopping -------------------------------------------------------------------

def save(lay: Layout, daemons: list[Daemon], extra: dict | None = None) -> None:
    data = {"daemons": [asdict(d) for d in daemons], **(extra or {})}
    tmp = lay.daemons.with_name(".daemons.json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(lay.daemons)


def load(lay: Layout) -> tuple[list[Daemon], dict]:
    try:
        data = json.loads(lay.daemons.read_text())
    except (OSError, ValueError):
        return [], {}
    daemons = [Daemon(**d) for d in data.pop("daemons", [])]
    return daemons, data


def stop_pids(pids: list[int], timeout: float = 5.0) -> None:
    """SIGTERM, wait up to ``timeout`` (zombies count as gone), then SIGKILL."""
    starts = {p: st[2] for p in pids if (st := _stat(p))}
    for p in starts:
        _kill(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    left = dict(starts)
    while left and time.monotonic() < deadline:
        left = {p: s for p, s in left.items() if Daemon("", p, s, "").alive()}
        if left:
            time.sleep(0.02)
    for p in left:
        _kill(p, signal.SIGKILL)
    # SIGKILL is not instant either; a namespace lives on while a process is in it.
    deadline = time.monotonic() + 2.0
    while left and time.monotonic() < deadline:
        left = {p: s for p, s in left.items() if Daemon("", p, s, "").alive()}
        if left:
            time.sleep(0.02)


def stop(daemons: list[Daemon], timeout: float = 5.0) -> None:
    stop_pids([d.pid for d in daemons if d.alive()], timeout)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def tail(path: str | Path, lines: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
