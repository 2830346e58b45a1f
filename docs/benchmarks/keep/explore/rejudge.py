"""The same keep samples under two or three judges: the evaluation embedder and its twins (judge_ceiling.py's, same
recipe, seed 1, and seed 2 where `judge_ceiling.py twin 2` made it). Reads the images keep_explore.py saved (SAVE=DIR) and prints, per method and run, the near-dup rate vs all
earlier samples of that method's history under each judge (each judge's own tau from the real class), and runs
FIRST.. pooled per judge with the first method's ratio to the others, and that ratio's mean over the judges.

    python rejudge.py DIR CLASS [FIRST]     # e.g. /tmp/judges 7 2; the twin from `judge_ceiling.py twin 1`
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from noveltynets import metrics
from noveltynets.data import load_mnist5k
from noveltynets.models.embedder import load_eval_embedder

from judge_ceiling import twin_dir
from keep_explore import saved_runs

out, klass = Path(sys.argv[1]), int(sys.argv[2])
first = int(sys.argv[3]) if len(sys.argv) > 3 else 2
judges = {"judge": load_eval_embedder(), "twin": load_eval_embedder(twin_dir(1))}
if twin_dir(2).exists():  # a third judge of the same kind (judge_ceiling.py twin 2)
    judges["twin2"] = load_eval_embedder(twin_dir(2))
real = load_mnist5k().of_class(klass)
tau = {k: metrics.near_dup_threshold(j.features(real).numpy()) for k, j in judges.items()}
methods = sorted({p.name.split("_c")[0] for p in out.glob(f"*_c{klass}_run*.pt")}, key=lambda m: (m != "cont", m))
pooled = {}
for m in methods:
    runs = saved_runs(out, m, klass)
    X = torch.cat(runs)
    n = len(X) // len(runs)
    for k, j in judges.items():
        dup = metrics.nearest_earlier_distance(j.features(X).numpy()) < tau[k]
        per_run = [float(dup[max(1, r * n):(r + 1) * n].mean()) for r in range(len(runs))]
        pooled[m, k] = (int(dup[(first - 1) * n:].sum()), len(dup) - (first - 1) * n)
        print(json.dumps({"class": klass, "method": m, "judge": k, "near_dup": [round(v, 3) for v in per_run]}))


def ratio(m, k):
    """The first method's pooled rate over method m's, under judge k."""
    (a, na), (b, nb) = pooled[methods[0], k], pooled[m, k]
    return (a / na) / max(b / nb, 1e-9)


for k in judges:
    for m in methods[1:]:
        print(json.dumps({"class": klass, "judge": k, "runs_from": first, methods[0]: "%d/%d" % pooled[methods[0], k],
                          m: "%d/%d" % pooled[m, k], "ratio": round(ratio(m, k), 2)}))
for m in methods[1:]:
    print(json.dumps({"class": klass, "judges": len(judges), "runs_from": first, "ratio_of": f"{methods[0]}/{m}",
                      "mean_ratio": round(float(np.mean([ratio(m, k) for k in judges])), 2)}))
