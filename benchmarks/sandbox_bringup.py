"""Sandbox figures: bring-up and teardown with 3 and 8 nodes, srun latency, an 8-node job;
with --accounting also bring-up and teardown with MariaDB + slurmdbd, their memory, and how
soon a finished job reaches sacct.

    python benchmarks/sandbox_bringup.py [--repeat 3] [--srun-repeat 10] [--force]
    python benchmarks/sandbox_bringup.py --accounting --no-jobs   # up/down with and without

Runs as root and RESTARTS the machine's sandbox (there is only one): it refuses while jobs are
queued unless --force, and leaves a sandbox up as it found it (same node count) or down. Each
figure is the median wall time of the CLI command as a user runs it (Python start-up
included), with the bring-up time the sandbox itself measured (first daemon to N idle nodes)
beside it, and ratios against the 3-node / 1-node baselines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
HPCJOBS = [PY, "-m", "hpcjobs"]
ROOT = Path(__file__).resolve().parent.parent


def run(argv, **kw) -> float:
    """Wall time in ms of argv (must exit 0)."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, **kw)
    ms = (time.perf_counter() - t0) * 1000
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return ms


def meta() -> dict:
    from hpcjobs.sandbox.layout import layout

    try:
        return json.loads(layout().meta.read_text())
    except (OSError, ValueError):
        return {}


def row(label: str, ms: float, base: float | None = None, extra: str = "") -> None:
    ratio = f"{ms / base:6.2f}x" if base else " " * 7
    print(f"  {label:<44} {ms:8.1f} ms {ratio}  {extra}")


def cycle(nodes: int, repeat: int, accounting: bool = False) -> tuple[float, float, float]:
    """Median (up ms, internal bring-up ms, down ms) over ``repeat`` cold starts."""
    ups, inner, downs = [], [], []
    for _ in range(repeat):
        ups.append(run([*HPCJOBS, "sandbox", "up", "--nodes", str(nodes),
                        *(["--accounting"] if accounting else [])]))
        inner.append(meta().get("bringup_s", 0) * 1000)
        downs.append(run([*HPCJOBS, "sandbox", "down"]))
    return statistics.median(ups), statistics.median(inner), statistics.median(downs)


def rss_mb(names: tuple[str, ...]) -> float:
    """Resident memory (MB) of the sandbox daemons with these names."""
    from hpcjobs.sandbox import daemons
    from hpcjobs.sandbox.layout import layout

    total = 0
    for d in daemons.load(layout())[0]:
        if d.name in names and d.alive():
            for line in Path(f"/proc/{d.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def accounting_extra() -> None:
    """With MariaDB + slurmdbd up: their memory, and how soon a finished job reaches sacct."""
    run([*HPCJOBS, "sandbox", "up", "--nodes", "3", "--accounting"])
    mem = rss_mb(("mariadbd", "slurmdbd"))
    ctl = rss_mb(("slurmctld",))
    idle()
    jid = subprocess.run(["sbatch", "--parsable", "-J", NAME, "-o", "/dev/null", "--wrap", "true"],
                         capture_output=True, text=True, check=True).stdout.strip()
    while "JobState=COMPLETED" not in subprocess.run(
            ["scontrol", "show", "job", "-o", jid], capture_output=True, text=True).stdout:
        time.sleep(0.05)
    t0 = time.perf_counter()
    while "COMPLETED" not in subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", jid],
                                            capture_output=True, text=True).stdout:
        if time.perf_counter() - t0 > 60:
            sys.exit(f"job {jid} did not reach sacct within 60 s")
        time.sleep(0.1)
    lag = (time.perf_counter() - t0) * 1000
    run([*HPCJOBS, "sandbox", "down"])
    print(f"  memory: mariadbd + slurmdbd {mem:.0f} MB resident (slurmctld {ctl:.0f} MB); "
          f"a job COMPLETED in scontrol is COMPLETED in sacct {lag:.0f} ms later")


NAME = "hpcjobs-bench"  # every benchmark job has this name; others' jobs are counted apart


