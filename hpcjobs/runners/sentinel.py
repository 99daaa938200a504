"""The hang sentinel: a job whose ranks stop making progress is found, explained and stopped.

Runs in the batch script beside the program (job_templates/_sentinel.j2 starts it in the
background on the batch host; never a thread inside the program), when the job has a hang
timeout (``hpcjobs submit --hang-timeout 30m``, the profile's ``defaults.hang_timeout``, or
``HPCJOBS_HANG_TIMEOUT`` for the direct-use scripts)::

    python -m hpcjobs.runners.sentinel watch     # the batch script's watcher
    python -m hpcjobs.runners.sentinel dump ...  # one task per node, at a hang (stacks.py)

Progress is any of (docs/runtime-checks.md): a heartbeat file of any rank changed
(``hpcjobs.heartbeat()``), the job's output grew (the batch script's stdout and stderr files,
which srun writes the tasks' output to), or, for NCCL, a rank's flight recorder completed a
collective since the last look. When nothing progressed for the timeout: one ``srun --overlap``
step dumps every rank's Python stacks on every node (py-spy), the report goes into the run
record (``report.json``, ``stacks.txt``), the summary into the job's output, and the program's
steps are cancelled; the batch script then requeues the job if it is requeueable (--requeue).

Imports nothing beyond the standard library and hpcjobs' job side: it runs inside the job.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

MIN_TIMEOUT = 10  # seconds; below it the poll and the dump step's own seconds dominate
DUMP_TIMEOUT = 90.0  # seconds for the whole dump step (py-spy on every node)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")


def parse_duration(text: str | int | float | None) -> int:
    """Seconds of a duration: 90, "90s", "15m", "2h", "1h30m"; 0 for "0", "off", "none" or
    None (no sentinel). A ValueError says what is wrong."""
    if text is None:
        return 0
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        t = str(text).strip().lower()
        if t in ("", "0", "off", "none", "no"):
            return 0
        pos, seconds = 0, 0.0
        for m in _DURATION.finditer(t):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(t) or pos == 0:
            raise ValueError(f"{text!r} is not a duration")
    if seconds < 0:
        raise ValueError(f"{text!r} is negative")
    if 0 < seconds < MIN_TIMEOUT:
        raise ValueError(f"{text!r} is shorter than {MIN_TIMEOUT} s")
    return round(seconds)


# --- progress --------------------------------------------------------------------------------

@dataclass
class Progress:
    """What the watcher has seen; ``observe`` moves ``last`` when anything changed."""

    timeout: float
    last: float  # time.monotonic() of the last progress (or of the start)
    last_what: str = "the start of the watch"
    heartbeats: dict[str, bytes] = field(default_factory=dict)
    sizes: dict[tuple, int] = field(default_factory=dict)
    heartbeat_seen: bool = False

    def observe(self, now: float, heartbeats: dict[str, bytes], sizes: dict[tuple, int]) -> str:
        """Take one poll's reading; returns what progressed ("" for nothing)."""
        moved = ""
        for name, content in heartbeats.items():
            if content and self.heartbeats.get(name) != content:
                moved = moved or f"heartbeat {name} ({content.decode(errors='replace').split(' ', 1)[0]})"
                self.heartbeats[name] = content
                self.heartbeat_seen = True
        for key, size in sizes.items():
            if size > self.sizes.get(key, size):
                moved = moved or "the job's output grew"
            self.sizes[key] = size
        if moved:
            self.last, self.last_what = now, moved
        return moved

    def silence(self, now: float) -> float:
        return now - self.last


def read_heartbeats(directory: str) -> dict[str, bytes]:
    """rank-N file -> its content (opened afresh each time: NFS close-to-open consistency)."""
    out = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return out
    for name in names:
        if name.startswith("rank-") and not name.endswith(".tmp"):
            try:
                with open(os.path.join(directory, name), "rb") as f:
                    out[name] = f.read(256)
            except OSError:
                pass
    return out


