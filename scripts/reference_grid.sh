#!/usr/bin/env bash
# The reference grid on one GPU: one process per model kind, all at once, each training its pairs
# of every dataset; then one more call that skips the finished pairs and writes the tables.
#
#   bash scripts/reference_grid.sh [OUT] [DATASETS]     # default: results/reference mnist,cifar10,cifar100
#
# Offline, point COURSEKIT_DATA at the datasets first. Each process logs to OUT/logs/<model>.log;
# an interrupted run resumes where it stopped when started again (finished pairs are kept).
set -euo pipefail
out="${1:-results/reference}"
datasets="${2:-mnist,cifar10,cifar100}"
mkdir -p "$out/logs"
for model in cnn vit deepvit hybrid resnet; do
  python -m coursekit.reproduce --grid reference --datasets "$datasets" --models "$model" \
    --out "$out" > "$out/logs/$model.log" 2>&1 &
done
wait
python -m coursekit.reproduce --grid reference --datasets "$datasets" --out "$out"
