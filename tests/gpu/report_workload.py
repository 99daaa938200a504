"""A GPU job with a known shape, for its receipt to be checked (tests/gpu/run_report_gpu.sh).

``--seconds S``: busy (bf16 matmuls) for 40% of S, idle (sleeping, memory kept) for 35%, busy
again with a 16 GiB block more for the last 25%; prints one JSON line (and --json FILE) with
torch.cuda.max_memory_reserved/allocated and each phase's start and end.
``--steps N``: N matmuls, timed (the monitor's overhead: the program's own throughput).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

N = 8192


def matmuls(a, b, *, seconds: float | None = None, steps: int | None = None) -> tuple[int, float]:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    done = 0
    while True:
        for _ in range(20):
            a @ b
        done += 20
        torch.cuda.synchronize()
        took = time.perf_counter() - t0
        if (seconds is not None and took >= seconds) or (steps is not None and done >= steps):
            return done, took


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--json")
    args = ap.parse_args()
    dev = torch.device("cuda", 0)
    torch.cuda.set_device(dev)
    a = torch.randn(N, N, device=dev, dtype=torch.bfloat16)
    b = torch.randn(N, N, device=dev, dtype=torch.bfloat16)
    out: dict = {"device": torch.cuda.get_device_name(dev), "n": N}
    if args.steps:
        matmuls(a, b, steps=40)  # warm-up (cuBLAS heuristics, clocks)
        done, took = matmuls(a, b, steps=args.steps)
        out.update(steps=done, seconds=took, tflops=2 * N**3 * done / took / 1e12)
    else:
        s = args.seconds or 60.0
        phases = []
        t = time.time()
        done, _ = matmuls(a, b, seconds=0.40 * s)
        phases.append({"phase": "busy", "start": t, "end": time.time(), "steps": done})
        t = time.time()
        time.sleep(0.35 * s)
        phases.append({"phase": "idle", "start": t, "end": time.time()})
        big = torch.empty(16 * 2**30, dtype=torch.uint8, device=dev).fill_(1)
        t = time.time()
        done, _ = matmuls(a, b, seconds=0.25 * s)
        phases.append({"phase": "busy+16GiB", "start": t, "end": time.time(), "steps": done})
        del big
        out["phases"] = phases
    out.update(max_memory_reserved=torch.cuda.max_memory_reserved(dev),
               max_memory_allocated=torch.cuda.max_memory_allocated(dev))
    line = json.dumps(out)
    print("REPORT-WORKLOAD " + line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
