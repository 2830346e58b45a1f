"""The eps-loss gap of a distilled model by noise range: right rank vs a wrong one vs no rank (768 training images each).

    python docs/benchmarks/distill/rank_gap_by_t.py MODEL_DIR   (MODEL_DIR/ranking.npz: its ranking)
"""
import sys
import torch
from noveltynets.models import load_model
from noveltynets.distill.rank import Ranking
from noveltynets.data import load_split
d = load_model(sys.argv[1]); rk = Ranking.load(sys.argv[1] + '/ranking.npz'); tr = load_split('train')
X = tr.images; C = torch.as_tensor(rk.classes); B = torch.as_tensor(rk.bin); abar = d.alphas_cumprod
g = torch.Generator().manual_seed(3)
with torch.no_grad():
  for lo, hi in [(0, 200), (200, 500), (500, 800), (800, 1000)]:
    n = 768; idx = torch.randint(len(X), (n,), generator=g); t = torch.randint(lo, hi, (n,), generator=g)
    e = torch.randn(X[idx].shape, generator=g); a = abar[t].view(-1,1,1,1); xt = a.sqrt()*X[idx] + (1-a).sqrt()*e
    right = C[idx] + 11*B[idx]; wrong = C[idx] + 11*((B[idx] - 1 + torch.randint(1, 16, (n,), generator=g)) % 16 + 1)
    l = lambda lab: (d.unet(xt, t, class_labels=lab).sample - e).pow(2).flatten(1).mean(1)
    lr_, lw, l0 = l(right), l(wrong), l(C[idx])
    print(lo, hi, 'loss', lr_.mean().item(), 'gap wrong-right', (lw-lr_).mean().item(), 'norank-right', (l0-lr_).mean().item())
