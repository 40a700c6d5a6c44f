#!/usr/bin/env bash
# The micro-benchmark (paper Fig. 3) on a CUDA GPU, C up to 10M, all 11 models x eager/jit.
# Usage: benchmarks/gpu_microbench.sh [OUT_DIR]   (run from the repository root; ~5 minutes on an H100)
# Needs a CUDA build of torch in the environment (the project pins the CPU wheel; on a GPU machine install
# torch==2.13.0 from the CUDA index first). Writes OUT_DIR/microbench.{csv,png,json} and OUT_DIR/nvidia-smi.txt.
set -euo pipefail
OUT="${1:-${OUT:-results/microbench-gpu}}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
"$PY" -c "import torch, sys; ok = torch.cuda.is_available(); print('torch', torch.__version__, 'cuda', ok, torch.cuda.get_device_name(0) if ok else ''); sys.exit(0 if ok else 1)"
# quick smoke test first (seconds), then the full grid
"$PY" -m etude microbench --models srgnn,repeatnet --catalog-sizes 1000 --device cuda --requests 5 --out "$OUT/smoke"
"$PY" -m etude microbench --catalog-sizes 10000,100000,1000000,10000000 --runtimes eager,jit --device cuda \
    --requests "${REQUESTS:-100}" --out "$OUT"
# the runtimes with a CUDA path (aot: AOTInductor for CUDA; bf16, int8: the quantized table on the GPU)
"$PY" -m etude microbench --models gru4rec,sasrec --catalog-sizes 1000000,10000000 --runtimes jit,aot,bf16,int8 \
    --device cuda --requests "${REQUESTS:-100}" --out "$OUT/runtimes"
echo "wrote $OUT/microbench.csv $OUT/microbench.png $OUT/runtimes/microbench.csv"
