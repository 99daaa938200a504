"""What the preflight costs: the same 3-node torch job with and without --preflight, interleaved.

    python benchmarks/preflight_cost.py [--runs 3] [--nodes 3]

Each run is a real `hpcjobs submit train --wait` on the sandbox (examples/train_ddp.py, one
epoch of one step, so the job is mostly start-up). Printed per pair: submit-to-end seconds
without and with, the preflight's own wall time (from the batch node's first srun to its
decision), the slowest node's framework import inside it, and what the preflight adds beyond
that import. Medians at the end. Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one(preflight: bool, nodes: int, runs_dir: str) -> dict:
    env = {**os.environ, "HPCJOBS_RUNS_DIR": runs_dir}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "hpcjobs", "submit", "train", "--nodes", str(nodes),
                        *(["--preflight"] if preflight else []), "--wait", "--json", "--",
                        "examples/train_ddp.py", "--epochs", "1", "--steps-per-epoch", "1"],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    total = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"job failed: {p.stdout}{p.stderr}")
    run = Path(json.loads(p.stdout.splitlines()[0])["run_dir"])
    meta = json.loads((run / "meta.json").read_text())
    pf = (meta.get("preflight") or [{}])[-1]
    return {"total": total, "wall": pf.get("wall_s"), "import": pf.get("import_s")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=3)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(a.runs):
            off, on = one(False, a.nodes, d), one(True, a.nodes, d)
            beyond = on["wall"] - on["import"]
            rows.append((off["total"], on["total"], on["wall"], on["import"], beyond))
            print(f"run {i + 1}: without {off['total']:.1f} s, with {on['total']:.1f} s; preflight "
                  f"{on['wall']:.1f} s of which framework import {on['import']:.1f} s, beyond "
                  f"it {beyond:.1f} s", flush=True)
    med = [statistics.median(c) for c in zip(*rows)]
    print(f"median of {a.runs}: without {med[0]:.1f} s, with {med[1]:.1f} s (+{med[1] - med[0]:.1f}"
          f" s); preflight {med[2]:.1f} s, framework import {med[3]:.1f} s, beyond it {med[4]:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
