"""Spearman rank correlation between the minority score of the 4,500 training images and their
AvgkNN (k = 5, leave-one-out) in the evaluation embedder's feature space, per noise level t,
distance and conditioning:  python docs/benchmarks/minority/score_vs_avgknn.py 0.7 0.9
(DISTANCES=denoiser,l2 picks the distances; the log's `perceptual` rows were measured before that
distance was retired, with the evaluation embedder's features, at commit d52d8c6)"""
import os
import sys

import torch
from scipy.stats import spearmanr

from noveltynets.data import load_split
from noveltynets.minority import minority_score, timestep_at
from noveltynets.models import load_model
from noveltynets.models.embedder import load_eval_embedder

model, train = load_model(), load_split("train")
f = load_eval_embedder().features(train.images)
d = torch.cdist(f, f).fill_diagonal_(float("inf"))
avg_knn = d.topk(5, largest=False).values.mean(1).numpy()
abar = model.alphas_cumprod
for t in map(float, sys.argv[1:] or ["0.9"]):
    print(f"t {t} (alpha_bar {float(abar[timestep_at(t, len(abar))]):.4f})", flush=True)
    for dist in os.environ.get("DISTANCES", "denoiser,l1,l2").split(","):
        for cond in (False, True):
            s = minority_score(model, train.images, train.labels if cond else None, t=t, distance=dist)
            print(f"  {dist:10s} {'conditional' if cond else 'unconditional':13s} rho {spearmanr(s, avg_knn).correlation:.3f}", flush=True)
