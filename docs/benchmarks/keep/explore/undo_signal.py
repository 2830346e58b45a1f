"""Does the model's disagreement with a push, free at every step, tell the samples the judge calls imprecise? The
samples of precision_proxy.py (same seeds, memory and weights: the same images); at each step k, the guided x̂0
(after the push) and the next step's unguided x̂0 (the model's own estimate from where the push led). Per sample,
over the second half of the run: the mean gap ‖x̂0_unguided(k+1) − x̂0_guided(k)‖, and the share of the push the
model undid, Σ⟨x̂0_guided(k) − x̂0_unguided(k+1), push(k)⟩ / Σ‖push(k)‖². ROC-AUC of each for "outside".

    OMP_NUM_THREADS=2 python undo_signal.py CLASS N STEPS > logs/undo_signal_cC.json
"""
import json
import sys

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from noveltynets.guidance import NoveltyGuidance
from precision_proxy import outside_by_kind, pushed_samples

rec = {"guided": {}, "unguided": {}}  # step -> list of (B, ...) per batch, in batch order (also move_signal.py's)


class Recording(NoveltyGuidance):
    def grad(self, x0_hat, info):
        rec["unguided"].setdefault(info["i"], []).append(x0_hat.clamp(-1, 1).flatten(1).clone())
        return super().grad(x0_hat, info)


def on_step(d):
    rec["guided"].setdefault(d["i"], []).append(d["x0_hat"].flatten(1).clone())


def signals(steps, gaps, undos):
    """After each run: per sample, its mean late gap and share undone, from the recorded steps."""
    g = {k: torch.cat(v) for k, v in rec["guided"].items()}
    u = {k: torch.cat(rec["unguided"][k]) if k in rec["unguided"] else g[k] for k in g}
    late = [k for k in sorted(g) if steps // 2 <= k < steps - 1]
    gap = torch.stack([(u[k + 1] - g[k]).norm(dim=1) for k in late]).mean(0)
    push = {k: g[k] - u[k] for k in late}
    undone = sum(((g[k] - u[k + 1]) * push[k]).sum(1) for k in late) / sum(push[k].pow(2).sum(1) for k in late).clamp_min(1e-12)
    rec["guided"].clear(), rec["unguided"].clear()
    gaps.append(gap.numpy()), undos.append(undone.numpy())


def main():
    klass, N, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    gaps, undos = [], []
    s = pushed_samples(klass, N, steps, term=Recording, callback=on_step, after_run=lambda: signals(steps, gaps, undos))
    gap, undo = np.concatenate(gaps), np.concatenate(undos)
    pushed = s.kinds != "plain"
    print(json.dumps({"class": klass, "n": len(s.images), "outside_by_kind": outside_by_kind(s),
                      "auc_all": {"late_gap": round(float(roc_auc_score(s.outside, gap)), 3)},
                      "auc_pushed": {"late_gap": round(float(roc_auc_score(s.outside[pushed], gap[pushed])), 3),
                                     "share_undone": round(float(roc_auc_score(s.outside[pushed], undo[pushed])), 3)},
                      "share_undone_mean": {k: round(float(undo[s.kinds == k].mean()), 3) for k in dict.fromkeys(s.kinds) if k != "plain"}}))


if __name__ == "__main__":
    main()
