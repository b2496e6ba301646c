#!/usr/bin/env bash
# Everything the performance issue still needs from a GPU, in one prepared call of under 9 minutes:
#   1. gpu_benchmarks.py: full-size 32 -> 8 inference latency (bf16, the 0.3 s target) and peak memory,
#      the cost per extra target view, view-count ladders, LaCET throughput; official columns when a
#      checkout of Mars-tin/fast-spatial-mem is at $FSM_OFFICIAL (default .official/, never committed;
#      its imports easydict and einops may sit in $FSM_OFFICIAL-deps/ where the machine lacks them);
#   2. bench_view_scaling.py --probe: the largest number of input views that fits in an 80 GB budget
#      (enforced with torch.cuda.set_per_process_memory_fraction on bigger cards), measured by doubling.
# Results (JSON and logs) go to $OUT (default gpu-session-out/). Usage, from the repository root:
#   bash benchmarks/gpu_session.sh            # on the GPU machine
#   SMOKE=1 bash benchmarks/gpu_session.sh    # plumbing check on a CPU-only machine (tiny sizes)
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-session-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
PYTHON="${PYTHON:-python3}"
REFERENCE="${FSM_OFFICIAL:-.official}"
reference_args=()
if [ -d "$REFERENCE" ]; then
    # the official code imports easydict and einops; $REFERENCE-deps/ may hold them (pure Python)
    if [ -d "$REFERENCE-deps" ]; then export PYTHONPATH="$PWD/$REFERENCE-deps${PYTHONPATH:+:$PYTHONPATH}"; fi
    if "$PYTHON" -c "import easydict, einops" 2>/dev/null; then
        reference_args=(--reference "$REFERENCE")
    else
        echo "gpu_session: easydict or einops missing, running without the official columns" >&2
    fi
fi

if [ -n "${SMOKE:-}" ]; then
    suite_args=(--smoke --device cpu --reps 1)
    scaling_args=(--device cpu --views 2,4 --layers 1 --dim 64 --resolution 32 --chunk-size 64 --reps 1)
else
    "$PYTHON" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"
    suite_args=(--budget-s 300 --reps 5)
    scaling_args=(--device cuda --memory-budget-gb 80 --probe --reps 2)
fi

status=0
timeout 390 "$PYTHON" benchmarks/gpu_benchmarks.py --out "$OUT/gpu_benchmarks.json" "${reference_args[@]}" \
    "${suite_args[@]}" 2>&1 | tee "$OUT/gpu_benchmarks.log" || status=$?
timeout 150 "$PYTHON" benchmarks/bench_view_scaling.py --json "$OUT/view_scaling.json" "${scaling_args[@]}" \
    2>&1 | tee "$OUT/view_scaling.log" || status=$?
echo "gpu_session: exit status $status; results in $OUT"
exit $status
