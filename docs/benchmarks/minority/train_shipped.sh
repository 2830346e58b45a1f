#!/usr/bin/env bash
# How the shipped minority classifier (src/noveltynets/assets/minority-classifier/) was made, on CPU (2 cores).
# Scores: l2 distance, each image reconstructed with its own digit as the class, 4 draws averaged
# (test-retest rho 0.83, rank correlation with AvgkNN 0.56: see README.md), 10 quantile classes.
# The classifier is class-conditional, p(l | x_t, t, digit), digit dropped 10% of the time (the paper's intra-class form).
# minority train also writes the threshold levels (thresholds, level_scores: the median score of each class) that
# minority-mix needs; the shipped config.json got them on 2026-12-02 from these same scores by the same function
# (noveltynets.minority.level_scores), its weights unchanged.
set -euo pipefail
cd "$(dirname "$0")/../../.."
noveltynets minority score --out docs/benchmarks/minority/scores_l2_cond_4draws.npz --overwrite \
  --distance l2 --conditional --draws 4 --seed 0 --no-progress
noveltynets minority train --scores docs/benchmarks/minority/scores_l2_cond_4draws.npz \
  --out src/noveltynets/assets/minority-classifier --overwrite --steps 3000 --batch-size 128 --seed 0 --class-conditional --no-progress
