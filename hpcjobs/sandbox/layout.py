"""Where the sandbox keeps everything it creates on disk: one state directory.

``$HPCJOBS_SANDBOX_STATE`` (default ``/run/hpcjobs-sandbox``), read when called so that tests
can point it elsewhere. ``down`` removes the whole directory; the only file the sandbox puts
outside it is the ``/etc/slurm/slurm.conf`` symlink that lets Slurm's clients find it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE = "/run/hpcjobs-sandbox"
# Slurm's clients (sbatch, srun, sinfo) read this path unless SLURM_CONF is set; the sandbox
# links it to its own slurm.conf while it is up.
CLIENT_CONF = Path("/etc/slurm/slurm.conf")


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def conf(self) -> Path:
        return self.etc / "slurm.conf"

    @property
    def hosts(self) -> Path:
        """The hosts file bind-mounted over /etc/hosts in every daemon's mount namespace."""
        return self.etc / "hosts"

    @property
    def profile(self) -> Path:
        """The running sandbox's cluster profile (hpcjobs.cluster.SANDBOX_PROFILE)."""
        return self.root / "cluster.toml"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def pid(self) -> Path:
        return self.root / "pid"

    @property
    def ctld(self) -> Path:
        """slurmctld's StateSaveLocation."""
        return self.root / "ctld"

    @property
    def daemons(self) -> Path:
        """JSON list of the processes the sandbox started (pid + start time)."""
        return self.root / "daemons.json"

    @property
    def meta(self) -> Path:
        """JSON: node count, Slurm version, time of bring-up. Written once the nodes are idle."""
        return self.root / "sandbox.json"


def layout() -> Layout:
    return Layout(Path(os.environ.get("HPCJOBS_SANDBOX_STATE") or DEFAULT_STATE))
