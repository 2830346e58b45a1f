#!/usr/bin/env bash
# Trains the shipped default model and evaluation embedder: the exact commands behind
# src/noveltynets/assets/. Usage: scripts/train_default.sh OUTDIR [cuda|cpu] [STEPS]
# With STEPS=auto (GPU runs), 300 probe steps are timed first and the step count is chosen
# to fit TRAIN_SECONDS (default 330) of training; the count used is in train_config.json.
set -euo pipefail
OUTDIR=${1:-runs/default}
DEVICE=${2:-cuda}
STEPS=${3:-20000}
NN=${NOVELTYNETS:-noveltynets}
mkdir -p "$OUTDIR"
$NN train-embedder --out "$OUTDIR/eval-embedder" --epochs 40 --seed 0 --device "$DEVICE" --no-progress
if [ "$STEPS" = auto ]; then
  start=$(date +%s.%N)
  $NN train-model --out "$OUTDIR/probe" --steps 300 --seed 0 --device "$DEVICE" --no-progress >/dev/null
  STEPS=$(python3 -c "import sys; s=(float(sys.argv[2])-float(sys.argv[1])-3)/300; print(min(40000, int(${TRAIN_SECONDS:-330}/s)//1000*1000))" "$start" "$(date +%s.%N)")
  rm -rf "$OUTDIR/probe"
  echo "chosen steps: $STEPS"
fi
$NN train-model --out "$OUTDIR/mnist5k-unet" --steps "$STEPS" --batch-size 256 --lr 1e-3 --seed 0 --device "$DEVICE" --no-progress
rm -f "$OUTDIR/mnist5k-unet/checkpoint.pt"
for steps in 25 50; do
  $NN check-model --model "$OUTDIR/mnist5k-unet" --embedder "$OUTDIR/eval-embedder" --steps $steps --device "$DEVICE" \
      --out "$OUTDIR/check-${steps}steps.json" --no-progress
done
