"""Does the memory's late push work against the class? Per step and sample, the cosine between the memory part's
x̂0 change and the class direction CFG follows, d = x̂0(class) − x̂0(null) at the same x_t. One continued memory
(today's default) learns runs 1..H of N; in run H+1 each memory-active step's push is compared with d, and each
sample's push-weighted mean cosine is scored against the judge's "outside" (ROC-AUC).

    OMP_NUM_THREADS=2 python cfg_align.py CLASS N STEPS H > logs/cfg_align_cC.json
"""
import json
import sys

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from noveltynets import metrics
from noveltynets.guidance import NoveltyGuidance
from noveltynets.guidance.base import embedding_step
from noveltynets.models.unet import NULL_CLASS
from noveltynets.sampling import sample

from keep_explore import one_memory


class Probe(NoveltyGuidance):
    """The default term, recording per sample ⟨dx_mem, d⟩/(‖dx_mem‖‖d‖) and ‖dx_mem‖ at each memory-active step."""
    rows: list = []

    def grad(self, x0_hat, info):
        progress = info["i"] / info["num_steps"]
        if self._knows() and self._memory_acts(progress):
            with torch.no_grad():
                emb = self.embedder(x0_hat)
            dx = embedding_step(self.embedder, x0_hat, self.memory_weight * self.memory_step(emb))  # unscaled x̂0 change
            unet, x, t, a = info["denoiser"].unet, info["x"], info["t"], info["alpha_bar"]
            with torch.no_grad():
                cls = info["classes"]
                e = unet(torch.cat([x, x]), torch.cat([t, t]), class_labels=torch.cat([cls, torch.full_like(cls, NULL_CLASS)])).sample
                ec, eu = e.chunk(2)
            d = -((1 - a).sqrt() / a.sqrt()) * (ec - eu)  # x̂0(class) − x̂0(null)
            f, g = dx.flatten(1), d.flatten(1)
            cos = (f * g).sum(1) / (f.norm(dim=1) * g.norm(dim=1)).clamp_min(1e-12)
            Probe.rows.append((info["i"], cos.numpy(), f.norm(dim=1).numpy()))
        return super().grad(x0_hat, info)


def auc(labels, score):
    """ROC-AUC of ``score`` for ``labels``, or None where only one kind of label occurs."""
    return round(float(roc_auc_score(labels, score)), 3) if 0 < labels.sum() < len(labels) else None


def main():
    klass, N, steps, H = (int(a) for a in sys.argv[1:5])
    model, emb, judge, config, mem = one_memory(klass, steps)
    for r in range(H):  # the memory learns runs 1..H as it samples them
        sample(model, range(r * N, (r + 1) * N), config, [NoveltyGuidance(memory=mem, embedder=emb)])
    per_batch = []
    for b in range(0, N, config.batch_size):
        Probe.rows = []
        seeds = range(H * N + b, H * N + b + config.batch_size)
        img = sample(model, seeds, config, [Probe(memory=mem, embedder=emb)]).images
        cos = np.stack([c for _, c, _ in Probe.rows]); norm = np.stack([n for _, _, n in Probe.rows])
        per_batch.append((img, cos, norm, [i for i, _, _ in Probe.rows]))
        mem.observe(emb(img))  # a continued memory learns each batch (no trajectory here: a probe, not the protocol)
    imgs = torch.cat([p[0] for p in per_batch])
    cos = np.concatenate([p[1] for p in per_batch], axis=1); norm = np.concatenate([p[2] for p in per_batch], axis=1)
    steps_i = per_batch[0][3]
    outside = ~metrics.inside_real_manifold(judge.real, judge.ev.features(imgs).numpy())
    wmean = (cos * norm).sum(0) / norm.sum(0).clip(1e-12)
    neg = (np.minimum(cos, 0) * norm).sum(0)  # push length spent against the class direction
    late = [k for k, i in enumerate(steps_i) if i >= 0.5 * steps]
    out = {"class": klass, "n": int(len(imgs)), "outside": float(outside.mean()),
           "cos_by_step": {int(i): round(float(cos[k].mean()), 3) for k, i in enumerate(steps_i)},
           "cos_mean": round(float(cos.mean()), 3), "cos_weighted_mean": round(float(wmean.mean()), 3),
           "frac_steps_negative": round(float((cos < 0).mean()), 3),
           "auc_outside": {name: auc(outside, score) for name, score in
                           {"-wmean_cos": -wmean, "-neg_len": -neg, "push_len": norm.sum(0), "-late_cos": -cos[late].mean(0)}.items()}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
