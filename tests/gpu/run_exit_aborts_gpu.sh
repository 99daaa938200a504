#!/usr/bin/env bash
# hpcjobs.finish over NCCL: 2 ranks on one 2-GPU machine through `python -m hpcjobs.launch`
# (srun's variables set by benchmarks/exit_aborts.py), each torch example run RUNS times;
# prints how many runs had a rank exit non-zero. DeepSpeed also with --plain-exit (how the
# examples ended before hpcjobs.finish) as the baseline side by side.
#
# Offline machines: .whl/deepspeed/ and .whl/megatron/ as for the other GPU scripts.
# Usage: tests/gpu/run_exit_aborts_gpu.sh [RUNS]   (about 20 s per run of ds_zero3 on 2x H100)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-3}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
for d in deepspeed megatron; do
    if ! "$PY" -c "import ${d/megatron/megatron.core}" 2>/dev/null && [ -d ".whl/$d" ]; then
        "$PY" -m pip install -q --no-deps --no-index .whl/$d/*.whl 2>&1 | grep -v -i warn || true
    fi
done
"$PY" -c "import torch; print('torch', torch.__version__, 'NCCL', '.'.join(map(str, torch.cuda.nccl.version())),
      torch.cuda.device_count(), 'x', torch.cuda.get_device_name(0))"
"$PY" -c "import json; from hpcjobs.runners.deepspeed import build_config
json.dump(build_config(precision='bf16'), open('/tmp/ds_bf16.json', 'w'))"
ea() { "$PY" benchmarks/exit_aborts.py --runs "$RUNS" --ranks 2 "$@"; }
HPCJOBS_KIND=deepspeed ea --plain-exit -- examples/ds_zero3.py --steps 3 --ds-config /tmp/ds_bf16.json
HPCJOBS_KIND=deepspeed ea -- examples/ds_zero3.py --steps 3 --ds-config /tmp/ds_bf16.json
HPCJOBS_KIND=train ea -- examples/train_ddp.py --epochs 1 --steps-per-epoch 5
HPCJOBS_KIND=megatron ea -- examples/megatron_parallel_state.py --tensor-model-parallel-size 2
HPCJOBS_KIND=megatron ea -- examples/megatron_gpt_tp.py --tensor-model-parallel-size 2 --steps 30
