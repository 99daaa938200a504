"""The sandbox's network: one namespace per daemon host, veth pairs to a bridge.

Every name starts with ``hpcjobs-`` so that leftovers of a crashed sandbox can be found and
removed without touching anything else. The root namespace has 10.200.0.100 on the bridge
(clients reach the daemons through it); the namespaces have no default route, so nothing leaves
the machine. Commands go through ``ip -batch`` to keep bring-up to a few processes.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path

from hpcjobs.sandbox import config

PREFIX = "hpcjobs-"
BRIDGE = "hpcjobs-br0"
CONTROLLER_NS = "hpcjobs-ctl"
NETNS_DIR = Path("/run/netns")


def node_ns(k: int) -> str:
    return f"hpcjobs-node{k}"


def _veth(ns: str) -> str:
    # Root-side end; interface names are at most 15 characters ("hpcjobs-n99").
    return "hpcjobs-ctl" if ns == CONTROLLER_NS else "hpcjobs-n" + ns.removeprefix("hpcjobs-node")


def ns_path(ns: str) -> str:
    return str(NETNS_DIR / ns)


def _ip(args: list[str], batch: list[str] | None = None) -> None:
    inp = "\n".join(batch) + "\n" if batch is not None else None
    cmd = ["ip", *args, *(["-batch", "-"] if batch is not None else [])]
    proc = subprocess.run(cmd, input=inp, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.stdout.strip()}")


def create(n: int) -> None:
    """Bridge, N+1 namespaces, veth pairs and addresses."""
    hosts = [(CONTROLLER_NS, config.CONTROLLER_ADDRESS)] + \
        [(node_ns(k), f"{config.PREFIX}{k}") for k in range(1, n + 1)]
    root = [f"link add {BRIDGE} type bridge",
            f"addr add {config.BRIDGE_ADDRESS}/24 dev {BRIDGE}",
            f"link set {BRIDGE} up"]
    for ns, _ in hosts:
        v = _veth(ns)
        root += [f"netns add {ns}",
                 f"link add {v} type veth peer name {config.INTERFACE} netns {ns}",
                 f"link set {v} master {BRIDGE} up"]
    _ip([], root)
    for ns, addr in hosts:
        _ip(["-n", ns], [f"addr add {addr}/24 dev {config.INTERFACE}",
                         f"link set {config.INTERFACE} up", "link set lo up"])


def namespaces() -> list[str]:
    """The sandbox's namespaces that exist now (including leftovers)."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(PREFIX))
    except FileNotFoundError:
        return []


def links() -> list[str]:
    """The sandbox's interfaces in the root namespace (bridge and veth ends)."""
    proc = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True)
    try:
        data = json.loads(proc.stdout or "[]")
    except ValueError:
        return []
    return [d["ifname"] for d in data if d.get("ifname", "").startswith(PREFIX)]


def pids_in(ns_names: list[str]) -> list[int]:
    """Processes whose network namespace is one of ``ns_names`` (daemons, slurmstepd, tasks)."""
    inodes = set()
    for ns in ns_names:
        try:
            inodes.add(os.stat(ns_path(ns)).st_ino)
        except OSError:
            pass
    if not inodes:
        return []
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino in inodes:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def destroy() -> None:
    """Remove every sandbox namespace and interface (the processes in them must be gone)."""
    batch = [f"netns del {ns}" for ns in namespaces()]
    batch += [f"link del {name}" for name in links()]
    # One by one, tolerating "not found": a veth end vanishes with its namespace.
    for line in batch:
        subprocess.run(["ip", *line.split()], capture_output=True)


def subnet_users() -> list[str]:
    """Routes in the root namespace that overlap the sandbox's subnet and are not its own."""
    proc = subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"],
                          capture_output=True, text=True)
    try:
        routes = json.loads(proc.stdout or "[]")
    except ValueError:
        return []
    mine = ipaddress.ip_network(config.SUBNET)
    users = []
    for r in routes:
        dst = r.get("dst", "")
        if dst in ("", "default") or r.get("dev", "").startswith(PREFIX):
            continue
        try:
            net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        # A broader route (a VPN's 10.0.0.0/8) is only shadowed by the bridge's /24; an equal
        # or narrower one (an address or a /24 in use) would be hijacked: refuse those.
        if net.overlaps(mine) and net.prefixlen >= mine.prefixlen:
            users.append(f"{dst} dev {r.get('dev', '?')}")
    return users
