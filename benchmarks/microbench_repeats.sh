#!/usr/bin/env bash
# Repeat the model micro-benchmark (paper Fig. 3) N times, one run after another, each in OUT_DIR/runK with the
# date and the load average before and after it (OUT_DIR/runs.log); then the tables over all runs:
#   flock /tmp/etude-bench.lock benchmarks/microbench_repeats.sh OUT_DIR [N=3] [extra etude microbench flags]
#   .venv/bin/python benchmarks/microbench_table.py OUT_DIR/run*
set -euo pipefail
out=${1:?usage: microbench_repeats.sh OUT_DIR [N] [etude microbench flags]}
n=${2:-3}
shift $(( $# >= 2 ? 2 : 1 ))
mkdir -p "$out"
bin=$(dirname "$0")/../.venv/bin
for k in $(seq 1 "$n"); do
    echo "run$k start $(date -u +%FT%TZ) loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/runs.log"
    "$bin/etude" microbench --runtimes python,eager,jit --out "$out/run$k" "$@"
    echo "run$k end $(date -u +%FT%TZ) loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/runs.log"
done
