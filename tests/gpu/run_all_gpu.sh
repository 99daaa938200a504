#!/usr/bin/env bash
# Several GPU scripts in one call on a machine without network: python-hostlist and py-spy come
# from the carried .whl/ wheels, each script writes into its own folder, and each folder comes
# back as one archive (the machine returns at most 8 files).
# Usage (repository root):  bash tests/gpu/run_all_gpu.sh report sentinel preflight jax
#   report     tests/gpu/run_report_gpu.sh     the receipt: energy, peak memory, idle share, overhead
#   sentinel   tests/gpu/run_sentinel_gpu.sh   the flight recorder pipe and dump under NCCL
#   preflight  tests/gpu/run_preflight_gpu.sh  NVML checks and NCCL's log through the preflight
#   jax        tests/gpu/run_jax_gpu.sh        examples/jax_allreduce.py, one process per GPU
# Out: $OUT/<name>.tgz for each, and $OUT/all.log (every script's output and exit status).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
OUT=${OUT:-/tmp/hpcjobs-gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SITE=$(mktemp -d /tmp/hpcjobs-site.XXXXXX)
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl || exit 2
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
declare -A SCRIPT=([report]=run_report_gpu.sh [sentinel]=run_sentinel_gpu.sh
                   [preflight]=run_preflight_gpu.sh [jax]=run_jax_gpu.sh)
for name in "$@"; do
    dir=$(mktemp -d "/tmp/hpcjobs-$name.XXXXXX")
    start=$(date +%s)
    echo "===== $name ($(date -u +%H:%M:%S))" >>"$OUT/all.log"
    OUT=$dir timeout 480 bash "tests/gpu/${SCRIPT[$name]}" >>"$OUT/all.log" 2>&1
    rc=$?
    echo "===== $name: exit $rc after $(($(date +%s) - start)) s" >>"$OUT/all.log"
    tar -czf "$OUT/$name.tgz" -C "$dir" .
done
tail -n 40 "$OUT/all.log"