def output_files() -> dict[int, tuple]:
    """fd -> (device, inode) of this process's stdout/stderr where they are regular files (the
    job's output, as the batch script has them); one entry per file."""
    import stat

    out, seen = {}, set()
    for fd in (1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if stat.S_ISREG(st.st_mode) and key not in seen:
            seen.add(key)
            out[fd] = key
    return out


def output_sizes(files: dict[int, tuple]) -> dict[tuple, int]:
    sizes = {}
    for fd, key in files.items():
        try:
            sizes[key] = os.fstat(fd).st_size
        except OSError:
            pass
    return sizes


# --- the watcher -----------------------------------------------------------------------------

@dataclass
class Config:
    timeout: int
    directory: Path  # this run's sentinel directory in the record
    heartbeat_dir: str
    job_id: str
    label: str  # the job as `hpcjobs why` names it (1234, or 1234_7 for an array task)
    nodes: int
    ntasks: int | None
    python: str = sys.executable

    @classmethod
    def from_env(cls, env=os.environ) -> Config:
        directory = env["HPCJOBS_SENTINEL_DIR"]
        array = env.get("SLURM_ARRAY_JOB_ID")
        job = env.get("SLURM_JOB_ID", "")
        ntasks = env.get("SLURM_NTASKS", "")
        return cls(timeout=parse_duration(env.get("HPCJOBS_HANG_TIMEOUT")),
                   directory=Path(directory), heartbeat_dir=env.get("HPCJOBS_HEARTBEAT_DIR", ""),
                   job_id=job, label=f"{array}_{env['SLURM_ARRAY_TASK_ID']}" if array else job,
                   nodes=int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1),
                   ntasks=int(ntasks) if ntasks.isdigit() else None)

    @property
    def poll(self) -> float:
        return min(5.0, max(0.5, self.timeout / 10))


def say(text: str) -> None:
    os.write(2, f"hpcjobs: sentinel: {text}\n".encode(errors="replace"))


def program_steps(job_id: str) -> list[str]:
    """The job's running steps that are the program's: not batch/extern, not hpcjobs' own side
    steps (named hpcjobs-*, as the sentinel's dump step is). One squeue call."""
    r = subprocess.run(["squeue", "-h", "-s", "-j", job_id, "-o", "%i|%j"], capture_output=True,
                       text=True, timeout=30)
    steps = []
    for line in r.stdout.splitlines():
        sid, _, name = line.strip().partition("|")
        step = sid.rpartition(".")[2]
        if step.isdigit() and not name.startswith("hpcjobs-"):
            steps.append(step)
    return steps


def run_dump(cfg: Config, steps: list[str], out: Path, *, stacks: bool = True) -> list[dict]:
    """One task per node (``srun --overlap``: beside the program's step, on its CPUs; --mem=0
    and no GRES, or the step would wait for memory and GPUs the program holds): each writes its
    ranks' record to OUT/<host>.json. Returns every rank's record."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)  # its parent is already 0700 (the template)
    for old in out.glob("*.json"):
        old.unlink()
    n = str(cfg.nodes)
    cmd = ["srun", "--overlap", "--mem=0", "--gres=none", "--job-name=hpcjobs-sentinel",
           f"--nodes={n}", f"--ntasks={n}", "--ntasks-per-node=1", "--cpus-per-task=1",
           "--kill-on-bad-exit=0", "--quiet", cfg.python, "-m", "hpcjobs.runners.sentinel", "dump",
           "--job", cfg.job_id, "--steps", ",".join(steps), "--out", str(out)]
    if not stacks:
        cmd.append("--no-stacks")
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=DUMP_TIMEOUT)
        if r.returncode != 0:
            say(f"dump step: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    except (OSError, subprocess.TimeoutExpired) as e:
        say(f"dump step did not finish: {e}")
    ranks = []
    for f in sorted(out.glob("*.json")):
        try:
            ranks += json.loads(f.read_text()).get("ranks", [])
        except (OSError, ValueError):
            pass
    return ranks


def fr_completed(ranks: list[dict]) -> dict[int, int]:
    """rank -> collectives its NCCL flight recorder has completed (all process groups)."""
    out = {}
    for r in ranks:
        status = (r.get("nccl") or {}).get("pg_status") or {}
        if status:
            out[int(r["rank"])] = sum(int(s.get("last_completed_collective", -1)) for s in status.values())
    return out


def nccl_in_use(cfg: Config) -> bool:
    """The ranks opened flight recorder pipes (NCCL process groups do, where the template set
    TORCH_NCCL_DEBUG_INFO_PIPE_FILE into this directory)."""
    return any(cfg.directory.glob("nccl_pipe_rank_*.pipe"))


def write_report(cfg: Config, report: dict, ranks: list[dict]) -> None:
    from hpcjobs.runners.hangreport import stacks_text
    from hpcjobs.runs import atomic_write

    atomic_write(cfg.directory / "stacks.txt", stacks_text(ranks))
    atomic_write(cfg.directory / "report.json", json.dumps(report, indent=1, default=str) + "\n")


def handle_hang(cfg: Config, watch: Progress, steps: list[str], ranks: list[dict],
                times: dict) -> None:
    """Stacks in the record, the summary in the output, then the program's steps cancelled."""
    from hpcjobs.runners.hangreport import analyse

    expected = cfg.ntasks if len(steps) == 1 else None
    analysis = analyse(ranks, expected)
    report = {"job": cfg.label, "steps": [f"{cfg.job_id}.{s}" for s in steps],
              "timeout": cfg.timeout, "last_progress": watch.last_what,
              "restart": int(os.environ.get("SLURM_RESTART_COUNT") or 0),
              **analysis, "timings": times, "ranks": ranks}
    write_report(cfg, report, ranks)
    times["stacks_in_record"] = time.time()
    say(f"no progress for {cfg.timeout} s (last: {watch.last_what}); stacks of "
        f"{len(ranks)} rank(s): {cfg.directory / 'stacks.txt'}")
    say(analysis["summary"])
    for hint in analysis["fix"]:
        say(f"fix: {hint}")
    (cfg.directory / "hung").write_text(analysis["summary"] + "\n")
    say(f"cancelling step{'s' * (len(steps) > 1)} {', '.join(report['steps'])}")
    times["cancel_sent"] = time.time()
    subprocess.run(["scancel", *report["steps"]], capture_output=True, text=True, timeout=60)
    report["timings"] = times
    write_report(cfg, report, ranks)


