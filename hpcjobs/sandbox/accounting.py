"""Optional accounting for the sandbox (``hpcjobs sandbox up --accounting``): MariaDB and
slurmdbd in the controller's network namespace, so that ``sacct`` answers as on a cluster with
a database.

Off by default: it adds a few seconds and ~130 MB, and hpcjobs must work without accounting
(most small clusters have none). MariaDB listens on 127.0.0.1:3306 of the controller's own
namespace (its own loopback: it cannot meet a database of the host) and keeps its files in
``STATE/mysql``; slurmdbd listens on 10.200.0.254:6819, where ``sacct`` in the root namespace
reaches it (slurm.conf ``AccountingStorageHost``). Needs Debian's ``mariadb-server`` and
``slurmdbd`` packages.
"""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
from pathlib import Path

from hpcjobs.sandbox import config, daemons, netns
from hpcjobs.sandbox.layout import Layout

REQUIRED = {"mariadbd": "mariadb-server", "mariadb-install-db": "mariadb-server",
            "slurmdbd": "slurmdbd"}
DB_PORT = 3306  # on the controller namespace's loopback only
DB_NAME = "slurm_acct_db"


def datadir(lay: Layout) -> Path:
    return lay.root / "mysql"


def _socket(lay: Layout) -> Path:
    return datadir(lay) / "mysqld.sock"


def slurmdbd_conf(lay: Layout, password: str) -> str:
    return "\n".join([
        "# slurmdbd.conf of the sandbox (`hpcjobs sandbox up --accounting`); removed by `down`.",
        "AuthType=auth/munge",
        f"DbdHost={config.CONTROLLER}",
        "DbdPort=6819",
        "SlurmUser=slurm",
        "StorageType=accounting_storage/mysql",
        "StorageHost=127.0.0.1",
        f"StoragePort={DB_PORT}",
        "StorageUser=slurm",
        f"StoragePass={password}",
        f"StorageLoc={DB_NAME}",
        f"LogFile={lay.log}/slurmdbd.log",
        f"PidFile={lay.pid}/slurmdbd.pid",
        "DebugLevel=info",
    ]) + "\n"


def _mariadb(lay: Layout, sql: str) -> None:
    proc = subprocess.run(["mariadb", "--no-defaults", f"--socket={_socket(lay)}", "-u", "root",
                           "-e", sql], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"mariadb: {proc.stderr.strip()}")


def start(lay: Layout, env: dict, started: list[daemons.Daemon], record, wait) -> None:
    """Database, then slurmdbd, then this cluster in it: all before slurmctld starts (it
    registers with slurmdbd at start). ``record`` saves ``started``; ``wait(cond, timeout,
    what)`` polls like lifecycle's waits do."""
    mysql = pwd.getpwnam("mysql")
    data = datadir(lay)
    data.mkdir(mode=0o700)
    os.chown(data, mysql.pw_uid, mysql.pw_gid)
    # A fresh, empty database (~2 s); root logs in through the socket as the unix root user.
    proc = subprocess.run(["mariadb-install-db", "--no-defaults", "--user=mysql",
                           f"--datadir={data}", "--auth-root-authentication-method=socket",
                           "--skip-test-db", "--skip-name-resolve"], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"mariadb-install-db: {(proc.stderr or proc.stdout).strip()[-500:]}")
    ctl = netns.ns_path(netns.CONTROLLER_NS)
    started.append(daemons.start_in_namespace(
        "mariadbd", ctl, config.CONTROLLER, lay.hosts,
        ["mariadbd", "--no-defaults", "--user=mysql", f"--datadir={data}",
         f"--socket={_socket(lay)}", f"--pid-file={data}/mysqld.pid",
         "--bind-address=127.0.0.1", f"--port={DB_PORT}", "--skip-name-resolve",
         "--innodb-lock-wait-timeout=900"],  # slurmdbd warns below 900 s
        lay.log / "mariadbd.out", env))
    record()

    def db_up() -> bool:
        try:
            _mariadb(lay, "SELECT 1")
            return True
        except (RuntimeError, subprocess.TimeoutExpired):
            return False

    wait(db_up, 60.0, "MariaDB to answer")
    password = secrets.token_hex(16)
    # The database is created here, not by slurmdbd: slurmdbd's first connect then succeeds.
    # Debian 13's libmariadb3 (1:11.8.9+ds-0+deb13u1) leaves a handle whose connect failed
    # with a column limit of 0, and slurmdbd 24.11, which connects again on that handle after
    # creating the database itself, dies with "_check_mysql_concat_is_sane: null result"
    # ("Number of columns in result (=1) ... exceeds ... (=0)").
    _mariadb(lay, f"CREATE DATABASE {DB_NAME}; "
                  f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                  f"GRANT ALL ON {DB_NAME}.* TO 'slurm'@'127.0.0.1';")
    # slurmdbd reads slurmdbd.conf next to $SLURM_CONF and insists on mode 600, owner SlurmUser.
    conf = lay.etc / "slurmdbd.conf"
    conf.write_text(slurmdbd_conf(lay, password))
    slurm = pwd.getpwnam("slurm")
    os.chown(conf, slurm.pw_uid, slurm.pw_gid)
    os.chmod(conf, 0o600)
    started.append(daemons.start_in_namespace(
        "slurmdbd", ctl, config.CONTROLLER, lay.hosts, ["slurmdbd", "-D"],
        lay.log / "slurmdbd.out", env))
    record()

    def cluster_added() -> bool:
        # Fails with "Unable to connect to database" until slurmdbd listens.
        p = subprocess.run(["sacctmgr", "-i", "add", "cluster", config.PROFILE_SWAPS["name"]],
                           capture_output=True, text=True, env=env, timeout=30)
        return p.returncode == 0 or "already exists" in p.stdout + p.stderr

    wait(cluster_added, 30.0, "slurmdbd to accept the cluster (sacctmgr add cluster)")

