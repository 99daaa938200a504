"""Side by side: bench-allreduce (torch.distributed through hpcjobs.launch) vs nccl-tests'
all_reduce_perf, and the same bench with NCCL_P2P_DISABLE=1. Used by run_bench_gpu.sh.

    python tests/gpu/compare_allreduce.py --bench B.json --nccl N.txt \\
        [--bench-p2poff B2.json] [--nccl-p2poff N2.txt] --md OUT.md --json OUT.json

busbw columns are nccl-tests' (in-place for nccl-tests: torch's all_reduce is in place).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hpcjobs.bench.report import human, parse_nccl_tests


def load_bench(path: str | None) -> dict[int, dict]:
    if not path or not Path(path).exists():
        return {}
    return {r["size"]: r for r in json.loads(Path(path).read_text())["rows"]}


def load_nccl(path: str | None) -> dict[int, dict]:
    if not path or not Path(path).exists():
        return {}
    return {r["size"]: r for r in parse_nccl_tests(Path(path).read_text())}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bench", required=True)
    p.add_argument("--nccl", required=True)
    p.add_argument("--bench-p2poff")
    p.add_argument("--nccl-p2poff")
    p.add_argument("--md", required=True)
    p.add_argument("--json", required=True)
    a = p.parse_args()
    bench, nccl = load_bench(a.bench), load_nccl(a.nccl)
    boff, noff = load_bench(a.bench_p2poff), load_nccl(a.nccl_p2poff)
    sizes = sorted(set(bench) | set(nccl))
    rows = []
    for s in sizes:
        b = bench.get(s, {}).get("busbw")
        n = nccl.get(s, {}).get("busbw")
        bo = boff.get(s, {}).get("busbw")
        no = noff.get(s, {}).get("busbw")
        rows.append({"size": s, "nccl_tests_busbw": n, "bench_busbw": b, "ratio": ratio(b, n),
                     "bench_us": bench.get(s, {}).get("time_us"),
                     "nccl_tests_us": nccl.get(s, {}).get("time_us"),
                     "bench_p2poff_busbw": bo, "p2poff_vs_default": ratio(bo, b),
                     "nccl_tests_p2poff_busbw": no})
    head = ("| size | nccl-tests busbw (GB/s) | bench busbw (GB/s) | bench/nccl-tests | "
            "bench time (us) | nccl-tests time (us) | bench P2P off (GB/s) | P2P off / default | "
            "nccl-tests P2P off (GB/s) |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {human(r['size'])} | {fmt(r['nccl_tests_busbw'])} | {fmt(r['bench_busbw'])} | "
                     f"{fmt(r['ratio'])} | {fmt(r['bench_us'], '.1f')} | {fmt(r['nccl_tests_us'], '.1f')} | "
                     f"{fmt(r['bench_p2poff_busbw'])} | {fmt(r['p2poff_vs_default'])} | "
                     f"{fmt(r['nccl_tests_p2poff_busbw'])} |")
    text = "\n".join(lines) + "\n"
    Path(a.md).write_text(text)
    Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(text)
    return 0 if bench and nccl else 1


if __name__ == "__main__":
    sys.exit(main())
