"""An ordinary user of the machine (not root, created for this test) renders and submits a
real 3-node MPI job to the sandbox with the repository's virtual environment; the job runs as
that user, and the run records it leaves are private (0700).

This is what breaks when the venv was built from a Python in a private home directory (a
pyenv under /root, mode 0700): every other user gets "Permission denied". The test then fails
with the directory to blame, never skips (scripts/install builds .venv from Debian's
/usr/bin/python3 and rebuilds one made from another interpreter).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

PROGRAM = """\
import os, pwd, socket
from mpi4py import MPI
c = MPI.COMM_WORLD
uid = os.getuid()
print(f"rank {c.Get_rank()} of {c.Get_size()} on {socket.gethostname()} uid {uid} "
      f"user {pwd.getpwuid(uid).pw_name} sum {c.allreduce(c.Get_rank() + 1)}", flush=True)
"""


@dataclass
class User:
    name: str
    uid: int
    home: Path

    def env(self) -> dict[str, str]:
        """A login-like environment: nothing of root's but the venv on PATH."""
        venv_bin = str(Path(sys.executable).parent)
        return {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
                "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """argv as this user (runuser), in its home directory."""
        return subprocess.run(["runuser", "-u", self.name, "--", "env", "-i",
                               *(f"{k}={v}" for k, v in self.env().items()), *argv],
                              capture_output=True, text=True, cwd=self.home, timeout=timeout)


def closed_to_others(path: str | Path) -> list[str]:
    """Directories on the way to ``path`` that other users cannot enter (no o+x), and the
    file itself if they cannot read it, with their modes."""
    found = []
    p = Path(os.path.realpath(path))
    for d in reversed(p.parents):
        mode = os.stat(d).st_mode
        if not mode & stat.S_IXOTH:
            found.append(f"{d} (mode {stat.S_IMODE(mode):04o})")
    if p.exists() and not os.stat(p).st_mode & stat.S_IROTH:
        found.append(f"{p} (mode {stat.S_IMODE(os.stat(p).st_mode):04o})")
    return found


@pytest.fixture
def user(sandbox):
    for tool in ("useradd", "userdel", "runuser"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is missing (Debian's passwd / util-linux packages)")
    name = f"hjt{secrets.token_hex(3)}"  # a name no real user has; removed again below
    home = Path("/tmp") / f"{name}-home"
    p = subprocess.run(["useradd", "--create-home", "--home-dir", str(home), "--shell",
                        "/bin/bash", "--user-group", name], capture_output=True, text=True)
    assert p.returncode == 0, f"useradd {name}: {p.stderr.strip()}"
    try:
        os.chmod(home, 0o700)  # as a private home usually is (the records must not need more)
        yield User(name, pwd.getpwnam(name).pw_uid, home)
    finally:
        subprocess.run(["scancel", "--user", name], capture_output=True)
        gone = subprocess.run(["userdel", "--remove", name], capture_output=True, text=True)
        shutil.rmtree(home, ignore_errors=True)
        assert gone.returncode == 0 or "mail spool" in gone.stderr, \
            f"userdel {name}: {gone.stderr.strip()}"


def require_usable_venv(user: User) -> None:
    """The venv's Python, hpcjobs and mpi4py, as the other user: the first thing to fail when
    the venv comes from a private interpreter or the repository lies in a closed directory."""
    p = user.run(sys.executable, "-c", "import hpcjobs, mpi4py, sys; print(sys.prefix)")
    if p.returncode != 0:
        closed = closed_to_others(sys.executable) + closed_to_others(ROOT / "hpcjobs")
        pytest.fail(
            f"the venv {sys.prefix} cannot be used by the ordinary user {user.name}: "
            f"{(p.stderr.strip().splitlines() or ['?'])[-1]}\n"
            f"its Python is {os.path.realpath(sys.executable)}"
            + (f"; closed to other users: {', '.join(closed)}" if closed else "") + ".\n"
            "Fix: run scripts/install, which builds .venv from Debian's /usr/bin/python3 (and "
            "rebuilds a .venv made from another interpreter), with the repository under "
            "directories every user can enter (e.g. /opt, /srv; not /root).")
    assert p.stdout.strip() == sys.prefix


def test_venv_is_usable_by_another_user(user):
    require_usable_venv(user)


def test_other_user_renders_submits_and_keeps_private_records(sandbox, user):
    sandbox.need(3)
    require_usable_venv(user)
    prog = user.home / "whoami_mpi.py"
    prog.write_text(PROGRAM)
    os.chown(prog, user.uid, -1)

    r = user.run("hpcjobs", "render", "mpi", "--nodes", "3", "--", str(prog))
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --nodes=3" in r.stdout
    assert f"export HPCJOBS_PYTHON={sys.executable}" in r.stdout, r.stdout
    assert f"set -- {prog}" in r.stdout

    s = user.run("hpcjobs", "submit", "mpi", "--nodes", "3", "--wait", "--", str(prog), timeout=300)
    assert s.returncode == 0, s.stdout + s.stderr
    job = re.search(r"Submitted batch job (\d+)", s.stdout).group(1)
    assert f"job {job} ended COMPLETED, exit code 0" in s.stdout, s.stdout

    # What the job printed: three ranks on three nodes, each running as the user.
    out = user.run("hpcjobs", "logs", job)
    assert out.returncode == 0, out.stderr
    rows = re.findall(r"^rank (\d) of (\d) on (\S+) uid (\d+) user (\S+) sum (\d+)$",
                      out.stdout, re.M)
    assert sorted(r[0] for r in rows) == ["0", "1", "2"], out.stdout
    assert {(r[1], r[3], r[4], r[5]) for r in rows} == {("3", str(user.uid), user.name, "6")}, out.stdout
    assert sorted(r[2] for r in rows) == sandbox.nodes[:3]

    # The record: in the user's own data directory, owned by the user, 0700, the job's output
    # in it written by Slurm as the user; nobody else can look inside.
    st = user.run("hpcjobs", "status", "--json", job)
    assert st.returncode == 0, st.stderr
    rec = json.loads(st.stdout)[0]
    assert rec["state"] == "COMPLETED"
    run_dir = Path(rec["run_dir"])
    assert user.home / ".local" / "share" / "hpcjobs" / "runs" in run_dir.parents, run_dir
    info = os.stat(run_dir)
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (user.uid, 0o700), \
        f"{run_dir}: owner {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}"
    files = {p.name: os.stat(p) for p in run_dir.iterdir()}
    assert {"job.sbatch", "spec.json", "meta.json", f"slurm-{job}.out"} <= set(files), files
    assert all(f.st_uid == user.uid for f in files.values()), files
    peek = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(run_dir / "job.sbatch")],
                          capture_output=True, text=True)
    assert peek.returncode != 0 and "Permission denied" in peek.stderr, peek
