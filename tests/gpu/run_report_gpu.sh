#!/usr/bin/env bash
# The receipt on a real GPU. No Slurm here: one GPU job runs through `python -m hpcjobs.launch`
# with the variables srun would set, its monitor beside it as the job script starts it (one
# task with the job's SLURM_* and GPU variables, a step of its own), and a run record as
# `hpcjobs submit` writes one. Then `hpcjobs report` and the checks:
#   - energy: the receipt's kWh (increments of NVML's counter in the monitor's samples) against
#     the same counter read directly just before the monitor started and after it stopped;
#   - peak memory: the receipt's (NVML memory used) against torch.cuda.max_memory_reserved;
#   - utilisation: the workload idles 35% of its time: the receipt's idle share and finding;
#   - overhead: the workload's own matmul throughput with and without the monitor
#     (interleaved rounds; monitor every 1 s and every 5 s).
# Results in $OUT (at most 8 files): run.log, report.json, report.txt, report.png, check.json,
# overhead.json, samples.jsonl, workload.json. Exit 0 only if every check passed.
#
# Needs torch with CUDA and nvidia-ml-py; matplotlib for the PNG; python-hostlist, or
# .whl/python_hostlist-*.whl carried into the repository root (as for the other GPU scripts).
# Usage (repository root):  bash tests/gpu/run_report_gpu.sh   [JOB_SECONDS=60 ROUNDS=3 STEPS=4000 INTERVAL=1]
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
OUT=${OUT:-/tmp/hpcjobs-gpu-out}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/hpcjobs-report-gpu.XXXXXX)
PY=${PYTHON:-python3}
JOB_SECONDS=${JOB_SECONDS:-60}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-4000}
INTERVAL=${INTERVAL:-1}
JOB=4343
HOST=$(hostname -s)
GPU=${CUDA_VISIBLE_DEVICES:-0}
GPU=${GPU%%,*}  # one GPU: the first this machine gives us
start=$(date +%s)

main() {
say() { printf '\n=== [%4ss] %s\n' "$(($(date +%s) - start))" "$*"; }

say "machine"
date -u +%Y-%m-%dT%H:%M:%SZ
nvidia-smi --query-gpu=index,name,memory.total,power.limit,driver_version --format=csv,noheader
"$PY" -c 'import torch, pynvml; print("torch", torch.__version__, "cuda", torch.version.cuda,
"nvidia-ml-py", getattr(pynvml, "__version__", "?"))' || { echo "needs torch and nvidia-ml-py"; return 2; }

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c 'import hostlist' 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" \
        .whl/python_hostlist-*.whl || { echo "needs python-hostlist (.whl/python_hostlist-*.whl)"; return 2; }
    export PYTHONPATH="$WORK/site:$PYTHONPATH"
fi

# A one-node profile for this machine (the launcher reads it), and the run record.
export HPCJOBS_CLUSTER=$WORK/cluster.toml HPCJOBS_RUNS_DIR=$WORK/runs
MEM_GB=$(nvidia-smi -i "$GPU" --query-gpu=memory.total --format=csv,noheader,nounits | awk '{printf "%d", $1/1024}')
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
count = 1
memory_gb = $MEM_GB
compute_capability = "9.0"
EOF
RUN=$("$PY" - "$JOB" "$INTERVAL" <<'EOF'
import sys
from hpcjobs import runs
job, interval = sys.argv[1], float(sys.argv[2])
run = runs.create(runs.new_run_path("train"), "#!/bin/bash\n",
                  {"kind": "train", "nodes": 1, "gpus_per_node": 1, "monitor": True,
                   "monitor_interval": interval}, {}, {"kind": "train", "job_id": job})
runs.link_job(run, job)
print(run.path)
EOF
)
echo "run record: $RUN"

