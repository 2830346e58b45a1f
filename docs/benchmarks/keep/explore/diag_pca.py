"""Offline: does a memory in a low-dimensional PCA space of the pixels (fitted on the reference pool) flag later
near-dups of history as well as one on full pixels, and does its gradient point away from them?
Uses logs/plain_c{K}_{n}.pt (pixel_vs_eval.py): history = first H samples, new = the rest."""
import json, sys
import torch
from sklearn.metrics import roc_auc_score
from noveltynets.bench.runner import Judge
from noveltynets.embed.embedders import PooledPixels, Embedder
from noveltynets.memory.store import new_memory

class PCA(Embedder):
    clamps_input = True
    def __init__(self, ref_images, k):
        self.base = PooledPixels(32)
        x = self.base(ref_images).double()
        self.mean = x.mean(0)
        self.V = torch.linalg.svd(x - self.mean, full_matrices=False).Vh[:k].T.contiguous()
        self.dim, self.id = k, f"pca{k}"
    def __call__(self, x0):
        return ((self.base(x0).double() - self.mean) @ self.V).to(x0.dtype)

klass, n, H = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
D = torch.load(f"logs/plain_c{klass}_{n}.pt")
judge = Judge(klass)
f = torch.from_numpy(judge.ev.features(D["runs"]).numpy())
y = (torch.cdist(f[H:], f[:H]).min(1).values < judge.tau).numpy()
print("near-dups of history among new:", y.mean())
for spec in sys.argv[4:]:
    cfg = json.loads(spec); k = cfg.pop("pca", 0); pool_n = cfg.pop("pool", 128); real = cfg.pop("real", False)
    emb = PooledPixels(32)
    if real:
        from noveltynets.data import load_split
        refimg = load_split("train").of_class(klass)
    else:
        refimg = D["pool"][:pool_n]
    with torch.no_grad():
        eh, en, ep = emb(D["runs"][:H]).float(), emb(D["runs"][H:]).float(), emb(refimg).float()
    mem = new_memory(emb, "", "cpu", projection=k, **cfg)
    mem.set_reference(ep)
    P = (lambda x: mem.project(x).detach()) if k else (lambda x: x)
    row = {"pca": k, "pool": pool_n, "real": real, **cfg, "oracle_auc": roc_auc_score(y, -torch.cdist(P(en), P(eh)).min(1).values.numpy())}
    for i in range(0, H, 16):
        mem.observe(eh[i:i + 16])
    e = en.clone().requires_grad_(True)
    logit = mem.logit(e)
    g = torch.autograd.grad(logit.sum(), e)[0]
    away = en - eh[torch.cdist(P(en), P(eh)).argmin(1)]
    if k:
        g = g @ mem.basis @ mem.basis.T  # already in the span; compare in pixel space
    cos = torch.nn.functional.cosine_similarity(-g, away, dim=1)
    row.update(mem_auc=roc_auc_score(y, logit.detach().numpy()), cos_away_nd=float(cos[torch.from_numpy(y)].mean()),
               cos_away_all=float(cos.mean()), ell=mem.neighbour_distance(), p_nd=float(torch.sigmoid(logit[torch.from_numpy(y)]).mean()))
    print(json.dumps({k2: (round(v, 3) if isinstance(v, float) else v) for k2, v in row.items()}), flush=True)
