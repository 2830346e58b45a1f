"""Which judge-free signal tells a pushed sample that the judge calls imprecise (outside the real class's k-NN
manifold in the evaluation embedder's space)? Samples: plain, then a continued memory's runs at rising weight, all
pushed to 0.95 of the run; per sample, the judge's "inside" and each candidate signal; ROC-AUC of each.

    OMP_NUM_THREADS=2 python precision_proxy.py CLASS N STEPS > logs/precision_proxy_cC.json
"""
import json
import sys
from types import SimpleNamespace

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


def pushed_samples(klass, N, steps, term=NoveltyGuidance, callback=None, after_run=lambda: None):
    """The probes' samples (this one's and undo_signal.py's): N plain sevens on seeds 0..N-1, then four runs of N on
    the next seeds by one continued memory (real reference) pushed to 0.95 at weights 2, 2, 4, 4, with ``term`` as the
    guidance class; ``callback`` sees every step, ``after_run()`` is called after each run. Also the judge's "outside"."""
    model = load_model()
    emb = embedder_from_spec(DEFAULT_EMBEDDER, model)
    judge = Judge(klass)
    config = SamplingConfig(klass=klass, cfg=2.0, steps=steps, batch_size=16)
    ref = real_reference(emb, klass)
    mem = new_memory(emb, model.model_id, trajectory=True, negatives="real")
    mem.set_reference(ref)
    images, kinds = [sample(model, range(N), config, callback=callback).images], ["plain"] * N
    after_run()
    for r, w in enumerate([2.0, 2.0, 4.0, 4.0]):
        guide = term(memory_weight=w, memory_stop=0.95, memory=mem, embedder=emb)
        images.append(sample(model, range((r + 1) * N, (r + 2) * N), config, [guide], callback=callback).images)
        kinds += [f"w{w}"] * N
        after_run()
    x = torch.cat(images)
    outside = ~metrics.inside_real_manifold(judge.real, judge.ev.features(x).numpy())
    return SimpleNamespace(model=model, emb=emb, ref=ref, mem=mem, images=x, kinds=np.array(kinds), outside=outside)


def outside_by_kind(s) -> dict:
    return {k: float(s.outside[s.kinds == k].mean()) for k in dict.fromkeys(s.kinds)}


def main():
    klass, N, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    s = pushed_samples(klass, N, steps)
    sig = {}
    with torch.no_grad():
        e = s.emb(s.images)
        for space, (r, q) in {"pca32": (s.mem.negatives, s.mem.project(e)), "full": (s.ref, e)}.items():  # memory's, pixels
            r, q = r.double(), q.double()
            d, rr = torch.cdist(q, r), torch.cdist(r, r)
            for k in (1, 5):  # margin outside the reference's k-NN balls (Kynkäänniemi's manifold, in that space): <= 0 inside
                sig[f"margin_{space}_k{k}"] = (d - rr.kthvalue(k + 1, dim=1).values).min(1).values.numpy()
        sig["nn_full"] = d.min(1).values.numpy()  # d: the full space's, the last one above
        sig["p_seen"] = torch.sigmoid(s.mem.logit(e)).numpy()
    cls = torch.full((len(s.images),), klass)
    for t in (0.1, 0.3, 0.6, 0.9):  # the model's own reconstruction loss (minority score): off-manifold = restored badly
        for dist in ("l2", "denoiser"):
            sig[f"minority_{dist}_t{t}"] = minority_score(s.model, s.images, cls, t=t, draws=2, distance=dist).numpy()
    print(json.dumps({"class": klass, "n": len(s.images), "outside_by_kind": outside_by_kind(s),
                      "auc": {k: round(float(roc_auc_score(s.outside, v)), 3) for k, v in sig.items()}}))


if __name__ == "__main__":
    main()
