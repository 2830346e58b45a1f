"""Exploration: history as extra particles (exact oracle). Particle guidance's RBF repulsion, with each
sample's K nearest history x̂0 (at the same step, or finished samples) as extra, fixed particles.

    OMP_NUM_THREADS=1 HW=5.5 K=16 PER_STEP=1 python keep_hp.py CLASS R N STEPS hp-cont,hp-fresh
"""

import json
import math
import os
import sys
import time
from dataclasses import dataclass

import torch

from noveltynets.bench.runner import Judge
from noveltynets.guidance.base import GuidanceTerm, embedding_step
from noveltynets.guidance.particle import rbf_repulsion
from noveltynets.embed.embedders import PooledPixels
from noveltynets.models import load_model
from noveltynets.sampling import sample

sys.path.insert(0, os.path.dirname(__file__))
from keep_explore import metrics_cover  # noqa: E402


@dataclass
class HistParticles(GuidanceTerm):
    name = "hp-explore"
    scale: float = 1.0
    stop: float = 0.95
    batch_weight: float = 5.5
    hist_weight: float = 5.5
    k: int = 16
    per_step: bool = True
    bandwidth: str = "batch"  # "batch": the batch's median bandwidth; "hist": median of the K-NN distances

    def __post_init__(self):
        super().__post_init__()
        self.emb = PooledPixels(32)
        self.hist: dict = {}
        self.cur: dict = {}

    def reset(self):
        self.cur = {}

    def grad(self, x0_hat, info):
        with torch.enable_grad():
            x = x0_hat.detach().requires_grad_(True)
            graph = (x, self.emb(x))
        e = graph[1].detach().double()
        i = info["i"]
        self.cur[i] = e
        b = len(e)
        delta = self.batch_weight * rbf_repulsion(e) if b > 1 else torch.zeros_like(e)
        H = self.hist.get(i if self.per_step else "final")
        if H is not None and len(H) and self.hist_weight:
            d = torch.cdist(e, H)
            kk = min(self.k, len(H))
            dk, idx = d.topk(kk, dim=1, largest=False)
            if self.bandwidth == "batch" and b > 2:
                d2 = torch.cdist(e, e).pow(2)
                off = ~torch.eye(b, dtype=torch.bool)
                h = (d2[off].median() / math.log(b)).clamp_min(1e-12)
            else:
                h = (dk.pow(2).median() / math.log(max(kk, 2))).clamp_min(1e-12)
            kern = torch.exp(-dk.pow(2) / h)
            diff = e[:, None, :] - H[idx]
            delta = delta + self.hist_weight * (kern[..., None] * diff).sum(1) / max(b - 1, 1)
        return embedding_step(self.emb, x0_hat, delta.to(x0_hat.dtype), info.get("alpha_bar"), graph)

    def on_samples_end(self, x0, info):
        with torch.no_grad():
            final = self.emb(x0).double()
        items = [("final", final)] + list(self.cur.items())
        for key, e in items:
            self.hist[key] = torch.cat([self.hist[key], e]) if key in self.hist else e
        self.cur = {}


def main():
    klass, R, N, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    names = sys.argv[5].split(",")
    tc = dict(hist_weight=float(os.environ.get("HW", 5.5)), k=int(os.environ.get("K", 16)),
              per_step=os.environ.get("PER_STEP", "1") == "1", batch_weight=float(os.environ.get("BW", 5.5)),
              bandwidth=os.environ.get("BAND", "batch"), stop=float(os.environ.get("STOP", 0.95)))
    tag = os.environ.get("TAG", "")
    model = load_model()
    judge = Judge(klass)
    terms = {n: HistParticles(**tc) for n in names}
    images = {n: [] for n in names}
    for r in range(R):
        seeds = list(range(r * N, (r + 1) * N))
        for n in names:
            term = terms[n]
            if n.endswith("fresh"):
                term.hist = {}
            t1 = time.time()
            run = sample(model, seeds, klass, cfg=2.0, steps=steps, batch_size=16, guidance=[term])
            secs = time.time() - t1
            hist = torch.cat(images[n]) if images[n] else None
            m = judge(run.images, hist)
            images[n].append(run.images)
            allf = judge.ev.features(torch.cat(images[n])).numpy()
            row = {"tag": tag, **tc, "class": klass, "method": n, "run": r + 1, "seconds": round(secs, 1),
                   **{k: round(m[k], 4) for k in ("near_dup", "novelty", "precision", "adherence", "recall", "coverage")},
                   "modes": metrics_cover(allf, judge.tau)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
