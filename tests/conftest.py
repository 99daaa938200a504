"""Shared test helpers: paths and a fresh, isolated hpcjobs environment per test."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Run records and user config under tmp_path; built-in profile unless a test says else."""
    monkeypatch.setenv("HPCJOBS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HPCJOBS_SANDBOX_STATE", str(tmp_path / "no-sandbox"))
    monkeypatch.delenv("HPCJOBS_CLUSTER", raising=False)
    import hpcjobs.cluster as c

    monkeypatch.setattr(c, "SANDBOX_PROFILE", tmp_path / "no-sandbox" / "cluster.toml")
    return tmp_path


def unchecked(spec, cluster=None):
    """A Prepared job: validated and defaulted, without the kind's checks or plan (for tests
    that render odd or hostile values on purpose)."""
    from hpcjobs.cluster import builtin
    from hpcjobs.prepared import Prepared, complete

    cluster = cluster or builtin()
    s, kind = complete(spec, cluster)
    return Prepared(s, kind, cluster)
