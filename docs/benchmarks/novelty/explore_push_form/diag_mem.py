"""Offline: how well does a memory of run 1 flag run 2's near-dups of run 1 (AUC), and does −∇logit point away from them?"""
import json, sys, time, os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import json, torch, numpy as np
from sklearn.metrics import roc_auc_score
from noveltynets.bench.runner import Judge
from noveltynets.models import load_model
from noveltynets.memory import embedder_from_spec
from noveltynets.memory.store import new_memory

klass = int(sys.argv[1]); variants = [json.loads(a) for a in sys.argv[2:]] or [{}]
D = torch.load(os.path.join(os.environ.get("DIAG_DIR", "."), f"diag_{klass}.pt")); steps = D["steps"]
judge = Judge(klass)
f1, f2 = judge.ev.features(D["run1"]).numpy(), judge.ev.features(D["run2"]).numpy()
dist = np.linalg.norm(f2[:, None] - f1[None], axis=-1).min(1); y = dist < judge.tau
print("class", klass, "run-2 near-dups of run 1:", y.mean(), flush=True)
model_id = load_model().model_id
for v in variants:
    v = dict(v); spec = v.pop("embedder", "pooled-pixels:32"); emb = embedder_from_spec(spec)
    E = lambda x: emb(x).float()
    e1, e2, ep = E(D["run1"]), E(D["run2"]), E(D["pool"])
    t1 = torch.stack([E(x) for x in D["run1_traj"]]); t2 = torch.stack([E(x) for x in D["run2_traj"]]); tp = torch.stack([E(x) for x in D["pool_traj"]])
    row = {"variant": {"embedder": spec, **v}}
    row["oracle_final"] = roc_auc_score(y, -torch.cdist(e2, e1).min(1).values.numpy())
    row["oracle_steps"] = [round(roc_auc_score(y, -torch.cdist(t2[k], t1[k]).min(1).values.numpy()), 3) for k in range(len(steps))]
    t0 = time.time()
    if v.pop("prox", False):
        from prox import ProxMem
        mem = ProxMem(e1.shape[1], torch.cat([ep, tp.flatten(0, 1)]), len(ep), **v); mem.recall_logit = mem.logit
        for i in range(0, 256, 16):
            mem.observe(e1[i:i + 16], t1[:, i:i + 16].flatten(0, 1))
    else:
        mem = new_memory(emb, model_id, "cpu", trajectory=True, **v)
        mem.set_reference(torch.cat([ep, tp.flatten(0, 1)]), n_final=len(ep))
        for i in range(0, 256, 16):
            mem.observe(e1[i:i + 16], trajectory=t1[:, i:i + 16].flatten(0, 1))
    row["train_s"] = round(time.time() - t0, 1)
    with torch.no_grad():
        row["mem_final"] = roc_auc_score(y, mem.logit(e2).numpy())
        row["mem_steps"] = [round(roc_auc_score(y, mem.logit(t2[k]).numpy()), 3) for k in range(len(steps))]
        row["recall_final"] = roc_auc_score(y, mem.recall_logit(e2).numpy())
    cos = []
    for k in range(len(steps)):
        if hasattr(mem, "direction"):
            g = -mem.direction(t2[k]).detach()
        else:
            e = t2[k].clone().requires_grad_(True)
            g = torch.autograd.grad(mem.logit(e).sum(), e)[0]
        nn = torch.cdist(t2[k], t1[k]).argmin(1)
        away = t2[k] - t1[k][nn]
        c = torch.nn.functional.cosine_similarity(-g, away, dim=1)
        cos.append(round(float(c[torch.from_numpy(y)].mean()), 3))
    row["cos_away_nd"] = cos
    row["p_seen_mean"] = [round(float(torch.sigmoid(mem.logit(t2[k]).detach()).mean()), 3) for k in range(len(steps))]
    print(json.dumps(row), flush=True)
