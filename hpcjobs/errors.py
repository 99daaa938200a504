"""Errors that map to the CLI's exit codes.

0 success; 1 the job failed; 2 bad input (nothing submitted, nothing written);
3 Slurm unreachable or refused the job (Slurm's own message).
"""


class HpcjobsError(Exception):
    """Base class: ``str(err)`` is the one line the CLI prints."""

    exit_code = 1


class BadInput(HpcjobsError):
    """A user value is wrong. The message names the field and the fix."""

    exit_code = 2

    def __init__(self, field: str, problem: str, fix: str | None = None):
        self.field = field
        self.problem = problem
        self.fix = fix
        msg = f"{field}: {problem}"
        if fix:
            msg += f"; {fix}"
        super().__init__(msg)


class SlurmError(HpcjobsError):
    """Slurm could not be reached or refused a request; the message is Slurm's own."""

    exit_code = 3


class JobFailed(HpcjobsError):
    """A job ended in a state other than COMPLETED."""

    exit_code = 1
