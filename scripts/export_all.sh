#!/usr/bin/env bash
# Export a trained clip model to all five formats, each checked by training.export itself.
# Usage: bash scripts/export_all.sh [MODEL.keras] [OUT_DIR] [--frames N ...extra training.export args]
# Default: runs/fit/model.keras -> runs/export/. Exits non-zero at the first format that fails.
set -euo pipefail
model=${1:-runs/fit/model.keras}
out=${2:-runs/export}
shift $(( $# > 2 ? 2 : $# ))
mkdir -p "$out"
for fmt in keras savedmodel tflite onnx bundle; do
  case $fmt in keras) ext=.keras ;; savedmodel) ext=.savedmodel ;; tflite) ext=.tflite ;; onnx) ext=.onnx ;; bundle) ext=.bundle ;; esac
  python -m training.export --model "$model" --format "$fmt" --out "$out/model$ext" --overwrite "$@"
done
echo "all five formats exported and checked: $out" >&2