def idle() -> None:
    """Wait until every node is idle, so that each figure is one job alone on the sandbox."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True,
                                text=True).stdout.split()
        if states and all(s == "idle" for s in states):
            return
        time.sleep(0.05)


def srun_median(args: list[str], repeat: int) -> float:
    idle()
    run(["srun", "-J", NAME, *args])  # warm-up
    samples = []
    for _ in range(repeat):
        idle()
        samples.append(run(["srun", "-J", NAME, *args]))
    return statistics.median(samples)


def other_jobs() -> int:
    """Jobs of other users of the sandbox that finished meanwhile (they may add queueing)."""
    from hpcjobs.sandbox.layout import layout

    try:
        lines = (layout().log / "jobcomp.txt").read_text(errors="replace").splitlines()
    except OSError:
        return 0
    return sum(f" Name={NAME} " not in ln for ln in lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="cold starts per node count")
    ap.add_argument("--srun-repeat", type=int, default=10)
    ap.add_argument("--force", action="store_true", help="restart even with jobs queued")
    ap.add_argument("--accounting", action="store_true",
                    help="also up/down with MariaDB + slurmdbd (mariadb-server, slurmdbd)")
    ap.add_argument("--no-jobs", action="store_true",
                    help="only the 3-node cold starts (and --accounting's figures)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the sandbox needs it")
    from hpcjobs.sandbox import lifecycle

    before = lifecycle.health()
    if before.up and not a.force:
        queued = subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip()
        if queued:
            sys.exit("jobs are queued on the sandbox; rerun with --force to restart it anyway")
    mpi = shutil.which("srun") and subprocess.run([PY, "-c", "import mpi4py"]).returncode == 0

    print(f"sandbox bring-up ({os.cpu_count()} cores, {Path('/proc/version').read_text().split()[2]}, "
          f"python {sys.version.split()[0]}; load average {os.getloadavg()[0]:.1f}; medians)")
    run([*HPCJOBS, "sandbox", "down"])
    if a.accounting:
        # Interleaved, so that both see the same load on a shared machine.
        plain, acct = [], []
        for _ in range(a.repeat):
            plain.append(cycle(3, 1))
            acct.append(cycle(3, 1, accounting=True))
        up3, in3, down3 = (statistics.median(x) for x in zip(*plain))
        upa, ina, downa = (statistics.median(x) for x in zip(*acct))
    else:
        up3, in3, down3 = cycle(3, a.repeat)
    print(f" cold start, {a.repeat} runs each (CLI wall time; 'inside' = first daemon to all idle)")
    row("hpcjobs sandbox up --nodes 3 (baseline)", up3, extra=f"inside {in3:6.1f} ms")
    if a.accounting:
        row("hpcjobs sandbox up --nodes 3 --accounting", upa, up3, extra=f"inside {ina:6.1f} ms")
        row("hpcjobs sandbox down (3 nodes, baseline)", down3)
        row("hpcjobs sandbox down (3 nodes, accounting)", downa, down3)
        accounting_extra()
    if a.no_jobs:
        if before.up:
            run([*HPCJOBS, "sandbox", "up", "--nodes", str(before.nodes)])
            print(f"sandbox restored: {before.nodes} nodes up")
        return
    up8, in8, down8 = cycle(8, a.repeat)
    row("hpcjobs sandbox up --nodes 8", up8, up3, extra=f"inside {in8:6.1f} ms")
    row("hpcjobs sandbox down (3 nodes, baseline)", down3)
    row("hpcjobs sandbox down (8 nodes)", down8, down3)

    print(f" jobs on an otherwise idle sandbox, {a.srun_repeat} runs each")
    run([*HPCJOBS, "sandbox", "up", "--nodes", "3"])
    s1 = srun_median(["-N1", "true"], a.srun_repeat)
    row("srun -N1 true (3-node sandbox, baseline)", s1)
    row("srun -N3 true (3-node sandbox)", srun_median(["-N3", "true"], a.srun_repeat), s1)
    others = other_jobs()
    run([*HPCJOBS, "sandbox", "down"])
    run([*HPCJOBS, "sandbox", "up", "--nodes", "8"])
    row("srun -N8 true (8-node sandbox)", srun_median(["-N8", "true"], a.srun_repeat), s1)
    idle()
    hosts = subprocess.run(["srun", "-J", NAME, "-N8", "hostname"], capture_output=True,
                           text=True, cwd=ROOT)
    print(f"  8-node srun hostname: {' '.join(sorted(hosts.stdout.split(), key=lambda h: int(h[4:])))}")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        if mpi:
            prog = Path(tmp) / "allreduce.py"
            prog.write_text("from mpi4py import MPI\nc = MPI.COMM_WORLD\n"
                            "s = c.allreduce(c.Get_rank())\n"
                            "print(f'{c.Get_rank()}/{c.Get_size()} sum={s}') if c.Get_rank() == 0 else None\n")
            idle()
            out = subprocess.run(["srun", "-J", NAME, "-N8", "--mpi=pmix", PY, str(prog)],
                                 capture_output=True, text=True, cwd=ROOT).stdout.strip()
            ms = srun_median(["-N8", "--mpi=pmix", PY, str(prog)], max(3, a.srun_repeat // 3))
            row("srun -N8 --mpi=pmix python allreduce.py", ms, s1, extra=f"rank 0 printed: {out}")
        script = Path(tmp) / "job.sbatch"
        script.write_text("#!/bin/bash\n#SBATCH -N8 -t 1\nsrun hostname\n")
        idle()
        t0 = time.perf_counter()
        jid = subprocess.run(["sbatch", "--parsable", "-J", NAME, "-o", f"{tmp}/out", str(script)],
                             capture_output=True, text=True, check=True).stdout.strip()
        while "JobState=COMPLETED" not in (st := subprocess.run(
                ["scontrol", "show", "job", "-o", jid], capture_output=True, text=True).stdout):
            if any(f"JobState={s}" in st for s in ("FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT")):
                sys.exit(f"8-node batch job {jid} failed: {st}")
            time.sleep(0.05)
        ms = (time.perf_counter() - t0) * 1000
        row("8-node sbatch, submit to COMPLETED (50 ms poll)", ms, s1,
            extra=f"{len(Path(tmp, 'out').read_text().split())} hosts printed")
    others += other_jobs()
    if others:
        print(f"  NOTE: {others} jobs of other users ran meanwhile; the figures may include queueing")

    run([*HPCJOBS, "sandbox", "down"])
    if before.up:
        run([*HPCJOBS, "sandbox", "up", "--nodes", str(before.nodes)])
        print(f"sandbox restored: {before.nodes} nodes up")


if __name__ == "__main__":
    main()
