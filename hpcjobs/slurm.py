"""The Slurm backend: Slurm's own commands with machine-readable output.

Works on Slurm 22.05 and 24.11 and on clusters without accounting: job state comes from
``scontrol show job -o`` while Slurm still holds the job (MinJobAge), then from ``sacct -P``
when accounting is on. JSON output is avoided on purpose: 22.05's ``squeue --json`` ignores
``-j``, its ``sacct --json`` reports every exit code as 0, and 24.11 changed the shapes.
Slurm's errors come back as :class:`SlurmError` carrying Slurm's own message.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import asdict, dataclass

from hpcjobs.errors import SlurmError

# States after which a job never runs again (requeue aside).
FINAL_STATES = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "TIMEOUT", "SPECIAL_EXIT", "REVOKED",
}
# Messages of a busy or restarting controller that are worth a retry.
TRANSIENT = ("Socket timed out", "Unable to contact slurm controller", "Zero Bytes were transmitted",
             "Resource temporarily unavailable", "Connection refused", "Slurm backup controller in standby")

SEP = "\x1f"  # field separator for squeue -o: no job name or path legitimately contains it


@dataclass
class JobStatus:
    job_id: str
    state: str  # PENDING, RUNNING, COMPLETED, ... ("UNKNOWN" when Slurm no longer knows it)
    reason: str = ""
    exit_code: int | None = None  # the program's exit code (from "rc:signal")
    signal: int | None = None
    elapsed: str = ""
    nodes: str = ""
    name: str = ""
    partition: str = ""
    stdout: str = ""
    restarts: int = 0
    source: str = ""  # squeue | scontrol | sacct | record

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict:
        return asdict(self)


def run(argv: list[str], *, retries: int = 3, input: str | None = None, check: bool = True,
        timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run a Slurm command; retry transient controller errors with bounded backoff."""
    delay = 0.5
    for attempt in range(retries + 1):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
        except FileNotFoundError:
            raise SlurmError(f"{argv[0]}: command not found (is the Slurm client installed?)") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{argv[0]}: no answer within {timeout:.0f} s") from None
        if proc.returncode == 0 or not check:
            return proc
        msg = _message(proc)
        if attempt < retries and any(t in msg for t in TRANSIENT):
            time.sleep(delay)
            delay = min(delay * 2, 4.0)
            continue
        raise SlurmError(msg)
    raise AssertionError("unreachable")


def _message(proc: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
    # The last error line is Slurm's verdict ("sbatch: error: Batch job submission failed: ...").
    errs = [ln for ln in lines if "error" in ln.lower()] or lines
    return errs[-1] if errs else f"exit status {proc.returncode}"


# --- submit -----------------------------------------------------------------------------

def sbatch(script_path: str, *, extra: list[str] = (), cwd: str | None = None,
           env: dict | None = None) -> str:
    """Submit a script file; returns the job id."""
    proc = subprocess_run_sbatch(["sbatch", "--parsable", *extra, script_path], cwd=cwd, env=env)
    return parse_sbatch(proc.stdout)


def subprocess_run_sbatch(argv, cwd=None, env=None):
    # sbatch is not retried blindly: a timed-out submission may still have created a job.
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=120)
    except FileNotFoundError:
        raise SlurmError("sbatch: command not found (is the Slurm client installed?)") from None
    if proc.returncode != 0:
        raise SlurmError(_message(proc))
    return proc


