"""Which guidance embedding tells the evaluation embedder's near-duplicates apart? For pairs of plain samples of one
class (logs/plain_cC_384.pt, from pixel_vs_eval.py), ROC-AUC of each embedding's distance for "near-duplicate by the
evaluation embedder" (smaller distance = near), among all pairs and among each sample's 10 nearest in that embedding."""
import json, sys
import torch
from sklearn.metrics import roc_auc_score
from noveltynets.bench.runner import Judge
from noveltynets.memory import embedder_from_spec
from noveltynets.models import load_model

klass = int(sys.argv[1])
d = torch.load(f"logs/plain_c{klass}_384.pt")
model, judge = load_model(), Judge(klass)
runs, pool = d["runs"], d["pool"]
f = torch.from_numpy(judge.ev.features(runs).numpy()).double()
de = torch.cdist(f, f)
n = len(runs)
iu = torch.triu_indices(n, n, 1)
near = (de[iu[0], iu[1]] < judge.tau).numpy()

def pca(ref, x, k):
    mu = ref.mean(0)
    vh = torch.linalg.svd(ref - mu, full_matrices=False).Vh[:k]
    return (x - mu) @ vh.T

for spec in sys.argv[2:]:
    emb = embedder_from_spec(spec, model)
    with torch.no_grad():
        e, r = emb(runs).double(), emb(pool).double()
    for k in (0, 32):
        z = e if k == 0 else pca(r, e, k)
        dz = torch.cdist(z, z)
        print(json.dumps({"class": klass, "embedder": spec, "pca": k, "dim": z.shape[1], "pairs_near": int(near.sum()),
                          "auc_all_pairs": round(roc_auc_score(near, -dz[iu[0], iu[1]].numpy()), 3)}), flush=True)
