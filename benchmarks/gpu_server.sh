#!/usr/bin/env bash
# The serving benchmark on a GPU: GRU4Rec at C = 10,000,000 served with --device cuda, with and without batching.
# Open-loop ramps (etude loadgen) give the highest rate whose p90 stays within 50 ms; wrk adds closed-loop
# throughput when it is installed. Results: $OUT/results.json (+ loadgen folders, server logs).
#
#   PYTHON=.venv/bin/python OUT=/tmp/bench/gpu benchmarks/gpu_server.sh
#
# Needs a torch build with CUDA in $PYTHON's environment (the project's CPU wheel will not do), about 2.5 GB of
# disk for the exported model and ~10 minutes. Knobs: CATALOG_SIZE, MAX_BATCH_SIZES, TARGET_RPS (end of the ramp
# with batching), TARGET_RPS_UNBATCHED, RAMP_SECONDS, HOLD_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-/tmp/bench/gpu}
CATALOG_SIZE=${CATALOG_SIZE:-10000000}

"$PYTHON" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
lscpu | grep "Model name" || true

exec "$PYTHON" benchmarks/bench_server.py model \
  --model gru4rec --catalog-size "$CATALOG_SIZE" \
  --serve-args "--device cuda --warmup-passes 2" \
  --max-batch-sizes "${MAX_BATCH_SIZES:-1024,64,1}" \
  --target-rps "${TARGET_RPS:-4000}" --target-rps-unbatched "${TARGET_RPS_UNBATCHED:-1000}" \
  --ramp-seconds "${RAMP_SECONDS:-60}" --hold-seconds "${HOLD_SECONDS:-20}" \
  --connections 8,64 --wrk-seconds 10 \
  --models "${MODELS:-/tmp/etude-bench-models}" --out "$OUT"