def parse_sbatch(stdout: str) -> str:
    """``sbatch --parsable`` prints ``jobid`` or ``jobid;cluster``."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    jid = line.split(";")[0]
    if not jid.isdigit():
        raise SlurmError(f"sbatch: unexpected output {stdout.strip()!r}")
    return jid


# --- state ------------------------------------------------------------------------------

def _exit(text: str) -> tuple[int | None, int | None]:
    m = re.match(r"^(\d+):(\d+)$", text.strip())
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def parse_scontrol_job(text: str) -> list[JobStatus]:
    """Parse ``scontrol show job -o`` (one job per line, Key=Value pairs).

    Values may hold blanks (JobName, Reason, paths), so each value runs to the next ``Key=``.
    """
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("JobId="):
            continue
        fields = _kv(line)
        ec, sig = _exit(fields.get("ExitCode", ""))
        state = fields.get("JobState", "UNKNOWN").split()[0]
        jid = fields.get("JobId", "")
        if fields.get("ArrayTaskId") and fields.get("ArrayJobId"):
            jid = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
        out.append(JobStatus(
            job_id=jid, state=state, reason=_none(fields.get("Reason", "")),
            exit_code=ec, signal=sig, elapsed=fields.get("RunTime", ""),
            nodes=_none(fields.get("NodeList", "")), name=fields.get("JobName", ""),
            partition=fields.get("Partition", ""), stdout=fields.get("StdOut", ""),
            restarts=int(fields.get("Restarts", "0") or 0), source="scontrol"))
    return out


_KEY = re.compile(r"(?:^| )([A-Za-z][A-Za-z0-9_:/]*)=")


def _kv(line: str) -> dict[str, str]:
    keys = list(_KEY.finditer(line))
    result = {}
    for i, m in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(line)
        result[m.group(1)] = line[m.end():end].strip()
    return result


def _none(v: str) -> str:
    return "" if v in ("None", "(null)", "(None)") else v


def scontrol_jobs(job_ids: list[str]) -> tuple[list[JobStatus], list[str]]:
    """Jobs Slurm still holds; returns (statuses, ids it no longer knows)."""
    found, missing = [], []
    for jid in job_ids:
        proc = run(["scontrol", "show", "job", "-o", jid], check=False)
        if proc.returncode == 0:
            found += parse_scontrol_job(proc.stdout)
            continue
        msg = _message(proc)
        if "Invalid job id" in msg:
            missing.append(jid)
            continue
        if any(t in msg for t in TRANSIENT):
            proc = run(["scontrol", "show", "job", "-o", jid])  # retried; raises Slurm's message
            found += parse_scontrol_job(proc.stdout)
            continue
        raise SlurmError(msg)
    return found, missing


SACCT_FIELDS = "JobID,JobName,Partition,State,ExitCode,Elapsed,NodeList,Restarts"


def parse_sacct(text: str) -> list[JobStatus]:
    """Parse ``sacct -P -n -X -o SACCT_FIELDS`` (trusted over sacct --json, which in 22.05
    always reports exit code 0)."""
    out = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 7:
            continue
        jid, name, part, state, ec_text, elapsed, nodes = parts[:7]
        restarts = parts[7] if len(parts) > 7 else "0"
        ec, sig = _exit(ec_text)
        out.append(JobStatus(job_id=jid, state=state.split()[0] if state else "UNKNOWN",
                             exit_code=ec, signal=sig, elapsed=elapsed, nodes=_none(nodes),
                             name=name, partition=part, restarts=int(restarts or 0) if restarts.isdigit() else 0,
                             source="sacct"))
    return out


_accounting: bool | None = None


def accounting_enabled() -> bool:
    """True when sacct can answer (AccountingStorageType is not accounting_storage/none)."""
    global _accounting
    if _accounting is None:
        proc = run(["scontrol", "show", "config"], check=False)
        m = re.search(r"^AccountingStorageType\s*=\s*(\S+)", proc.stdout or "", re.M)
        _accounting = bool(m) and m.group(1) not in ("accounting_storage/none", "(null)")
    return _accounting


def sacct_jobs(job_ids: list[str]) -> list[JobStatus]:
    if not job_ids or not accounting_enabled():
        return []
    proc = run(["sacct", "-P", "-n", "-X", "-o", SACCT_FIELDS, "-j", ",".join(job_ids)], check=False)
    return parse_sacct(proc.stdout) if proc.returncode == 0 else []


def job_status(job_ids: list[str]) -> dict[str, JobStatus]:
    """State of each job: scontrol while Slurm holds it, else sacct, else UNKNOWN."""
    found, missing = scontrol_jobs(job_ids)
    result = {}
    for st in found:
        result.setdefault(st.job_id, st)
    # scontrol on an array's parent id lists each task; keep them all, keyed by task id.
    for st in sacct_jobs(missing):
        result.setdefault(st.job_id, st)
    for jid in job_ids:
        if jid not in result and not any(k.startswith(jid + "_") for k in result):
            result[jid] = JobStatus(job_id=jid, state="UNKNOWN", source="none")
    return result


def parse_squeue(text: str) -> list[JobStatus]:
    """Parse ``squeue --noheader -o SQUEUE_FORMAT`` (fields split by \\x1f, name last)."""
    out = []
    for line in text.splitlines():
        parts = line.split(SEP, 7)
        if len(parts) != 8:
            continue
        jid, state, reason, elapsed, nodes, part, _user, name = parts
        out.append(JobStatus(job_id=jid, state=state, reason=_none(reason), elapsed=elapsed,
                             nodes=_none(nodes), partition=part, name=name, source="squeue"))
    return out


SQUEUE_FORMAT = SEP.join(["%i", "%T", "%r", "%M", "%N", "%P", "%u", "%j"])


def squeue(user: str | None = None, job_ids: list[str] | None = None) -> list[JobStatus]:
    argv = ["squeue", "--noheader", "--array", "-o", SQUEUE_FORMAT]
    if job_ids:
        argv += ["-j", ",".join(job_ids)]
    elif user:
        argv += ["-u", user]
    return parse_squeue(run(argv).stdout)


def scancel(job_ids: list[str], signal: str | None = None) -> None:
    argv = ["scancel"] + ([f"--signal={signal}"] if signal else []) + list(job_ids)
    run(argv)


def ping() -> str:
    """Slurm's own word on the controller; raises SlurmError when it is down."""
    proc = run(["scontrol", "ping"], check=False, retries=0)
    text = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0 or "DOWN" in text:
        raise SlurmError(text.strip().splitlines()[-1] if text.strip() else "slurmctld unreachable")
    return text.strip()

