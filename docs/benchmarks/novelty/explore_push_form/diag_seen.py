"""Seen AUC at 256 observed (run 1) vs 256 fresh (run 2), recall head, per embedder."""
import os, sys, torch
from sklearn.metrics import roc_auc_score
from noveltynets.memory import embedder_from_spec
from noveltynets.memory.store import new_memory
D = torch.load(os.path.join(os.environ.get("DIAG_DIR", "."), f"diag_{sys.argv[1]}.pt"))
for spec in sys.argv[2:]:
    emb = embedder_from_spec(spec); E = lambda x: emb(x).float()
    e1, e2, ep = E(D["run1"]), E(D["run2"]), E(D["pool"])
    t1, tp = torch.stack([E(x) for x in D["run1_traj"]]), torch.stack([E(x) for x in D["pool_traj"]])
    mem = new_memory(emb, "m", "cpu", trajectory=True); mem.set_reference(torch.cat([ep, tp.flatten(0, 1)]), n_final=len(ep))
    for i in range(0, 256, 16):
        mem.observe(e1[i:i + 16], trajectory=t1[:, i:i + 16].flatten(0, 1))
    s1, s2 = mem.seen_probability(e1), mem.seen_probability(e2)
    print(spec, "seen AUC (recall head)", round(roc_auc_score([1] * 256 + [0] * 256, torch.cat([s1, s2]).numpy()), 4), flush=True)
