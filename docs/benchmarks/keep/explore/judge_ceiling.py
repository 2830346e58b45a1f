"""How well can any space other than the judge's say which new sample is a near-duplicate of history? The question of
query_auc.py (512 plain samples of a class, seeds 0..511; each of the last 256 a query against all earlier ones,
labelled by the evaluation embedder at tau; ROC-AUC of the nearest-earlier distance) asked of two more spaces:

- a self-supervised encoder (SimCLR, labels unused) trained on the MNIST-5k train split with digit augmentations
  (rotation, scale, shear, shift, thickening/thinning, noise): a learned, judge-free guidance space;
- a second evaluation embedder: the judge's own architecture and recipe (``train_embedder``), seed 1 instead of 0.
  Not a guidance space (it is the judge's twin): it measures how far another judge of the same kind agrees with this
  one, i.e. the ceiling of the question itself.

    OMP_NUM_THREADS=1 python judge_ceiling.py sample CLASS 512          # plain samples -> /tmp/judge_ceiling/ (~8 min)
    OMP_NUM_THREADS=2 python judge_ceiling.py simclr 60                 # ~9 min on 2 cores
    OMP_NUM_THREADS=2 python judge_ceiling.py twin 1                    # ~9 min on 2 cores (seed 2: a third judge)
    OMP_NUM_THREADS=1 python judge_ceiling.py auc CLASS 512 >> logs/judge_ceiling.jsonl
"""
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from noveltynets.bench.runner import Judge
from noveltynets.data import load_split
from noveltynets.models import load_model
from noveltynets.models.embedder import load_eval_embedder, train_embedder
from noveltynets.sampling import SamplingConfig, sample

DIR = Path("/tmp/judge_ceiling")


def twin_dir(seed: int) -> Path:
    """Where the twin trained with ``seed`` lives (seed 1: ``twin``, as the sixth exploration part made it)."""
    return DIR / ("twin" if seed == 1 else f"twin{seed}")


def augment(x, g):
    n = len(x)
    r = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=g)  # noqa: E731
    ang, sc, sh = r(-0.21, 0.21), r(0.85, 1.1), r(-0.15, 0.15)
    tx, ty = r(-0.19, 0.19), r(-0.19, 0.19)
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin + sh, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    y = F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1
    m = torch.rand(n, generator=g)
    dil, ero = F.max_pool2d(y, 3, 1, 1), -F.max_pool2d(-y, 3, 1, 1)
    y = torch.where((m < 0.2)[:, None, None, None], dil, torch.where((m > 0.9)[:, None, None, None], ero, y))
    return (y + 0.1 * torch.randn(y.shape, generator=g)).clamp(-1, 1)


class Encoder(nn.Module):
    def __init__(self, d=128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(32, 64, 4, 2, 1), nn.GroupNorm(8, 64), nn.SiLU(),
            nn.Conv2d(64, 128, 4, 2, 1), nn.GroupNorm(8, 128), nn.SiLU(),
            nn.Conv2d(128, 128, 4, 2, 1), nn.GroupNorm(8, 128), nn.SiLU(), nn.Flatten(), nn.Linear(2048, d))
        self.proj = nn.Sequential(nn.SiLU(), nn.Linear(d, d), nn.SiLU(), nn.Linear(d, 64))

    def forward(self, x):
        return self.body(x)


def ntxent(z1, z2, tau):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    s = z @ z.T / tau
    s.fill_diagonal_(-1e9)
    return F.cross_entropy(s, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))


def simclr(epochs=60, bs=256, tau=0.2, seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = load_split("train").images
    m = Encoder()
    opt = torch.optim.AdamW(m.parameters(), 2e-3, weight_decay=1e-4)
    spe = len(x) // bs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * spe)
    t0 = time.time()
    for ep in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(spe):
            b = x[perm[i * bs:(i + 1) * bs]]
            loss = ntxent(m.proj(m(augment(b, g))), m.proj(m(augment(b, g))), tau)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(json.dumps({"epoch": ep + 1, "loss": round(loss.item(), 4), "s": round(time.time() - t0)}), flush=True)
    torch.save(m.state_dict(), DIR / "simclr.pt")


def auc(klass, N):
    judge = Judge(klass)
    X = torch.load(DIR / f"plain_c{klass}_{N}.pt")
    Q0 = N // 2
    earlier = torch.tril(torch.ones(N, N, dtype=torch.bool), -1)

    def nearest_earlier(d):
        return d.masked_fill(~earlier, float("inf")).min(1).values[Q0:]

    fe = torch.from_numpy(judge.ev.features(X).numpy()).double()
    label = (nearest_earlier(torch.cdist(fe, fe)) < judge.tau).numpy()
    enc = Encoder()
    enc.load_state_dict(torch.load(DIR / "simclr.pt"))
    enc.eval()
    with torch.no_grad():
        body = enc(X)
        spaces = {"pixels": X.flatten(1), "simclr body": body, "simclr body, unit": F.normalize(body, dim=1),
                  "simclr projection, unit": F.normalize(enc.proj(body), dim=1),
                  "the judge's twin (seed 1)": load_eval_embedder(twin_dir(1)).features(X)}
        if twin_dir(2).exists():
            spaces["the judge's twin (seed 2)"] = load_eval_embedder(twin_dir(2)).features(X)
    for k, e in spaces.items():
        e = e.double()
        print(json.dumps({"class": klass, "n": N, "near_dup_rate": round(float(label.mean()), 3), "space": k,
                          "query_auc": round(roc_auc_score(label, -nearest_earlier(torch.cdist(e, e)).numpy()), 3)}), flush=True)


if __name__ == "__main__":
    DIR.mkdir(exist_ok=True)
    what = sys.argv[1]
    if what == "sample":
        k, n = int(sys.argv[2]), int(sys.argv[3])
        X = sample(load_model(), range(n), SamplingConfig(klass=k, cfg=2.0, steps=50, batch_size=16)).images
        torch.save(X, DIR / f"plain_c{k}_{n}.pt")
    elif what == "simclr":
        simclr(int(sys.argv[2]))
    elif what == "twin":
        seed = int(sys.argv[2])
        print(train_embedder(twin_dir(seed), seed=seed, show_progress=False))
    else:
        auc(int(sys.argv[2]), int(sys.argv[3]))
