#!/usr/bin/env bash
# The preflight's node checks on a real GPU machine (not yet run anywhere): NVML's GPU checks
# (count, model, ECC, retirement/remapping, XIDs where /dev/kmsg is readable, other processes'
# memory) and NCCL's own init log parsed by the fabric-truth step, one rank (the preflight runs
# one task per node). Slurm is not needed: the SLURM_* variables srun would give are set by hand,
# as tests/gpu/record_nccl_logs.sh does, and a one-node profile names this host and its GPUs.
# Out ($OUT): step.out (the report lines), decide.txt (what the job would print), profile.toml.
# Usage: bash tests/gpu/run_preflight_gpu.sh      (needs torch with CUDA and nvidia-ml-py)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
OUT=${OUT:-/tmp/hpcjobs-gpu-out}
PY=${PYTHON:-python3}
mkdir -p "$OUT/pf"
HOST=$(hostname -s)
NGPUS=$(nvidia-smi -L | wc -l)
MODEL=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
cat >"$OUT/profile.toml" <<TOML
name = "gpuhost"
[fabric]
kind = "ethernet"
interface = "lo"
rate_gbps = 10
[[partitions]]
name = "gpu"
nodes = "$HOST"
[[nodes]]
names = "$HOST"
addresses = "127.0.0.1"
cpus = $(nproc)
memory_mb = 1000
[nodes.gpu]
type = "gpu"
model = "$MODEL"
count = $NGPUS
memory_gb = 1
compute_capability = "9.0"
TOML
export HPCJOBS_CLUSTER="$OUT/profile.toml" HPCJOBS_KIND=train SLURM_GPUS_ON_NODE=$NGPUS \
    SLURM_JOB_ID=4444 SLURM_STEP_ID=0 SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODEID=0 \
    SLURM_NTASKS=1 SLURM_STEP_NUM_TASKS=1 SLURM_NNODES=1 SLURM_STEP_NUM_NODES=1 \
    SLURM_TASKS_PER_NODE=1 SLURM_STEP_TASKS_PER_NODE=1 SLURM_JOB_NODELIST="$HOST" \
    SLURM_STEP_NODELIST="$HOST" SLURMD_NODENAME="$HOST"
t0=$(date +%s.%N)
"$PY" -m hpcjobs.launch -- "$PY" -m hpcjobs.runners.preflight node --dir "$OUT/pf" -- \
    "$PY" -c pass >"$OUT/step.out" 2>"$OUT/step.err"
rc=$?
"$PY" -m hpcjobs.runners.preflight decide --dir "$OUT/pf" --step-out "$OUT/step.out" \
    --step-rc "$rc" --t0 "$t0" >"$OUT/decide.txt" 2>&1
echo "node step exit $rc, decide exit $?"; cat "$OUT/decide.txt"
