#!/usr/bin/env bash
# Record NCCL's own init logs on this machine's GPUs, for the fabric-truth parser's fixtures
# (tests/fixtures/nccl/), and what NVML answers here (for the monitor). Each run is one step of
# NGPUS ranks started through hpcjobs.launch with the SLURM_* variables srun would give them;
# NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,NET,GRAPH and NCCL_DEBUG_FILE per rank.
#   default       the transports NCCL picks (with 2+ GPUs: P2P/NVLink between ranks)
#   socket        NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 (2+ GPUs: NET/Socket between ranks)
#   ibdisable     NCCL_IB_DISABLE=1 (the NET plugin falls back to sockets)
#   badhca        NCCL_IB_HCA=mlx5_9 (a device that does not exist)
# With one GPU NCCL has no peer: the logs still show the NET plugin choice and the rings.
# Out ($OUT, at most 8 files): nccl-<case>.log (rank logs joined), nvml.txt, machine.txt.
# Needs: .whl/python_hostlist-*.whl (carried). Usage: bash tests/gpu/record_nccl_logs.sh [NGPUS=1]
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
OUT=${OUT:-/tmp/hpcjobs-gpu-out}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/hpcjobs-nccl.XXXXXX)
NGPUS=${NGPUS:-1}
PY=${PYTHON:-python3}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export NCCL_SOCKET_IFNAME=lo GLOO_SOCKET_IFNAME=lo
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" .whl/python_hostlist-*.whl \
    || { echo "missing .whl/python_hostlist-*.whl"; exit 2; }
export PYTHONPATH="$WORK/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
HOST=$(hostname -s)

{
    date -u +%Y-%m-%dT%H:%M:%SZ
    nvidia-smi --query-gpu=index,name,memory.total,driver_version,compute_cap --format=csv
    nvidia-smi topo -m 2>&1 | head -20
    ls /sys/class/infiniband 2>&1
    "$PY" -c 'import torch; print("torch", torch.__version__, "nccl", ".".join(map(str, torch.cuda.nccl.version())))'
} >"$OUT/machine.txt" 2>&1

cat >"$WORK/allreduce.py" <<'EOF'
import os, torch, torch.distributed as dist
dist.init_process_group("nccl")
r = dist.get_rank()
torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
x = torch.full((1 << 20,), float(r + 1), device="cuda")
dist.all_reduce(x)
n = dist.get_world_size()
assert x[0].item() == n * (n + 1) / 2, x[0].item()
print(f"rank {r}: all-reduce {x[0].item()} ok", flush=True)
dist.destroy_process_group()
EOF

run_case() {
    local tag=$1 step=$2 r pids=()
    shift 2
    for ((r = 0; r < NGPUS; r++)); do
        env "$@" NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,NET,GRAPH \
            NCCL_DEBUG_FILE="$WORK/$tag.%h.%p.log" \
            SLURM_JOB_ID=4343 SLURM_STEP_ID="$step" SLURM_PROCID=$r SLURM_LOCALID=$r \
            SLURM_NODEID=0 SLURM_NTASKS="$NGPUS" SLURM_STEP_NUM_TASKS="$NGPUS" SLURM_NNODES=1 \
            SLURM_STEP_NUM_NODES=1 SLURM_TASKS_PER_NODE="$NGPUS" SLURM_STEP_TASKS_PER_NODE="$NGPUS" \
            SLURM_JOB_NODELIST="$HOST" SLURM_STEP_NODELIST="$HOST" SLURMD_NODENAME="$HOST" \
            "$PY" -m hpcjobs.launch -- "$PY" "$WORK/allreduce.py" >"$WORK/$tag.out.$r" 2>&1 &
        pids+=($!)
    done
    local rc=0 p
    for p in "${pids[@]}"; do wait "$p" || rc=$?; done
    {
        echo "# case $tag: $* (ranks $NGPUS, exit $rc)"
        for f in "$WORK/$tag".*.log; do echo "# --- $(basename "$f")"; cat "$f"; done
        for ((r = 0; r < NGPUS; r++)); do echo "# --- stdout/stderr rank $r"; cat "$WORK/$tag.out.$r"; done
    } >"$OUT/nccl-$tag.log"
    echo "case $tag: exit $rc"
}
run_case default 1
run_case socket 2 NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1
run_case ibdisable 3 NCCL_IB_DISABLE=1
run_case badhca 4 NCCL_IB_HCA=mlx5_9

"$PY" - >"$OUT/nvml.txt" 2>&1 <<'EOF'
import time
import pynvml as n
n.nvmlInit()
print("driver", n.nvmlSystemGetDriverVersion(), "nvml", n.nvmlSystemGetNVMLVersion())
h = n.nvmlDeviceGetHandleByIndex(0)
def tryit(name, f, *a):
    try:
        print(name, "=", f(h, *a))
    except Exception as e:  # what this driver does not answer
        print(name, "! ", type(e).__name__, e)
tryit("name", n.nvmlDeviceGetName)
tryit("uuid", n.nvmlDeviceGetUUID)
tryit("pci", lambda h: n.nvmlDeviceGetPciInfo(h).busId)
tryit("energy_mJ", n.nvmlDeviceGetTotalEnergyConsumption)
tryit("power_mW", n.nvmlDeviceGetPowerUsage)
tryit("power_limit_mW", n.nvmlDeviceGetEnforcedPowerLimit)
tryit("util", lambda h: vars(n.nvmlDeviceGetUtilizationRates(h)) if hasattr(n.nvmlDeviceGetUtilizationRates(h), "__dict__") else n.nvmlDeviceGetUtilizationRates(h))
tryit("mem", lambda h: (n.nvmlDeviceGetMemoryInfo(h).used, n.nvmlDeviceGetMemoryInfo(h).total))
tryit("sm_clock", n.nvmlDeviceGetClockInfo, n.NVML_CLOCK_SM)
tryit("mem_clock", n.nvmlDeviceGetClockInfo, n.NVML_CLOCK_MEM)
tryit("throttle", n.nvmlDeviceGetCurrentClocksThrottleReasons)
if hasattr(n, "nvmlDeviceGetCurrentClocksEventReasons"):
    tryit("clocks_event", n.nvmlDeviceGetCurrentClocksEventReasons)
tryit("temp", n.nvmlDeviceGetTemperature, n.NVML_TEMPERATURE_GPU)
tryit("ecc_volatile", n.nvmlDeviceGetTotalEccErrors, n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, n.NVML_VOLATILE_ECC)
tryit("procs", lambda h: [(p.pid, p.usedGpuMemory) for p in n.nvmlDeviceGetComputeRunningProcesses(h)])
try:
    es = n.nvmlEventSetCreate()
    n.nvmlDeviceRegisterEvents(h, n.nvmlEventTypeXidCriticalError, es)
    try:
        d = n.nvmlEventSetWait(es, 10)
        print("xid event", d.eventData)
    except n.NVMLError as e:
        print("xid wait:", e)
except Exception as e:
    print("xid events !", type(e).__name__, e)
t0 = time.time(); e0 = n.nvmlDeviceGetTotalEnergyConsumption(h)
time.sleep(1.0)
print("energy over 1 s idle (mJ):", n.nvmlDeviceGetTotalEnergyConsumption(h) - e0, "in", round(time.time() - t0, 3), "s")
EOF
echo "recorded: $(ls "$OUT")"
