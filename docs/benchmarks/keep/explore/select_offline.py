"""Offline estimate of reject-and-resample near history: on images keep_explore.py saved (SAVE=DIR, methods cont and
unrel), drop the share q of each run's samples that sit nearest the memory's rows (the memory's own space, pixels
projected to 32-d by PCA of the real class, exact distance: the memory at its best) and judge the rest against the
method's whole history. The continued memory's rows are its own earlier samples; the unrelated control's are as many
plain samples of the class (judge_ceiling.py's, seeds 0..511). What a memory's selection buys, before paying for the
extra samples it needs (dropping q costs 1/(1-q) of the samples).

    python select_offline.py DIR CLASS [FIRST]      # e.g. /tmp/judges 7 2
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from noveltynets import metrics
from noveltynets.bench.runner import Judge
from noveltynets.data import load_mnist5k

from judge_ceiling import DIR as CEILING_DIR
from keep_explore import saved_runs

out, klass = Path(sys.argv[1]), int(sys.argv[2])
first = int(sys.argv[3]) if len(sys.argv) > 3 else 2
judge = Judge(klass)
real = load_mnist5k().of_class(klass)
pca = PCA(32, random_state=0).fit(real.flatten(1).numpy())
plain = torch.load(CEILING_DIR / f"plain_c{klass}_512.pt")


def space(x):
    return pca.transform(x.flatten(1).numpy())


QS = (0.0, 0.1, 0.2, 0.3, 0.5)
for method in ("cont", "unrel"):
    runs = saved_runs(out, method, klass)
    n = len(runs[0])
    feats = [judge.ev.features(x).numpy() for x in runs]  # each run's judge features and memory-space embedding, once
    spaced = [space(x) for x in runs]
    dups = {q: [0, 0] for q in QS}
    labels, scores = [], []
    for r in range(first - 1, len(runs)):
        rows = np.concatenate(spaced[:r]) if method == "cont" else space(plain[:r * n])
        score = -np.sqrt(((spaced[r][:, None] - rows[None]) ** 2).sum(-1)).min(1)  # higher = nearer the memory
        f_hist, f_cand = np.concatenate(feats[:r]), feats[r]
        d_all = metrics.nearest_earlier_distance(np.concatenate([f_hist, f_cand]))[len(f_hist):]
        labels += list(d_all < judge.tau)
        scores += list(score)
        for q in QS:
            keep = np.sort(np.argsort(score)[:int(round(n * (1 - q)))])  # the nearest q dropped, order kept
            d = metrics.nearest_earlier_distance(np.concatenate([f_hist, f_cand[keep]]))[len(f_hist):]
            dups[q][0] += int((d < judge.tau).sum())
            dups[q][1] += len(keep)
    print(json.dumps({"class": klass, "method": method, "runs_from": first,
                      "auc_of_score": round(roc_auc_score(labels, scores), 3),
                      "near_dup_by_q": {q: f"{a}/{b} = {a / b:.3f}" for q, (a, b) in dups.items()}}))
