#!/usr/bin/env bash
# CUDA check (issue #21): a few training steps and a rank-classification evaluation on one GPU in bf16, compared
# with the same run on the CPU in fp32 (tolerances in src/insta/gpu_check.py: per-step loss within 0.05 nats + 5%,
# each option's summed log-likelihood within 0.25 nats + 5%, the same predicted option on >= 90% of the examples).
#
#   scripts/gpu_check.sh [MODEL] [OUT]     # MODEL: smollm2 (default), a hub id or a model folder;
#                                          # OUT: benchmarks/results/gpu_check (cpu.json, gpu.json, compare.json)
# Exit 0: passed, or no GPU here (one line says so); 1: a check failed; 2: an error.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
MODEL=${1:-smollm2}
OUT=${2:-benchmarks/results/gpu_check}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: skipped: no CUDA device here (torch.cuda.is_available() is false)"
  exit 0
fi
mkdir -p "$OUT"
"$PY" -m insta.gpu_check side --device cuda --model "$MODEL" --out "$OUT/gpu.json"
CUDA_VISIBLE_DEVICES= "$PY" -m insta.gpu_check side --device cpu --model "$MODEL" --out "$OUT/cpu.json"
"$PY" -m insta.gpu_check compare "$OUT/cpu.json" "$OUT/gpu.json" --out "$OUT/compare.json" | tee "$OUT/compare.txt"
