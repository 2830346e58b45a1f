#!/usr/bin/env bash
# Trains the shipped default model and evaluation embedder: the exact commands behind
# src/noveltynets/assets/. Usage: scripts/train_default.sh OUTDIR [cuda|cpu] [STEPS] [BATCH] [LR]
# The embedder is trained only if OUTDIR/eval-embedder does not exist yet.
set -euo pipefail
OUTDIR=${1:-runs/default}
DEVICE=${2:-cuda}
STEPS=${3:-20000}
BATCH=${4:-256}
LR=${5:-1e-3}
NN=${NOVELTYNETS:-noveltynets}
mkdir -p "$OUTDIR"
[ -d "$OUTDIR/eval-embedder" ] || $NN train-embedder --out "$OUTDIR/eval-embedder" --epochs 40 --seed 0 --device "$DEVICE" --no-progress
$NN train-model --out "$OUTDIR/mnist5k-unet" --steps "$STEPS" --batch-size "$BATCH" --lr "$LR" --seed 0 --device "$DEVICE" --no-progress
rm -f "$OUTDIR/mnist5k-unet/checkpoint.pt"
for steps in 25 50; do
  $NN check-model --model "$OUTDIR/mnist5k-unet" --embedder "$OUTDIR/eval-embedder" --steps $steps --device "$DEVICE" \
      --out "$OUTDIR/check-${steps}steps.json" --no-progress
done