def watch(cfg: Config, clock=time.monotonic, sleep=time.sleep) -> int:
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    files = output_files()
    p = Progress(cfg.timeout, clock(), heartbeats=read_heartbeats(cfg.heartbeat_dir),
                 sizes=output_sizes(files))
    say(f"watching: no progress for {cfg.timeout} s stops the job (progress: heartbeats in "
        f"{cfg.heartbeat_dir}, the output's growth"
        f"{', NCCL flight recorders where NCCL runs' if os.environ.get('TORCH_NCCL_DEBUG_INFO_PIPE_FILE') else ''})")
    baseline: dict[int, int] | None = None
    polls = 0
    while not stop["now"]:
        sleep(cfg.poll)
        polls += 1
        now = clock()
        if p.observe(now, read_heartbeats(cfg.heartbeat_dir), output_sizes(files)):
            baseline = None
        silence = p.silence(now)
        if silence < cfg.timeout / 2 or stop["now"]:
            continue
        if baseline is None and nccl_in_use(cfg):
            steps = program_steps(cfg.job_id)
            if steps:  # half the timeout silent: the flight recorders' count, to compare later
                baseline = fr_completed(run_dump(cfg, steps, cfg.directory / "probe", stacks=False))
        if silence < cfg.timeout or stop["now"]:
            continue
        t_detect = time.time()
        times = {"last_progress": t_detect - silence, "deadline": t_detect - silence + cfg.timeout,
                 "detected": t_detect}
        steps = program_steps(cfg.job_id)
        if not steps:
            say(f"no progress for {int(silence)} s, but no step of the program is running (the "
                "batch script itself is busy): nothing to cancel; watching on")
            p.last, p.last_what = now, "a pause between steps"
            continue
        ranks = run_dump(cfg, steps, cfg.directory / "nodes")
        now_fr = fr_completed(ranks)
        if baseline and any(v > baseline.get(k, v) for k, v in now_fr.items()):
            p.last, p.last_what, baseline = clock(), "an NCCL collective completed", None
            continue
        handle_hang(cfg, p, steps, ranks, times)
        break
    _write_usage(cfg, polls)
    return 0


def _write_usage(cfg: Config, polls: int) -> None:
    """The watcher's own cost (docs/benchmarks.md): CPU seconds over its polls."""
    t = os.times()
    try:
        (cfg.directory / "watch.json").write_text(json.dumps(
            {"polls": polls, "cpu_user_s": t.user, "cpu_system_s": t.system,
             "poll_s": cfg.poll}) + "\n")
    except OSError:
        pass


def dump_main(job: str, steps: str, out: str, stacks: bool) -> int:
    """The per-node task of the dump step."""
    import socket

    from hpcjobs.runners.stacks import node_ranks
    from hpcjobs.runs import atomic_write

    ranks = node_ranks(job, set(steps.split(",")), stacks=stacks)
    host = socket.gethostname()
    atomic_write(Path(out) / f"{host}.json", json.dumps({"host": host, "ranks": ranks}) + "\n")
    return 0


USAGE = ("usage: python -m hpcjobs.runners.sentinel watch\n"
         "       python -m hpcjobs.runners.sentinel dump --job JOBID --steps N[,N] --out DIR "
         "[--no-stacks]")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["watch"]:
        try:
            cfg = Config.from_env()
        except (KeyError, ValueError) as e:
            say(f"not started: {e} (HPCJOBS_HANG_TIMEOUT, HPCJOBS_SENTINEL_DIR; see "
                "docs/runtime-checks.md)")
            return 2
        if not cfg.timeout:
            return 0
        return watch(cfg)
    if argv[:1] == ["dump"]:
        pairs = [a for a in argv[1:] if a != "--no-stacks"]
        opts = dict(zip(pairs[::2], pairs[1::2]))
        if not {"--job", "--steps", "--out"} <= set(opts):
            print(USAGE, file=sys.stderr)
            return 2
        return dump_main(opts["--job"], opts["--steps"], opts["--out"], "--no-stacks" not in argv)
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
