"""The cluster profile: what the cluster has, loaded from TOML and validated on load.

Everything that renders or checks a job asks this model, never a hard-coded node count.
Lookup order (first hit wins): ``--cluster FILE``, ``$HPCJOBS_CLUSTER``, the running sandbox's
profile, ``$XDG_CONFIG_HOME/hpcjobs/cluster.toml`` (default ``~/.config``), the built-in profile.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path

from hpcjobs.errors import BadInput

# Where `hpcjobs sandbox up` writes the profile of the running sandbox (hosts node1..N).
SANDBOX_PROFILE = Path(os.environ.get("HPCJOBS_SANDBOX_STATE", "/run/hpcjobs-sandbox")) / "cluster.toml"

FABRIC_KINDS = ("infiniband", "roce", "ethernet")


@dataclass(frozen=True)
class Gpu:
    type: str  # the GRES type in slurm.conf (Gres=gpu:<type>:<count>)
    model: str
    count: int
    memory_gb: float
    compute_capability: str  # "7.0"

    @property
    def cc(self) -> tuple[int, int]:
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)

    @property
    def bf16(self) -> bool:
        """bf16 needs Ampere (8.0) or newer; Volta (7.0) and Turing (7.5) have none."""
        return self.cc >= (8, 0)


@dataclass(frozen=True)
class Node:
    name: str
    address: str | None  # the node's address on the fast network (IPoIB), if any
    cpus: int
    memory_mb: int
    gpu: Gpu | None = None

    @property
    def gpus(self) -> int:
        return self.gpu.count if self.gpu else 0


@dataclass(frozen=True)
class Fabric:
    kind: str
    device: str | None
    port: int
    interface: str | None
    rate_gbps: float

    @property
    def rate_gbytes(self) -> float:
        return self.rate_gbps / 8.0


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: tuple[str, ...]
    default: bool = False
    default_time: str | None = None
    max_time: str | None = None


@dataclass(frozen=True)
class Defaults:
    partition: str | None = None
    time: str = "01:00:00"
    hang_timeout: str | int | None = None  # the hang sentinel's default (e.g. "30m"); None: off
    preflight: bool = False  # check every node before the program (hpcjobs.runners.preflight)


@dataclass(frozen=True)
class SlurmSite:
    controller: str
    controller_address: str = ""


@dataclass(frozen=True)
class Cluster:
    name: str
    nodes: tuple[Node, ...]
    fabric: Fabric
    partitions: tuple[Partition, ...]
    defaults: Defaults
    slurm: SlurmSite
    source: str = "built-in"
    sandbox: bool = False
    _by_name: dict = field(default_factory=dict, repr=False, compare=False)

    def node(self, name: str) -> Node | None:
        if not self._by_name:
            self._by_name.update({n.name: n for n in self.nodes})
        return self._by_name.get(name)

    def partition(self, name: str | None) -> Partition:
        """The named partition, or the default one when ``name`` is None."""
        if name is None:
            name = self.defaults.partition
        for p in self.partitions:
            if p.name == name or (name is None and p.default):
                return p
        known = ", ".join(p.name for p in self.partitions)
        raise BadInput("--partition", f"no partition {name!r} in cluster {self.name!r}",
                       f"use one of: {known}")

    def partition_nodes(self, name: str | None) -> list[Node]:
        return [n for n in (self.node(x) for x in self.partition(name).nodes) if n]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("_by_name", None)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


class ProfileError(BadInput):
    """A profile key is missing or malformed; names the key and the file."""

    def __init__(self, source: str, key: str, problem: str, fix: str | None = None):
        super().__init__(f"cluster profile {source}: {key}", problem, fix)


def _expand(hl: str) -> list[str]:
    import hostlist  # keeps Slurm's order (expand_hostlist sort=False); ClusterShell's NodeSet sorts

    try:
        return hostlist.expand_hostlist(hl)
    except hostlist.BadHostlist as e:
        raise ValueError(f"bad host list {hl!r}: {e}") from None


class _Reader:
    """Typed access to one TOML table; every error names the full key and the file."""

    def __init__(self, data: dict, source: str, prefix: str = ""):
        self.data, self.source, self.prefix = data, source, prefix

    def err(self, key: str, problem: str, fix: str | None = None) -> ProfileError:
        return ProfileError(self.source, self.prefix + key, problem, fix)

    def get(self, key: str, typ, default=..., choices=None):
        if key not in self.data:
            if default is ...:
                raise self.err(key, "missing", f"add `{key} = ...`")
            return default
        value = self.data[key]
        types = typ if isinstance(typ, tuple) else (typ,)
        if isinstance(value, bool) and bool not in types:
            raise self.err(key, f"expected {types[0].__name__}, got {value!r}")
        if not isinstance(value, types):
            raise self.err(key, f"expected {types[0].__name__}, got {type(value).__name__} {value!r}")
        if choices and value not in choices:
            raise self.err(key, f"{value!r} is not one of {', '.join(choices)}")
        if typ in (int, float) and value < 0:
            raise self.err(key, f"must not be negative, got {value}")
        return value

    def table(self, key: str, required: bool = True) -> _Reader | None:
        if key not in self.data:
            if required:
                raise self.err(key, "missing table", f"add a [{self.prefix}{key}] table")
            return None
        value = self.data[key]
        if not isinstance(value, dict):
            raise self.err(key, "expected a table")
        return _Reader(value, self.source, f"{self.prefix}{key}.")

    def tables(self, key: str) -> list[_Reader]:
        value = self.data.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
            raise self.err(key, f"expected one or more [[{key}]] tables",
                           f"add a [[{key}]] table (see `hpcjobs cluster show` for the format)")
        return [_Reader(v, self.source, f"{self.prefix}{key}[{i}].") for i, v in enumerate(value)]

    def unknown(self, known: set[str]) -> None:
        extra = sorted(set(self.data) - known)
        if extra:
            raise self.err(extra[0], "unknown key", f"known keys here: {', '.join(sorted(known))}")


_CC = re.compile(r"^\d+\.\d+$")


def _parse_gpu(r: _Reader) -> Gpu:
    r.unknown({"type", "model", "count", "memory_gb", "compute_capability"})
    cc = r.get("compute_capability", (str, float))
    cc = str(cc)
    if not _CC.match(cc):
        raise r.err("compute_capability", f"expected a string like \"7.0\", got {cc!r}")
    gpu = Gpu(
        type=r.get("type", str),
        model=r.get("model", str, ""),
        count=r.get("count", int, 1),
        memory_gb=float(r.get("memory_gb", (int, float))),
        compute_capability=cc,
    )
    if gpu.count < 1:
        raise r.err("count", "must be at least 1", "drop the [nodes.gpu] table for nodes without GPUs")
    return gpu


def parse_profile(data: dict, source: str) -> Cluster:
    """Build a :class:`Cluster` from TOML data; raises :class:`ProfileError` naming the key."""
    r = _Reader(data, source)
    r.unknown({"name", "slurm", "fabric", "defaults", "partitions", "nodes", "sandbox"})
    name = r.get("name", str)

    nodes: list[Node] = []
    for nr in r.tables("nodes"):
        nr.unknown({"names", "name", "addresses", "address", "cpus", "memory_mb", "gpu"})
        raw_names = nr.get("names", str, None) or nr.get("name", str)
        raw_addrs = nr.get("addresses", str, None) or nr.get("address", str, None)
        try:
            names = _expand(raw_names)
        except ValueError as e:
            raise nr.err("names", str(e)) from None
        addrs: list[str | None] = [None] * len(names)
        if raw_addrs:
            try:
                addrs = _expand(raw_addrs)
            except ValueError as e:
                raise nr.err("addresses", str(e)) from None
            if len(addrs) != len(names):
                raise nr.err("addresses", f"{len(addrs)} addresses for {len(names)} nodes",
                             "give one address per node, in the same order")
        cpus = nr.get("cpus", int)
        mem = nr.get("memory_mb", int)
        if cpus < 1:
            raise nr.err("cpus", "must be at least 1")
        gt = nr.table("gpu", required=False)
        gpu = _parse_gpu(gt) if gt else None
        nodes += [Node(n, a, cpus, mem, gpu) for n, a in zip(names, addrs)]
    seen: set[str] = set()
    for n in nodes:
        if n.name in seen:
            raise r.err("nodes", f"node {n.name!r} listed twice")
        seen.add(n.name)

    fr = r.table("fabric")
    fr.unknown({"kind", "device", "port", "interface", "rate_gbps"})
    fabric = Fabric(
        kind=fr.get("kind", str, choices=FABRIC_KINDS),
        device=fr.get("device", str, None),
        port=fr.get("port", int, 1),
        interface=fr.get("interface", str, None),
        rate_gbps=float(fr.get("rate_gbps", (int, float))),
    )
    if fabric.kind != "ethernet" and not fabric.device:
        raise fr.err("device", f"required for kind {fabric.kind!r}", 'e.g. device = "mlx5_0"')

    parts: list[Partition] = []
    for pr in r.tables("partitions"):
        pr.unknown({"name", "nodes", "default", "default_time", "max_time"})
        pname = pr.get("name", str)
        try:
            pnodes = tuple(_expand(pr.get("nodes", str)))
        except ValueError as e:
            raise pr.err("nodes", str(e)) from None
        for n in pnodes:
            if n not in seen:
                raise pr.err("nodes", f"node {n!r} is not in [[nodes]]")
        parts.append(Partition(pname, pnodes, pr.get("default", bool, False),
                               pr.get("default_time", str, None), pr.get("max_time", str, None)))
    if sum(p.default for p in parts) > 1:
        raise r.err("partitions", "more than one partition has default = true")

    dr = r.table("defaults", required=False)
    if dr:
        dr.unknown({"partition", "time", "hang_timeout", "preflight"})
        defaults = Defaults(dr.get("partition", str, None), dr.get("time", str, "01:00:00"),
                            dr.get("hang_timeout", (str, int), None))
    else:
        defaults = Defaults()
    if defaults.partition is None:
        defaults = Defaults(next((p.name for p in parts if p.default), parts[0].name), defaults.time,
                            defaults.hang_timeout)
    if dr and "preflight" in dr.data:
        defaults = replace(defaults, preflight=dr.get("preflight", bool))
    if defaults.partition not in {p.name for p in parts}:
        raise ProfileError(source, "defaults.partition", f"no partition {defaults.partition!r}",
                           "name one of the [[partitions]]")

    sr = r.table("slurm", required=False)
    if sr:
        sr.unknown({"controller", "controller_address"})
        slurm = SlurmSite(sr.get("controller", str), sr.get("controller_address", str, ""))
    else:
        slurm = SlurmSite(nodes[0].name)

    return Cluster(name=name, nodes=tuple(nodes), fabric=fabric, partitions=tuple(parts),
                   defaults=defaults, slurm=slurm, source=source,
                   sandbox=bool(data.get("sandbox", False)))


def load_file(path: str | os.PathLike) -> Cluster:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise BadInput("--cluster", f"profile {path} does not exist",
                       "give the path of a TOML cluster profile") from None
    except OSError as e:
        raise BadInput("--cluster", f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(str(path), "(syntax)", str(e),
                           "fix the TOML at that line (strings need quotes)") from None
    return parse_profile(data, str(path))


def builtin_text() -> str:
    return resources.files("hpcjobs.data").joinpath("default_cluster.toml").read_text()


def builtin() -> Cluster:
    return parse_profile(tomllib.loads(builtin_text()), "built-in")


def user_profile_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "hpcjobs" / "cluster.toml"


def profile_path(explicit: str | None = None) -> str | None:
    """The file the lookup order picks, or None for the built-in profile."""
    if explicit:
        return explicit
    env = os.environ.get("HPCJOBS_CLUSTER")
    if env:
        return env
    for p in (SANDBOX_PROFILE, user_profile_path()):
        if p.is_file():
            return str(p)
    return None


def load_cluster(path: str | None = None) -> Cluster:
    """Load the profile the lookup order picks (see the module docstring)."""
    chosen = profile_path(path)
    return load_file(chosen) if chosen else builtin()
