#!/usr/bin/env bash
# The prepared device run for a lent GPU (issues 24 and 25): one script, about 8 minutes on one H200, each step under
# its own time limit so that one slow step cannot eat the others. Everything it makes goes to $OUT (default out/gpu).
#
#   bash docs/benchmarks/gpu/run.sh                 # on the device machine, from the repository root, after make install
#   SMOKE=1 bash docs/benchmarks/gpu/run.sh         # the same steps at toy sizes on the CPU (checks the commands only)
#
# 1. issue 24: GPU cost of novelty guidance beside a ~100M-parameter SD-layout denoiser and the shipped model,
#    batch 16-256, ratios in one run (benchmarks/scale_cost.py).
# 2. issue 25: the distilled model at the default model's batch size (4,000 steps of 1,024 images) ...
# 3. ... and its within-batch frontier at rank scales 1 and 3 (benchmarks/distill_frontier.py), beside plain and
#    particle guidance on the same seeds.
# Not here: the keep protocol's 16 runs of 256 (issue 18): at batches of 16 it does not fit in the device time left.
set -uo pipefail
OUT=${OUT:-out/gpu}
PY=${PYTHON:-.venv/bin/python}
NN=${NOVELTYNETS:-.venv/bin/noveltynets}
mkdir -p "$OUT"
if [ "${SMOKE:-0}" = 1 ]; then
  DEV=cpu; COST="--batches 2 --steps 1"; TRAIN="--steps 2 --batch-size 8"; FRONT="--classes 7 --batches 1 --steps 2"
  T_COST=300; T_TRAIN=900; T_FRONT=300
else
  DEV=cuda; COST="--batches 16 64 256 --steps 25"; TRAIN="--steps 4000 --batch-size 1024 --rank-lr-scale 50"
  FRONT="--classes 1,3,7 --batches 8"; T_COST=150; T_TRAIN=330; T_FRONT=150
fi
(nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi") > "$OUT/device.txt"
date -u +%FT%TZ > "$OUT/started"
# 1. cost
timeout $T_COST $PY benchmarks/scale_cost.py --device $DEV $COST > "$OUT/cost_$DEV.log" 2>&1; echo "cost rc=$?" >> "$OUT/rc.txt"
# 2. distilled model (resumable: a second call with the same OUT goes on from its checkpoint)
timeout $T_TRAIN $NN distill train --out "$OUT/distilled" $TRAIN --device $DEV --no-progress > "$OUT/distill_train.log" 2>&1
echo "distill rc=$?" >> "$OUT/rc.txt"
# 3. frontier, only if the model was written
if [ -f "$OUT/distilled/ranks.json" ]; then
  timeout $T_FRONT $PY benchmarks/distill_frontier.py --model "$OUT/distilled" $FRONT --rank-scales 3 --device $DEV \
      --out "$OUT/frontier" > "$OUT/frontier.log" 2>&1
  echo "frontier rc=$?" >> "$OUT/rc.txt"
fi
rm -f "$OUT/distilled/checkpoint.pt"  # training state: too big to bring back, and not needed once the model is written
date -u +%FT%TZ > "$OUT/finished"
cat "$OUT/rc.txt"
