"""The few cluster-profile facts a task needs: node -> fast-network address, preferred fabric port.

The profile is found in the same order as :func:`hpcjobs.cluster.profile_path` (a unit test keeps
the two in step): ``$HPCJOBS_CLUSTER``, the running sandbox's profile, the user's
``$XDG_CONFIG_HOME/hpcjobs/cluster.toml``, the built-in profile.

Parsing TOML on every task would cost ~5 ms (tomllib) plus ~15 ms for hpcjobs.cluster's
validation imports. So the first task that sees a profile parses it with hpcjobs.cluster (the one
parser and validator of the project) and writes the few facts to a cache file in marshal format
(a built-in module: nothing to import); later tasks read the cache while the profile's path,
mtime, size and inode are unchanged. Writing is best-effort (atomic rename; a read-only home only
costs the parse each time).
"""

import marshal
import os

from hpcjobs import __version__
from hpcjobs.errors import BadInput

_FORMAT = 1


class Profile:
    """Addresses by node name and the fabric the profile prefers."""

    __slots__ = ("addresses", "cached", "chosen_by", "device", "interface", "kind", "path", "port")

    def __init__(self, path: str, chosen_by: str, data: dict, cached: bool) -> None:
        self.path, self.chosen_by, self.cached = path, chosen_by, cached
        self.addresses: dict = data["addresses"]
        self.kind: str = data["kind"]
        self.device: str | None = data["device"]
        self.port: int = data["port"]
        self.interface: str | None = data["interface"]

    def address(self, node: str | None) -> str | None:
        return self.addresses.get(node) if node else None

    @property
    def label(self) -> str:
        return f"{self.path} ({self.chosen_by})"


def builtin_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "default_cluster.toml")


def profile_path(env: dict) -> tuple[str, str]:
    """(path, what chose it), in hpcjobs.cluster's lookup order."""
    explicit = env.get("HPCJOBS_CLUSTER")
    if explicit:
        return explicit, "HPCJOBS_CLUSTER"
    sandbox = os.path.join(env.get("HPCJOBS_SANDBOX_STATE", "/run/hpcjobs-sandbox"), "cluster.toml")
    if os.path.isfile(sandbox):
        return sandbox, "the running sandbox"
    base = env.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    user = os.path.join(base, "hpcjobs", "cluster.toml")
    if os.path.isfile(user):
        return user, "user profile"
    return builtin_path(), "built-in"


def cache_path(env: dict, path: str) -> str:
    base = env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    name = os.path.abspath(path).replace("%", "%25").replace("/", "%2F")
    return os.path.join(base, "hpcjobs", "launch", name + ".marshal")


def _parse(path: str) -> dict:
    """The facts the launcher needs, through the project's own parser and validator."""
    from hpcjobs.cluster import load_file

    cluster = load_file(path)
    fab = cluster.fabric
    return {"addresses": {n.name: n.address for n in cluster.nodes if n.address},
            "kind": fab.kind, "device": fab.device, "port": fab.port, "interface": fab.interface}


def load(env: dict) -> Profile:
    """The profile in use; BadInput (exit 2) if it is missing or invalid."""
    path, chosen_by = profile_path(env)
    try:
        st = os.stat(path)
    except OSError as e:
        raise BadInput(chosen_by if chosen_by == "HPCJOBS_CLUSTER" else "cluster profile",
                       f"cannot read {path}: {e.strerror}",
                       "point HPCJOBS_CLUSTER at a TOML cluster profile or unset it") from None
    key = (_FORMAT, __version__, os.path.abspath(path), st.st_mtime_ns, st.st_size, st.st_ino)
    cache = cache_path(env, path)
    try:
        with open(cache, "rb") as f:
            cached_key, data = marshal.loads(f.read())
        if cached_key == key:
            return Profile(path, chosen_by, data, cached=True)
    except (OSError, ValueError, EOFError, TypeError):
        pass
    data = _parse(path)
    tmp = f"{cache}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(marshal.dumps((key, data)))
        os.replace(tmp, cache)
    except OSError:
        # No cache: the next task parses again (~20 ms); nothing else changes.
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return Profile(path, chosen_by, data, cached=False)
