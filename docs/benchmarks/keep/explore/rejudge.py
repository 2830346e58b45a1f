"""The same keep samples under two judges: the evaluation embedder and its twin (judge_ceiling.py's, same recipe,
seed 1). Reads the images keep_explore.py saved (SAVE=DIR) and prints, per method and run, the near-dup rate vs all
earlier samples of that method's history under each judge (each judge's own tau from the real class), and runs
FIRST.. pooled per judge with the first method's ratio to the others.

    python rejudge.py DIR CLASS [FIRST]     # e.g. /tmp/judges 7 2; the twin from `judge_ceiling.py twin 1`
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from noveltynets import metrics
from noveltynets.data import from_uint8, load_mnist5k
from noveltynets.models.embedder import load_eval_embedder

from judge_ceiling import DIR as CEILING_DIR

out, klass = Path(sys.argv[1]), int(sys.argv[2])
first = int(sys.argv[3]) if len(sys.argv) > 3 else 2
judges = {"judge": load_eval_embedder(), "twin": load_eval_embedder(CEILING_DIR / "twin")}
real = load_mnist5k().of_class(klass)
tau = {k: metrics.near_dup_threshold(j.features(real).numpy()) for k, j in judges.items()}
methods = sorted({p.name.split("_c")[0] for p in out.glob(f"*_c{klass}_run*.pt")}, key=lambda m: (m != "cont", m))
pooled = {}
for m in methods:
    runs = sorted(out.glob(f"{m}_c{klass}_run*.pt"), key=lambda p: int(p.stem.split("run")[1]))
    X = torch.cat([from_uint8(torch.load(p).numpy()) for p in runs])
    n = len(X) // len(runs)
    for k, j in judges.items():
        dup = metrics.nearest_earlier_distance(j.features(X).numpy()) < tau[k]
        per_run = [float(dup[max(1, r * n):(r + 1) * n].mean()) for r in range(len(runs))]
        pooled[m, k] = (int(dup[(first - 1) * n:].sum()), len(dup) - (first - 1) * n)
        print(json.dumps({"class": klass, "method": m, "judge": k, "near_dup": [round(v, 3) for v in per_run]}))
for k in judges:
    (a, na) = pooled[methods[0], k]
    for m in methods[1:]:
        b, nb = pooled[m, k]
        print(json.dumps({"class": klass, "judge": k, "runs_from": first, methods[0]: f"{a}/{na}", m: f"{b}/{nb}",
                          "ratio": round((a / na) / max(b / nb, 1e-9), 2)}))
