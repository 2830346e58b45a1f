"""Which judge-free signal tells a pushed sample that the judge calls imprecise (outside the real class's k-NN
manifold in the evaluation embedder's space)? Samples: plain, then a continued memory's runs at rising weight, all
pushed to 0.95 of the run; per sample, the judge's "inside" and each candidate signal; ROC-AUC of each.

    OMP_NUM_THREADS=2 python precision_proxy.py CLASS N STEPS > logs/precision_proxy_cC.json
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
from noveltynets.minority.score import minority_score
from noveltynets.models import load_model
from noveltynets.sampling import SamplingConfig, sample
from noveltynets.session import real_reference

klass, N, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
model = load_model()
emb = embedder_from_spec(DEFAULT_EMBEDDER, model)
judge = Judge(klass)
config = SamplingConfig(klass=klass, cfg=2.0, steps=steps, batch_size=16)
ref = real_reference(emb, klass)
mem = new_memory(emb, model.model_id, trajectory=True, negatives="real")
mem.set_reference(ref)
images, kinds = [], []
images.append(sample(model, range(N), config).images); kinds += ["plain"] * N
for r, w in enumerate([2.0, 2.0, 4.0, 4.0]):
    term = NoveltyGuidance(memory_weight=w, memory_stop=0.95, memory=mem, embedder=emb)
    images.append(sample(model, range((r + 1) * N, (r + 2) * N), config, [term]).images); kinds += [f"w{w}"] * N
x = torch.cat(images)
f = judge.ev.features(x).numpy()
outside = ~metrics.inside_real_manifold(judge.real, f)
with torch.no_grad():
    e = emb(x)
    sig = {}
    for space, (r, q) in {"pca32": (mem.negatives, mem.project(e)), "full": (ref, e)}.items():  # the memory's space, pixels
        r, q = r.double(), q.double()
        for k in (1, 5):  # margin outside the reference's k-NN balls (Kynkäänniemi's manifold, in that space): <= 0 inside
            rad = torch.cdist(r, r).kthvalue(k + 1, dim=1).values
            sig[f"margin_{space}_k{k}"] = (torch.cdist(q, r) - rad).min(1).values.numpy()
    full_ref, full = ref.double(), e.double()
    sig["nn_full"] = torch.cdist(full, full_ref).min(1).values.numpy()
    sig["p_seen"] = torch.sigmoid(mem.logit(e)).numpy()
cls = torch.full((len(x),), klass)
for t in (0.1, 0.3, 0.6, 0.9):  # the model's own reconstruction loss (minority score): off-manifold = restored badly
    for dist in ("l2", "denoiser"):
        sig[f"minority_{dist}_t{t}"] = minority_score(model, x, cls, t=t, draws=2, distance=dist).numpy()
out = {"class": klass, "n": len(x), "outside_by_kind": {k: float(outside[np.array(kinds) == k].mean()) for k in dict.fromkeys(kinds)},
       "auc": {k: round(float(roc_auc_score(outside, v)), 3) for k, v in sig.items()}}
print(json.dumps(out))
