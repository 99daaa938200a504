"""hpcjobs: Slurm jobs that are right for the hardware.

This module stays tiny: ``python -m hpcjobs.launch`` imports it on every task of every job,
so each public name is loaded from its module only when it is first used (hpcjobs.lazy).
The public names are exactly those of docs/api.md (tests/unit/test_public_api.py checks).
"""

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    **dict.fromkeys(("Cancelled", "Cluster", "JobSpec", "JobStatus", "Output", "Prepared", "Run",
                     "Submission", "attempts", "cancel", "describe", "describe_end",
                     "load_cluster", "logs", "outputs", "plan", "prepare", "queue", "read_output",
                     "render", "status", "submit", "task_summary", "unknown", "wait", "wait_all",
                     "watch_jobs"), "hpcjobs.api"),
    "preempted": "hpcjobs.preempt",
    "finish": "hpcjobs.shutdown",
    "heartbeat": "hpcjobs.progress",
}
__all__ = sorted(_PUBLIC)  # noqa: PLE0605 (built from the table above)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'hpcjobs' has no attribute {name!r}")
    from hpcjobs.lazy import load

    value = load(f"{module}:{name}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