# task_env STEP: TASK_ENV is what srun gives a task of step STEP of job $JOB on this node.
task_env() {
    TASK_ENV=(SLURM_JOB_ID="$JOB" SLURM_STEP_ID="$1" SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODEID=0
        SLURM_NTASKS=1 SLURM_STEP_NUM_TASKS=1 SLURM_NNODES=1 SLURM_STEP_NUM_NODES=1
        SLURM_TASKS_PER_NODE=1 SLURM_STEP_TASKS_PER_NODE=1 SLURM_JOB_NODELIST="$HOST"
        SLURM_STEP_NODELIST="$HOST" SLURMD_NODENAME="$HOST" SLURM_CPUS_ON_NODE="$(nproc)"
        CUDA_VISIBLE_DEVICES="$GPU" SLURM_STEP_GPUS="$GPU" SLURM_JOB_GPUS="$GPU")
}
energy() {  # NVML's total-energy counter of the job's GPU, read directly (mJ)
    task_env 9
    env "${TASK_ENV[@]}" "$PY" -c '
import os, pynvml
pynvml.nvmlInit()
from hpcjobs.runners.monitor import choose_gpus
(h,), _ = choose_gpus(pynvml, [os.environ["SLURM_STEP_GPUS"]], "SLURM_STEP_GPUS")
print(pynvml.nvmlDeviceGetTotalEnergyConsumption(h))'
}
monitor_start() {  # monitor_start DIR INTERVAL: as the job script's srun --overlap step
    task_env 1
    env "${TASK_ENV[@]}" "$PY" -m hpcjobs.runners.monitor --out="$1" --interval="$2" &
    MON=$!
    for _ in $(seq 100); do [ -s "$1/$JOB/$HOST.jsonl" ] && return 0; sleep 0.1; done
    echo "monitor did not start"; return 1
}
monitor_stop() { kill -s USR1 "$MON"; wait "$MON"; echo "monitor exit $?"; }
workload() {  # the program step, through the launcher
    task_env 0
    env "${TASK_ENV[@]}" HPCJOBS_KIND=train "$PY" -m hpcjobs.launch -- \
        "$PY" tests/gpu/report_workload.py "$@"
}

say "the job: ${JOB_SECONDS} s (busy 40%, idle 35%, busy + 16 GiB 25%), monitor every $INTERVAL s"
E0=$(energy)
monitor_start "$RUN/monitor" "$INTERVAL" || return 1
T0=$(date +%s.%N)
workload --seconds "$JOB_SECONDS" --json "$OUT/workload.json"
rc=$?
T1=$(date +%s.%N)
monitor_stop
E1=$(energy)
echo "workload exit $rc; energy counter $E0 -> $E1 mJ ($(( (E1 - E0) / 1000 )) J)"
cp "$RUN/monitor/$JOB/$HOST.jsonl" "$OUT/samples.jsonl"
# The job's end, as a watcher writes it into the record (there is no Slurm to ask).
"$PY" - "$JOB" "$T0" "$T1" "$rc" "$HOST" <<'EOF'
import sys
from hpcjobs import runs
from hpcjobs.slurm import JobStatus, format_duration
job, t0, t1, rc, host = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
runs.find(job).update_meta(final=JobStatus(job, "COMPLETED" if rc == 0 else "FAILED", exit_code=rc,
                                           elapsed=format_duration(round(t1 - t0)), nodes=host).to_dict())
EOF

say "hpcjobs report $JOB"
if "$PY" -c 'import click' 2>/dev/null; then
    "$PY" -m hpcjobs report "$JOB" | tee "$OUT/report.txt"
    "$PY" -m hpcjobs report "$JOB" --json >"$OUT/report.json"
    "$PY" -m hpcjobs report "$JOB" --plot "$OUT/report.png" >/dev/null
else  # no click here: the same library calls the command makes
    "$PY" - "$JOB" "$OUT" <<'EOF'
import json, sys
from hpcjobs import report
from hpcjobs.report import plot, text
r = report.receipt(sys.argv[1])
open(f"{sys.argv[2]}/report.json", "w").write(json.dumps(r.to_dict(), indent=2))
open(f"{sys.argv[2]}/report.txt", "w").write(text.render(r) + "\n")
print(text.render(r))
plot.draw(r, f"{sys.argv[2]}/report.png")
EOF
fi
ls -la "$OUT/report.png" 2>/dev/null || echo "no plot (matplotlib missing?)"

