#!/usr/bin/env bash
# Megatron on GPUs without Slurm: 2 ranks on one 2-GPU machine, each started through
# `python -m hpcjobs.launch` with the SLURM_* variables srun would give it (one step, one node,
# two tasks), HPCJOBS_KIND=megatron. The launcher must turn them into RANK/LOCAL_RANK/WORLD_SIZE/
# MASTER_ADDR/MASTER_PORT, bind one GPU per task and set CUDA_DEVICE_MAX_CONNECTIONS=1; then
# examples/megatron_parallel_state.py checks the TP group over NCCL and examples/megatron_gpt_tp.py
# trains a small megatron-core GPTModel with TP=2 (local layers: no Apex, no Transformer Engine),
# in fp32 and then bf16 (or fp16 below compute capability 8.0), and must see the loss fall.
#
# Offline machines: put a megatron-core wheel for the machine's Python in .whl/megatron/ (see
# docs/megatron.md) and it is installed with --no-deps (torch, numpy and packaging must exist).
#
# Usage: tests/gpu/run_megatron_gpu.sh [STEPS]      (run from anywhere; exit 0 = all passed)
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${1:-30}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c "import megatron.core" 2>/dev/null; then
    whl=$(find .whl/megatron -name "megatron_core-*.whl" 2>/dev/null | head -1)
    if [ -z "$whl" ]; then
        echo "run_megatron_gpu: megatron-core is not installed and .whl/megatron/ has no wheel" >&2
        exit 2
    fi
    "$PY" -m pip install -q --no-deps --no-index "$whl"
fi
"$PY" - <<'EOF'
import torch, megatron.core
n = torch.cuda.device_count()
print(f"torch {torch.__version__}, megatron-core {megatron.core.__version__}, {n} GPU(s): "
      + ", ".join(torch.cuda.get_device_name(i) for i in range(n)))
if n < 2:
    raise SystemExit("run_megatron_gpu: needs 2 GPUs")
EOF

host=$(hostname -s)
# run2 NAME STEP PROG ARGS: the two tasks of step STEP of a 2-task, 1-node job, as srun sets them
# (each step gets its own MASTER_PORT from job id and step id).
run2() {
    local name=$1 step=$2; shift 2
    local pids=() rc=0
    for rank in 0 1; do
        env SLURM_JOB_ID=4242 SLURM_STEP_ID="$step" SLURM_PROCID=$rank SLURM_LOCALID=$rank \
            SLURM_NODEID=0 SLURM_STEP_NUM_TASKS=2 SLURM_STEP_NUM_NODES=1 SLURM_STEP_TASKS_PER_NODE=2 \
            SLURM_STEP_NODELIST="$host" SLURMD_NODENAME="$host" SLURM_NTASKS=2 SLURM_NNODES=1 \
            HPCJOBS_KIND=megatron MASTER_ADDR=127.0.0.1 \
            "$PY" -m hpcjobs.launch -- "$PY" "$@" >"/tmp/megatron-$name.$rank.log" 2>&1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=$?; done
    grep -v -i -E "warn|^\s*$" "/tmp/megatron-$name.0.log" | tail -n 40
    if [ "$rc" != 0 ]; then
        echo "--- rank 1 ($name) ---"; tail -n 20 "/tmp/megatron-$name.1.log"
    fi
    return "$rc"
}

echo "== launcher environment of rank 0 (dry run) =="
env SLURM_JOB_ID=4242 SLURM_STEP_ID=0 SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODEID=0 \
    SLURM_STEP_NUM_TASKS=2 SLURM_STEP_NUM_NODES=1 SLURM_STEP_TASKS_PER_NODE=2 \
    SLURM_STEP_NODELIST="$host" SLURMD_NODENAME="$host" HPCJOBS_KIND=megatron MASTER_ADDR=127.0.0.1 \
    "$PY" -m hpcjobs.launch --dry-run | grep -E "^(RANK|LOCAL_RANK|WORLD_SIZE|MASTER_PORT|CUDA_VISIBLE_DEVICES|CUDA_DEVICE_MAX_CONNECTIONS)="

status=0
echo "== parallel_state over NCCL, TP 2 =="
run2 ps 1 examples/megatron_parallel_state.py --tensor-model-parallel-size 2 || status=1
echo "== GPTModel TP 2, fp32, $STEPS steps =="
run2 fp32 2 examples/megatron_gpt_tp.py --tensor-model-parallel-size 2 --steps "$STEPS" --precision fp32 || status=1
echo "== GPTModel TP 2, auto precision (bf16 from CC 8.0), $STEPS steps =="
run2 auto 3 examples/megatron_gpt_tp.py --tensor-model-parallel-size 2 --steps "$STEPS" --precision auto || status=1
echo "run_megatron_gpu: $([ $status = 0 ] && echo PASSED || echo FAILED)"
exit $status
