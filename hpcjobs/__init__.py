"""hpcjobs: Slurm jobs that are right for the hardware.

This module stays tiny: ``python -m hpcjobs.launch`` imports it on every task of every job,
so the public API (``hpcjobs.api``) is loaded only when one of its names is first used.
"""

__version__ = "0.1.0"

_API = {
    "JobSpec", "load_cluster", "render", "submit", "status", "wait", "cancel",
    "logs", "Cluster", "Run", "JobStatus",
}


def __getattr__(name: str):
    if name in _API:
        from hpcjobs import api

        return getattr(api, name)
    if name == "preempted":
        from hpcjobs.preempt import preempted

        return preempted
    if name == "finish":
        from hpcjobs.shutdown import finish

        return finish
    raise AttributeError(f"module 'hpcjobs' has no attribute {name!r}")
