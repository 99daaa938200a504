#!/usr/bin/env bash
# The jax kind's program on one machine's GPUs: examples/jax_allreduce.py with one process per
# GPU, each started through hpcjobs.launch with the SLURM_* variables srun would give it (no
# Slurm here), HPCJOBS_KIND=jax as the batch script sets it. Three runs:
#   visible  all GPUs visible to every process; JAX takes device SLURM_LOCALID (the default)
#   narrow   HPCJOBS_GPU_BIND=narrow: each process sees one GPU, the hook sets JAX_LOCAL_DEVICE_IDS=0
#   mesh     HPCJOBS_JAX_MESH=data=NGPUS (the kind's --mesh), visible binding
# Each must print, on every process, "backend gpu", one local device, NGPUS global devices and
# a psum that is OK, and a loss that falls; --bench-mb times a psum per device (busbw needs 2+
# GPUs). Results (at most 8 files) go to $OUT: run.log, visible.txt, narrow.txt, mesh.txt.
#
# Needs: a Python with jax (CUDA build, e.g. jax 0.11.2 with CUDA 13) and numpy; python-hostlist
# importable or its wheel in .whl/ (hpcjobs' one runtime dependency the launcher's profile
# parser needs). No network.
# Usage (repository root):  bash tests/gpu/run_jax_gpu.sh    [NGPUS=N BENCH_MB=64 STEPS=20 PYTHON=python3]
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
OUT=${OUT:-/tmp/hpcjobs-gpu-out}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/hpcjobs-jax-gpu.XXXXXX)
PY=${PYTHON:-python3}
NGPUS=${NGPUS:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')}
BENCH_MB=${BENCH_MB:-64}
STEPS=${STEPS:-20}
# NVLink multicast stays off on shared machines (the workplace's rule).
export NCCL_NVLS_ENABLE=0
# One host, no network: NCCL's bootstrap on loopback; the coordinator is 127.0.0.1 (profile).
export NCCL_SOCKET_IFNAME=lo
start=$(date +%s)

main() {
say() { printf '\n=== [%4ss] %s\n' "$(($(date +%s) - start))" "$*"; }

say "machine"
date -u +%Y-%m-%dT%H:%M:%SZ
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
"$PY" -c 'import jax, jaxlib, numpy; print("jax", jax.__version__, "jaxlib", jaxlib.__version__, "numpy", numpy.__version__)' \
    || { echo "no jax for $PY"; return 2; }
[ "$NGPUS" -ge 1 ] 2>/dev/null || { echo "no GPU found (NGPUS=$NGPUS)"; return 2; }

if ! "$PY" -c 'import hostlist' 2>/dev/null; then
    say "python-hostlist for the launcher's profile parser"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" .whl/python_hostlist-*.whl \
        || { echo "python-hostlist is not importable and .whl/python_hostlist-*.whl is missing"; return 2; }
fi
export PYTHONPATH="$WORK/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# A one-node profile for this machine: its GPUs, the coordinator on 127.0.0.1.
HOST=$(hostname -s)
export HPCJOBS_CLUSTER=$WORK/cluster.toml
cat >"$HPCJOBS_CLUSTER" <<EOF
name = "gpu-box"
[fabric]
kind = "ethernet"
rate_gbps = 100
[[partitions]]
name = "local"
nodes = "$HOST"
default = true
[[nodes]]
names = "$HOST"
addresses = "127.0.0.1"
cpus = $(nproc)
memory_mb = 100000
[nodes.gpu]
type = "h200"
count = $NGPUS
memory_gb = 141
compute_capability = "9.0"
EOF

# run TAG STEP [VAR=VALUE...]: NGPUS processes of one step, as srun would start them.
run() {
    local tag=$1 step=$2 r rc=0
    shift 2
    local pids=()
    local t0
    t0=$(date +%s%N)
    for ((r = 0; r < NGPUS; r++)); do
        env "$@" HPCJOBS_KIND=jax SLURM_JOB_ID=4242 SLURM_STEP_ID="$step" SLURM_PROCID=$r \
            SLURM_LOCALID=$r SLURM_NODEID=0 SLURM_NTASKS="$NGPUS" SLURM_STEP_NUM_TASKS="$NGPUS" \
            SLURM_NNODES=1 SLURM_STEP_NUM_NODES=1 SLURM_TASKS_PER_NODE="$NGPUS" \
            SLURM_STEP_TASKS_PER_NODE="$NGPUS" SLURM_JOB_NODELIST="$HOST" \
            SLURM_STEP_NODELIST="$HOST" SLURMD_NODENAME="$HOST" \
            "$PY" -m hpcjobs.launch -- "$PY" examples/jax_allreduce.py --steps "$STEPS" \
            --bench-mb "$BENCH_MB" >"$WORK/$tag.rank$r.log" 2>&1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=$?; done
    echo "wall $((($(date +%s%N) - t0) / 1000000)) ms for $NGPUS processes (start to all exited), exit $rc"
    for ((r = 0; r < NGPUS; r++)); do
        echo "--- process $r:"
        grep -v -E '^\s*$' "$WORK/$tag.rank$r.log" | tail -n 40
    done
    # every process: gpu backend, one local device, NGPUS global, psum OK; the loss fell
    local ok
    ok=$(cat "$WORK/$tag".rank*.log | grep -c -E "local devices 1, global devices $NGPUS, backend gpu")
    local sums
    sums=$(cat "$WORK/$tag".rank*.log | grep -c -E "^process [0-9]+: psum over $NGPUS devices .*: OK$")
    local first last
    first=$(grep -m1 -oE '^step 1/[0-9]+ loss [0-9.e+-]+' "$WORK/$tag.rank0.log" | awk '{print $4}')
    last=$(grep -oE "^step $STEPS/[0-9]+ loss [0-9.e+-]+" "$WORK/$tag.rank0.log" | awk '{print $4}')
    local fell=0
    [ -n "$first" ] && [ -n "$last" ] && "$PY" -c "import sys; sys.exit(not $last < $first * 0.1)" && fell=1
    echo "check $tag: $ok/$NGPUS processes on gpu with 1 local device, $sums/$NGPUS psums OK, loss $first -> $last (fell: $fell)"
    [ "$rc" = 0 ] && [ "$ok" = "$NGPUS" ] && [ "$sums" = "$NGPUS" ] && [ "$fell" = 1 ]
}

say "the launcher's environment for process 0 (--explain)"
env HPCJOBS_KIND=jax SLURM_JOB_ID=4242 SLURM_STEP_ID=0 SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODEID=0 \
    SLURM_NTASKS="$NGPUS" SLURM_NNODES=1 SLURM_TASKS_PER_NODE="$NGPUS" SLURM_JOB_NODELIST="$HOST" \
    SLURMD_NODENAME="$HOST" "$PY" -m hpcjobs.launch --explain -- true

status=0
say "visible: $NGPUS processes, all GPUs visible, JAX picks SLURM_LOCALID"
run visible 1 | tee "$OUT/visible.txt"; [ "${PIPESTATUS[0]}" = 0 ] || status=1
say "narrow: one GPU per process (HPCJOBS_GPU_BIND=narrow), JAX_LOCAL_DEVICE_IDS=0"
run narrow 2 HPCJOBS_GPU_BIND=narrow | tee "$OUT/narrow.txt"; [ "${PIPESTATUS[0]}" = 0 ] || status=1
say "mesh: HPCJOBS_JAX_MESH=data=$NGPUS"
run mesh 3 HPCJOBS_JAX_MESH="data=$NGPUS" | tee "$OUT/mesh.txt"; [ "${PIPESTATUS[0]}" = 0 ] || status=1
say "done (exit $status); results in $OUT"
grep -h -E "^(check|wall|psum [0-9]|times:)" "$OUT"/visible.txt "$OUT"/narrow.txt "$OUT"/mesh.txt
return $status
}

main "$@" 2>&1 | tee "$OUT/run.log"
exit "${PIPESTATUS[0]}"
