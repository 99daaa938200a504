#!/usr/bin/env bash
# The hang sentinel's NCCL half on GPUs: torch's flight recorder pipe and dump as the sentinel
# uses them (the sandbox is CPU/gloo and cannot check this). No Slurm needed.
# Usage: tests/gpu/run_sentinel_gpu.sh [GPUS]   (default: 1; 2 or more also hang rank GPUS-1
# and check that it is named the straggler). Needs torch with CUDA and py-spy (pip install py-spy).
# About 30 s. Prints PASS/FAIL per check; exit 0 only if all pass.
set -euo pipefail
cd "$(dirname "$0")/../.."
GPUS=${1:-1}
PY=${PYTHON:-python3}
"$PY" -c "import torch; print('torch', torch.__version__, 'NCCL', '.'.join(map(str, torch.cuda.nccl.version())),
      torch.cuda.device_count(), 'x', torch.cuda.get_device_name(0))"
"$PY" -m pip show -q py-spy >/dev/null 2>&1 || "$PY" -m pip install -q py-spy
exec "$PY" tests/gpu/sentinel_nccl.py --gpus "$GPUS"
