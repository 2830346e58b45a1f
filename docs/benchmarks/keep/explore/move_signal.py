"""Which free per-step signal tells the samples the judge calls imprecise? The images of precision_proxy.py (N per kind),
per sample over the second half of the run: late_gap (next unguided x̂0 vs the pushed one, as undo_signal.py), gap_over_push
(that gap over the push length), natural (how far the unguided x̂0 moves from step to step: what the memory_backoff screen read, 5ea419e),
gap_rel_med (the gap over its batch median), gap_rel_med_ema_max (the largest running mean, factor 0.8, of that ratio).
ROC-AUC of each, over all samples and over the pushed ones.

    OMP_NUM_THREADS=1 python move_signal.py CLASS N STEPS > logs/move_signal_cC.json
"""
import json
import sys

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from precision_proxy import outside_by_kind, pushed_samples
from undo_signal import Recording, on_step, rec

klass, N, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
out = {k: [] for k in ["late_gap", "gap_over_push", "natural", "gap_rel_med", "gap_rel_med_ema_max"]}


def signals():
    # per batch of 16 (batch order preserved) for the batch-median variants
    nb = len(next(iter(rec["guided"].values())))
    for b in range(nb):
        g = {k: v[b] for k, v in rec["guided"].items()}
        u = {k: rec["unguided"][k][b] if k in rec["unguided"] else g[k] for k in g}
        late = [k for k in sorted(g) if steps // 2 <= k < steps - 1]
        gap = torch.stack([(u[k + 1] - g[k]).norm(dim=1) for k in late])
        push = torch.stack([(g[k] - u[k]).norm(dim=1) for k in late])
        nat = torch.stack([(u[k + 1] - u[k]).norm(dim=1) for k in late])
        rel = gap / gap.median(dim=1, keepdim=True).values
        ema, mx = torch.ones(gap.shape[1]), torch.zeros(gap.shape[1])
        for row in rel:
            ema = 0.8 * ema + 0.2 * row; mx = torch.maximum(mx, ema)
        out["late_gap"].append(gap.mean(0).numpy()); out["gap_over_push"].append((gap / push.clamp_min(1e-9)).mean(0).numpy())
        out["natural"].append(nat.mean(0).numpy()); out["gap_rel_med"].append(rel.mean(0).numpy()); out["gap_rel_med_ema_max"].append(mx.numpy())
    rec["guided"].clear(), rec["unguided"].clear()
s = pushed_samples(klass, N, steps, term=Recording, callback=on_step, after_run=signals)
pushed = s.kinds != "plain"
res = {"class": klass, "n": len(s.images), "outside_by_kind": outside_by_kind(s)}
for k, v in out.items():
    v = np.concatenate(v)
    res[k] = {"all": round(float(roc_auc_score(s.outside, v)), 3), "pushed": round(float(roc_auc_score(s.outside[pushed], v[pushed])), 3)}
print(json.dumps(res))
