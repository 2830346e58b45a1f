#!/usr/bin/env bash
# The distilled-novelty measurements of issue 25, on the 2-core CPU, two processes side by side (one thread each).
# Usage: bash docs/benchmarks/distill/run.sh MODEL   (from the repository root, with .venv built by make install;
# MODEL: a distilled model folder, here out/distill-more, made as docs/training/README.md says)
set -euo pipefail
MODEL=${1:?a distilled model folder}
D=docs/benchmarks/distill
NN=${NOVELTYNETS:-.venv/bin/noveltynets}
PY=${PYTHON:-.venv/bin/python}
# 1. within one batch, and the frontier over the rank bins: classes 1, 3, 7, 8 batches of 16 seeds each
OMP_NUM_THREADS=1 $PY benchmarks/distill_frontier.py --model "$MODEL" --classes 1,3,7 --batches 8 --out $D/frontier > $D/frontier.log 2>&1 &
# 2. keep sampling, class 7: 6 runs of 128, plain / distilled / novelty / distilled + novelty
OMP_NUM_THREADS=1 $NN bench --keep 6 --n 128 --steps 50 --classes 7 -m "distilled:model=$MODEL" -m novelty \
    -m "distilled:model=$MODEL+novelty" --out $D/keep7 --no-progress 2> $D/keep7.log &
wait
# 3. rank guidance (2026-12-02): the same seeds and classes, ranks at s = 3 and 8 beside s = 1
OMP_NUM_THREADS=2 $PY benchmarks/distill_frontier.py --model "$MODEL" --classes 1,3,7 --batches 8 --rank-scales 3,8 \
    --particle "" --out $D/rank_scale > $D/rank_scale.log 2>&1
$PY $D/rank_scale_plot.py
