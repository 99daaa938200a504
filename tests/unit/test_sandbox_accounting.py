"""`hpcjobs sandbox up --accounting`: two more swaps, and slurmdbd's configuration. (Run for
real on Debian 12 and 13 by scripts/trixie-check and scripts/record-slurm-fixtures: it stops
and starts daemons, so it is not run against the shared sandbox.)"""

from pathlib import Path

from hpcjobs import slurmconf
from hpcjobs.sandbox import accounting, config
from hpcjobs.sandbox.layout import Layout

LAY = Layout(Path("/run/hpcjobs-sandbox"))


def test_accounting_adds_two_swaps_and_nothing_else():
    for version in ((22, 5), (24, 11)):
        plain, acct = config.swaps(LAY, version), config.swaps(LAY, version, accounting=True)
        assert set(acct) - set(plain) == {"accounting_storage_type", "accounting_storage_host"}
        assert all(acct[k] == plain[k] for k in plain)
        assert acct["accounting_storage_type"].value == "accounting_storage/slurmdbd"
        assert acct["accounting_storage_host"].value == config.CONTROLLER_ADDRESS


def test_slurm_conf_with_accounting():
    off = config.generate(LAY, 3, (24, 11))["slurm.conf"]
    on = config.generate(LAY, 3, (24, 11), accounting=True)["slurm.conf"]
    assert "AccountingStorageType=accounting_storage/none\n" in off
    assert "AccountingStorageHost" not in off
    assert "AccountingStorageType=accounting_storage/slurmdbd\n" \
           "AccountingStorageHost=10.200.0.254\nJobCompType=jobcomp/filetxt\n" in on
    # The shipped default writes no host line.
    assert "AccountingStorageHost" not in slurmconf.slurm_conf(config.profile(3))


def test_slurmdbd_conf():
    text = accounting.slurmdbd_conf(LAY, "secret")
    lines = dict(ln.split("=", 1) for ln in text.splitlines() if ln and not ln.startswith("#"))
    assert lines["DbdHost"] == "slurmctl" and lines["SlurmUser"] == "slurm"
    assert lines["StorageType"] == "accounting_storage/mysql"
    assert (lines["StorageHost"], lines["StoragePort"]) == ("127.0.0.1", "3306")
    assert lines["StoragePass"] == "secret" and lines["StorageLoc"] == accounting.DB_NAME
    assert lines["LogFile"] == "/run/hpcjobs-sandbox/log/slurmdbd.log"
    assert lines["PidFile"] == "/run/hpcjobs-sandbox/pid/slurmdbd.pid"
