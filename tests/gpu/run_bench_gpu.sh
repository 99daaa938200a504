#!/usr/bin/env bash
# bench-allreduce on one node's GPUs through hpcjobs.launch, beside nccl-tests' all_reduce_perf
# built against the NCCL that the image's PyTorch ships, and the same bench with
# NCCL_P2P_DISABLE=1 (what a wrong environment costs). No Slurm here: each task gets the
# SLURM_* variables srun would give it. Results (at most 8 files) go to $OUT:
#   run.log, compare.md, compare.json, bench-default.json, bench-default.png,
#   bench-p2poff.json, nccl-tests.txt, nccl-tests-p2poff.txt
#
# Needs, carried into the repository root (git-ignored .whl/):
#   .whl/nccl-tests/                          nccl-tests source (git archive of NVIDIA/nccl-tests)
#   .whl/python_hostlist-*-py3-none-any.whl   (hpcjobs' one runtime dependency not in the image)
# Usage (repository root):  bash tests/gpu/run_bench_gpu.sh   [NGPUS=2 MAX_SIZE=1G ITERS=20]
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
OUT=${OUT:-/tmp/hpcjobs-gpu-out}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/hpcjobs-gpu.XXXXXX)

NGPUS=${NGPUS:-2}
MAX_SIZE=${MAX_SIZE:-1G}
ITERS=${ITERS:-20}
PY=${PYTHON:-python3}
# NVLink multicast stays off on shared machines (the workplace's rule), whatever else changes.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# One host, no network: NCCL's and gloo's bootstrap on loopback (data moves over NVLink/PCIe).
# Set here, so the launcher keeps them (the user wins) for both the bench and nccl-tests.
export NCCL_SOCKET_IFNAME=lo GLOO_SOCKET_IFNAME=lo
start=$(date +%s)

