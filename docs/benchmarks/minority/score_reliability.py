"""Test-retest reliability of the minority score on the 4,500 training images: Spearman ρ between
two independent noise draws (seeds 0 and 10^6), and between two 4-draw averages:
python docs/benchmarks/minority/score_reliability.py"""
from scipy.stats import spearmanr

from noveltynets.data import load_split
from noveltynets.minority import minority_score
from noveltynets.models import load_model

model, train = load_model(), load_split("train")
for dist, cond in (("perceptual", False), ("l2", True)):
    c = train.labels if cond else None
    for draws in (1, 4):
        a, b = (minority_score(model, train.images, c, draws=draws, distance=dist, seed=s) for s in (0, 10**6))
        print(f"{dist:10s} {'conditional' if cond else 'unconditional':13s} draws {draws}: rho {spearmanr(a, b).correlation:.3f}", flush=True)