say "overhead: the workload's own throughput ($STEPS matmuls), $ROUNDS interleaved rounds"
rm -f "$WORK/overhead.jsonl"
for ((r = 1; r <= ROUNDS; r++)); do
    for setting in off 5 1; do
        if [ "$setting" != off ]; then
            rm -rf "$WORK/mon-$setting"
            monitor_start "$WORK/mon-$setting" "$setting" || return 1
        fi
        line=$(workload --steps "$STEPS" | grep '^REPORT-WORKLOAD ' | cut -d' ' -f2-)
        [ "$setting" != off ] && monitor_stop >/dev/null
        echo "{\"round\": $r, \"monitor\": \"$setting\", \"run\": $line}" >>"$WORK/overhead.jsonl"
        echo "round $r monitor=$setting: $(echo "$line" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print("%.1f TFLOP/s in %.2f s" % (d["tflops"], d["seconds"]))')"
    done
done

say "checks"
"$PY" - "$OUT" "$E0" "$E1" "$WORK/overhead.jsonl" "$WORK" <<'EOF'
import json, statistics, sys
out, e0, e1, ov, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
rep = json.load(open(f"{out}/report.json"))
wl = json.load(open(f"{out}/workload.json"))
g = rep["gpus"][0]
GIB = 2**30
direct_j = (e1 - e0) / 1000
receipt_j = g["energy_kwh"] * 3.6e6
reserved = wl["max_memory_reserved"]
checks = {
    "energy_receipt_J": round(receipt_j, 1), "energy_direct_J": round(direct_j, 1),
    "energy_ratio": round(receipt_j / direct_j, 4),
    # The monitor's window lies inside the direct reads: a little less, never more.
    "energy_ok": 0.95 <= receipt_j / direct_j <= 1.001,
    "peak_nvml_GiB": round(g["mem_peak"] / GIB, 3), "max_memory_reserved_GiB": round(reserved / GIB, 3),
    "peak_minus_reserved_GiB": round((g["mem_peak"] - reserved) / GIB, 3),
    # NVML's "used" is the allocator's reserved memory plus the CUDA context (and cuBLAS's
    # workspace): at least reserved, at most 2 GiB more.
    "peak_ok": 0 <= g["mem_peak"] - reserved <= 2 * GIB,
    "idle_share": g["idle_share"], "idle_ok": 0.25 <= (g["idle_share"] or 0) <= 0.45,
    "idle_finding": any(f["what"] == "idle" for f in rep["findings"]),
    "util_mean": g["util_mean"], "util_p95": g["util_p95"],
    "power_mean_w": g["power_mean_w"], "samples": g["samples"],
    "monitor_cpu_seconds": rep["monitor_cpu_seconds"], "wall_seconds": rep["wall_seconds"],
}
rows = [json.loads(x) for x in open(ov)]
over = {}
for s in ("off", "5", "1"):
    t = [r["run"]["tflops"] for r in rows if r["monitor"] == s]
    over[s] = {"median_tflops": round(statistics.median(t), 2), "min": round(min(t), 2),
               "max": round(max(t), 2), "runs": len(t)}
for s in ("5", "1"):
    over[s]["ratio_to_off"] = round(over[s]["median_tflops"] / over["off"]["median_tflops"], 4)
checks["overhead"] = over
json.dump(rows, open(f"{out}/overhead.json", "w"), indent=1)
ok = checks["energy_ok"] and checks["peak_ok"] and checks["idle_ok"] and checks["idle_finding"]
checks["all_ok"] = ok
json.dump(checks, open(f"{out}/check.json", "w"), indent=2)
print(json.dumps(checks, indent=2))
sys.exit(0 if ok else 1)
EOF
rc=$?
say "done (exit $rc); results in $OUT"
ls -la "$OUT"
return $rc
}

main "$@" 2>&1 | tee "$OUT/run.log"
exit "${PIPESTATUS[0]}"
