"""How far apart, in the guidance embedding (pixels 32x32), are near-duplicates by the evaluation embedder? In units of l
(the median nearest-neighbour distance of a 128-sample pool), for plain samples of one class (50 steps, CFG 2)."""
import sys, json
import torch, numpy as np
from noveltynets.bench.runner import Judge
from noveltynets.embed.embedders import PooledPixels
from noveltynets.memory.setup import POOL_SEED_BASE
from noveltynets.models import load_model
from noveltynets.sampling import sample

klass, n = int(sys.argv[1]), int(sys.argv[2])
model = load_model()
judge = Judge(klass)
emb = PooledPixels(32)
pool = sample(model, range(POOL_SEED_BASE, POOL_SEED_BASE + 128), klass, 2.0, 50, batch_size=64).images
runs = sample(model, range(n), klass, 2.0, 50, batch_size=64).images
torch.save({"pool": pool, "runs": runs}, f"logs/plain_c{klass}_{n}.pt")
p = emb(pool).double(); d = torch.cdist(p, p); d.fill_diagonal_(float("inf")); ell = float(d.min(1).values.median())
e = emb(runs).double(); dp = torch.cdist(e, e) / ell
f = torch.from_numpy(judge.ev.features(runs).numpy()).double(); de = torch.cdist(f, f)
iu = torch.triu_indices(n, n, 1)
near = de[iu[0], iu[1]] < judge.tau
px = dp[iu[0], iu[1]]
print(json.dumps({"class": klass, "ell": ell, "tau": judge.tau, "pairs_near": int(near.sum()),
      "px_of_near_q10_50_90": [float(x) for x in px[near].quantile(torch.tensor([0.1, 0.5, 0.9]).double())],
      "px_of_all_q10_50_90": [float(x) for x in px.quantile(torch.tensor([0.1, 0.5, 0.9]).double())],
      "nn_px_median": float(dp.fill_diagonal_(float('inf')).min(1).values.median())}))
