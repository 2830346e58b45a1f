"""Can any judge-free space say which new sample is a near-duplicate of history? For N plain samples of one class
(seeds 0..N-1, 50 steps, CFG 2), each sample of the second half is a query against all earlier samples; its label is
"near-duplicate of an earlier sample" by the evaluation embedder (distance < tau). ROC-AUC of the nearest-earlier
distance in each candidate space (the finished samples), and in the memory's space at earlier steps (x̂0 at step k
against the earlier samples' x̂0 at step k, and against their finished samples). The all-pairs AUC of embed_align.py
(0.96) is dominated by easy far pairs; this is the question a memory must answer.

    OMP_NUM_THREADS=1 python query_auc.py CLASS N > logs/query_auc_cCLASS.jsonl      # ~10 min for N = 512
"""
import json
import sys

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from noveltynets.bench.runner import Judge
from noveltynets.embed import embedder_from_spec
from noveltynets.minority.score import DenoiserDistance, unit_channels
from noveltynets.models import load_model
from noveltynets.sampling import SamplingConfig, sample

klass, N = int(sys.argv[1]), int(sys.argv[2])
model, judge = load_model(), Judge(klass)
emb = embedder_from_spec("pooled-pixels:32")
STEPS = (1, 3, 5, 8, 12, 18, 25, 35)
x0 = {k: [] for k in STEPS}


def record(d):
    if d["i"] in x0:
        x0[d["i"]].append(emb(d["x0_hat"]).detach())


X = sample(model, range(N), SamplingConfig(klass=klass, cfg=2.0, steps=50, batch_size=16), callback=record).images
Q0 = N // 2
fe = torch.from_numpy(judge.ev.features(X).numpy()).double()
earlier = torch.tril(torch.ones(N, N, dtype=torch.bool), -1)


def nearest_earlier(d):
    return d.masked_fill(~earlier, float("inf")).min(1).values[Q0:]


label = (nearest_earlier(torch.cdist(fe, fe)) < judge.tau).numpy()


def row(space, d, **kw):
    print(json.dumps({"class": klass, "n": N, "queries": N - Q0, "near_dup_rate": round(float(label.mean()), 3),
                      "space": space, **kw, "query_auc": round(roc_auc_score(label, -nearest_earlier(d.double()).numpy()), 3)}), flush=True)


def blur(x, sigma):
    k = int(3 * sigma) * 2 + 1
    g = torch.exp(-(torch.arange(k) - k // 2) ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return F.conv2d(F.pad(x, (k // 2,) * 4, mode="replicate"), (g[:, None] * g[None]).view(1, 1, k, k))


with torch.no_grad():
    final = emb(X).double()
    fp = final.flatten(1)
    for s in (32, 16, 8, 4):
        e = F.adaptive_avg_pool2d(X, s).flatten(1).double()
        row(f"pooled-pixels:{s}", torch.cdist(e, e))
    for sigma in (1.0, 2.5):
        e = blur(X, sigma).flatten(1).double()
        row(f"blurred pixels sigma={sigma}", torch.cdist(e, e))
    pad, best = F.pad(X, (2,) * 4, value=-1), None  # distance up to a shift of 2 pixels
    for dx in range(-2, 3):
        for dy in range(-2, 3):
            d = torch.cdist(X.flatten(1).double(), pad[:, :, 2 + dy:34 + dy, 2 + dx:34 + dx].flatten(1).double())
            best = d if best is None else torch.minimum(best, d)
    row("pixels, min over shifts of 2", torch.minimum(best, best.T))
    dd = DenoiserDistance(model.unet)
    for t in (20, 300):
        dd.t = t
        taps = [dd._taps(c) for c in X.split(64)]
        for layer in range(len(taps[0])):
            f = unit_channels(torch.cat([tp[layer] for tp in taps])).flatten(1).double()
            row(f"denoiser down block {layer}, t={t}, unit channels", torch.cdist(f, f))
    mid = embedder_from_spec("denoiser-mid:t=20", model)
    e = torch.cat([mid(c) for c in X.split(64)]).double()
    row("denoiser-mid:t=20", torch.cdist(e, e))
    for k in STEPS:  # the memory's space during the run
        e = torch.cat(x0[k]).double()
        row("pooled-pixels:32 at step", torch.cdist(e, e), step=k, against="their x̂0 at the same step")
        row("pooled-pixels:32 at step", torch.cdist(e, final), step=k, against="their finished samples")
