"""A job that says what it used, for its receipt to be checked against (test_report.py).

Each rank burns CPU for a while (rank 0 only), then fills MB + 100 x rank megabytes (touched,
so resident) and holds them; at the end it prints one JSON line with its own figures: CPU
seconds (getrusage), VmRSS and VmHWM from /proc/self/status. Optionally rank 0 first kills
its node's monitor (--kill-monitor DIR: the monitor directory holding <jobid>/<node>.jsonl):
the monitor's death must not fail the job.

    python tests/integration/receipt_job.py MB BURN_SECONDS HOLD_SECONDS [--kill-monitor DIR]
"""

import json
import os
import resource
import signal
import sys
import time


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def kill_monitor(directory: str, node: str) -> int | None:
    """SIGKILL this node's monitor (its pid is in its samples' start line)."""
    path = os.path.join(directory, os.environ.get("SLURM_JOB_ID", ""), f"{node}.jsonl")
    for _ in range(100):
        try:
            with open(path) as f:
                first = json.loads(f.readline())
            os.kill(first["pid"], signal.SIGKILL)
            return first["pid"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.1)
    return None


def main() -> int:
    mb, burn, hold = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    rank = int(os.environ.get("SLURM_PROCID", "0"))
    node = os.environ.get("SLURMD_NODENAME", "")
    killed = None
    if "--kill-monitor" in sys.argv and rank == 0:
        killed = kill_monitor(sys.argv[sys.argv.index("--kill-monitor") + 1], node)
    if rank == 0:
        end, x = time.monotonic() + burn, 0
        while time.monotonic() < end:
            x += 1
    size = (mb + 100 * rank) * 2**20
    block = bytearray(b"\x01") * size  # every page written: resident
    time.sleep(hold)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print("RECEIPT-JOB " + json.dumps({
        "rank": rank, "node": node, "bytes": len(block), "cpu_s": ru.ru_utime + ru.ru_stime,
        "vmrss": status_kb("VmRSS") * 1024, "vmhwm": status_kb("VmHWM") * 1024,
        "killed_monitor": killed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