main() {
say() { printf '\n=== [%4ss] %s\n' "$(($(date +%s) - start))" "$*"; }

say "machine"
date -u +%Y-%m-%dT%H:%M:%SZ
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
nvidia-smi topo -m 2>/dev/null | head -n $((NGPUS + 2))
"$PY" - <<'EOF'
import torch
nccl = ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else "-"
print("torch", torch.__version__, "cuda", torch.version.cuda, "nccl", nccl, "gpus", torch.cuda.device_count())
EOF

say "python-hostlist for the launcher's profile parser"
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" .whl/python_hostlist-*.whl \
    || { echo "missing .whl/python_hostlist-*.whl"; exit 2; }
export PYTHONPATH="$WORK/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# A one-node profile for this machine: its GPUs, rendezvous on 127.0.0.1 (no network here).
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
type = "h100"
count = $NGPUS
memory_gb = 80
compute_capability = "9.0"
EOF

# bench TAG STEP [VAR=VALUE...]: NGPUS tasks of one step, as srun would start them.
bench() {
    local tag=$1 step=$2 r
    shift 2
    local pids=()
    for ((r = 0; r < NGPUS; r++)); do
        env "$@" SLURM_JOB_ID=4242 SLURM_STEP_ID="$step" SLURM_PROCID=$r SLURM_LOCALID=$r \
            SLURM_NODEID=0 SLURM_NTASKS="$NGPUS" SLURM_STEP_NUM_TASKS="$NGPUS" SLURM_NNODES=1 \
            SLURM_STEP_NUM_NODES=1 SLURM_TASKS_PER_NODE="$NGPUS" SLURM_STEP_TASKS_PER_NODE="$NGPUS" \
            SLURM_JOB_NODELIST="$HOST" SLURM_STEP_NODELIST="$HOST" SLURMD_NODENAME="$HOST" \
            "$PY" -m hpcjobs.launch -- "$PY" -m hpcjobs.bench.allreduce --max-size="$MAX_SIZE" \
            --iters="$ITERS" --warmup=5 --link-gbps=100 --out="$WORK" --name="bench-$tag" \
            >"$WORK/$tag.rank$r.log" 2>&1 &
        pids+=($!)
    done
    local rc=0
    for p in "${pids[@]}"; do wait "$p" || rc=$?; done
    cat "$WORK/$tag.rank0.log"
    for ((r = 1; r < NGPUS; r++)); do
        [ -s "$WORK/$tag.rank$r.log" ] && { echo "--- rank $r:"; cat "$WORK/$tag.rank$r.log"; }
    done
    cp "$WORK/bench-$tag-4242.json" "$OUT/bench-$tag.json" 2>/dev/null
    return $rc
}

say "the launcher's environment for rank 0 (--explain)"
env SLURM_JOB_ID=4242 SLURM_STEP_ID=0 SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODEID=0 \
    SLURM_NTASKS="$NGPUS" SLURM_NNODES=1 SLURM_TASKS_PER_NODE="$NGPUS" SLURM_JOB_NODELIST="$HOST" \
    SLURMD_NODENAME="$HOST" "$PY" -m hpcjobs.launch --explain -- true

say "bench-allreduce: $NGPUS ranks through hpcjobs.launch"
bench default 1
cp "$WORK/bench-default-4242.png" "$OUT/bench-default.png" 2>/dev/null

say "bench-allreduce with NCCL_P2P_DISABLE=1"
bench p2poff 2 NCCL_P2P_DISABLE=1

say "build nccl-tests all_reduce_perf against the wheel's NCCL"
nt_ok=0
NCCL_DIR=$("$PY" -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null)
if [ -z "$NCCL_DIR" ] || [ ! -f "$NCCL_DIR/include/nccl.h" ]; then
    echo "no nvidia/nccl/include/nccl.h in this Python's site-packages (nvidia-nccl-cu13): no nccl-tests"
else
    echo "NCCL from $NCCL_DIR: $(cd "$NCCL_DIR/lib" && echo libnccl*)"
    grep -m3 -E '#define NCCL_(MAJOR|MINOR|PATCH) ' "$NCCL_DIR/include/nccl.h"
    mkdir -p "$WORK/nccl/lib"
    ln -sf "$NCCL_DIR/include" "$WORK/nccl/include"
    lib=
    for f in "$NCCL_DIR"/lib/libnccl.so*; do lib=$f; break; done
    ln -sf "$lib" "$WORK/nccl/lib/libnccl.so"
    ln -sf "$lib" "$WORK/nccl/lib/$(basename "$lib")"
    if [ -x /usr/local/cuda/bin/nvcc ]; then
        CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
    else
        NVCC_FOUND=$(command -v nvcc)
        CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$NVCC_FOUND")")")}
    fi
    NVCC=$CUDA_HOME/bin/nvcc
    echo "nvcc $NVCC ($("$NVCC" --version | grep release))"
    cp -r .whl/nccl-tests "$WORK/nccl-tests-src"
    BUILD=$WORK/nccl-tests-build
    # sm_90 only (H100/H200): one architecture keeps the build to a minute or two.
    if make -C "$WORK/nccl-tests-src/src" -j"$(nproc)" BUILDDIR="$BUILD" NCCL_HOME="$WORK/nccl" \
            CUDA_HOME="$CUDA_HOME" NVCC="$NVCC" NVCC_GENCODE="-gencode=arch=compute_90,code=sm_90" \
            "$BUILD/all_reduce_perf" >"$WORK/build.log" 2>&1; then
        nt_ok=1
        echo "built $BUILD/all_reduce_perf"
    else
        echo "nccl-tests build FAILED:"; tail -n 40 "$WORK/build.log"
    fi
    export LD_LIBRARY_PATH="$WORK/nccl/lib:$CUDA_HOME/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

if [ "$nt_ok" = 1 ]; then
    say "nccl-tests all_reduce_perf -g $NGPUS (one process)"
    "$BUILD/all_reduce_perf" -b 1K -e "$MAX_SIZE" -f 2 -g "$NGPUS" -w 5 -n "$ITERS" -c 1 \
        | tee "$OUT/nccl-tests.txt"
    say "nccl-tests all_reduce_perf with NCCL_P2P_DISABLE=1"
    NCCL_P2P_DISABLE=1 "$BUILD/all_reduce_perf" -b 1K -e "$MAX_SIZE" -f 2 -g "$NGPUS" -w 5 \
        -n "$ITERS" -c 1 | tee "$OUT/nccl-tests-p2poff.txt"
fi

say "side by side"
"$PY" tests/gpu/compare_allreduce.py --bench "$OUT/bench-default.json" --nccl "$OUT/nccl-tests.txt" \
    --bench-p2poff "$OUT/bench-p2poff.json" --nccl-p2poff "$OUT/nccl-tests-p2poff.txt" \
    --md "$OUT/compare.md" --json "$OUT/compare.json"
rc=$?
say "done (exit $rc); results in $OUT"
ls -la "$OUT"
return $rc
}

main "$@" 2>&1 | tee "$OUT/run.log"
exit "${PIPESTATUS[0]}"
