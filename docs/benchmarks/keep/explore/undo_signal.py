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

from noveltynets import metrics
from noveltynets.bench.runner import Judge
from noveltynets.embed import DEFAULT_EMBEDDER, embedder_from_spec
from noveltynets.guidance import NoveltyGuidance
from noveltynets.memory.store import new_memory
from noveltynets.models import load_model
from noveltynets.sampling import SamplingConfig, sample
from noveltynets.session import real_reference

klass, N, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
model = load_model()
emb = embedder_from_spec(DEFAULT_EMBEDDER, model)
judge = Judge(klass)
config = SamplingConfig(klass=klass, cfg=2.0, steps=steps, batch_size=16)
mem = new_memory(emb, model.model_id, trajectory=True, negatives="real")
mem.set_reference(real_reference(emb, klass))
rec = {"guided": {}, "unguided": {}}  # step -> list of (B, ...) per batch, in batch order


class Recording(NoveltyGuidance):
    def grad(self, x0_hat, info):
        rec["unguided"].setdefault(info["i"], []).append(x0_hat.clamp(-1, 1).flatten(1).clone())
        return super().grad(x0_hat, info)


def on_step(d):
    rec["guided"].setdefault(d["i"], []).append(d["x0_hat"].flatten(1).clone())


def signals():
    """Per sample of the last run: mean late gap and share undone, from the recorded steps."""
    g = {k: torch.cat(v) for k, v in rec["guided"].items()}
    u = {k: torch.cat(rec["unguided"][k]) if k in rec["unguided"] else g[k] for k in g}
    late = [k for k in sorted(g) if steps // 2 <= k < steps - 1]
    gap = torch.stack([(u[k + 1] - g[k]).norm(dim=1) for k in late]).mean(0)
    push = {k: g[k] - u[k] for k in late}
    undone = sum(((g[k] - u[k + 1]) * push[k]).sum(1) for k in late) / sum(push[k].pow(2).sum(1) for k in late).clamp_min(1e-12)
    rec["guided"].clear(), rec["unguided"].clear()
    return gap.numpy(), undone.numpy()


images, kinds, gaps, undos = [], [], [], []
run = sample(model, range(N), config, callback=on_step)
images.append(run.images); kinds += ["plain"] * N
g, u = signals(); gaps.append(g); undos.append(u)
for r, w in enumerate([2.0, 2.0, 4.0, 4.0]):
    term = Recording(memory_weight=w, memory_stop=0.95, memory=mem, embedder=emb)
    images.append(sample(model, range((r + 1) * N, (r + 2) * N), config, [term], callback=on_step).images)
    kinds += [f"w{w}"] * N
    g, u = signals(); gaps.append(g); undos.append(u)
x = torch.cat(images)
outside = ~metrics.inside_real_manifold(judge.real, judge.ev.features(x).numpy())
gap, undo = np.concatenate(gaps), np.concatenate(undos)
pushed = np.array(kinds) != "plain"
print(json.dumps({"class": klass, "n": len(x), "outside_by_kind": {k: float(outside[np.array(kinds) == k].mean()) for k in dict.fromkeys(kinds)},
                  "auc_all": {"late_gap": round(float(roc_auc_score(outside, gap)), 3)},
                  "auc_pushed": {"late_gap": round(float(roc_auc_score(outside[pushed], gap[pushed])), 3),
                                 "share_undone": round(float(roc_auc_score(outside[pushed], undo[pushed])), 3)},
                  "share_undone_mean": {k: round(float(undo[np.array(kinds) == k].mean()), 3) for k in dict.fromkeys(kinds) if k != "plain"}}))
