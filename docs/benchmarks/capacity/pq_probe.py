"""Probe (run from the repository root): faiss flat and product-quantised codes of every history row, in full 64-d and in a memory's 32-d projection (units of l), seen and near-dup ROC-AUC at 10^4 (real64) and 10^4 / 10^6 (gmm64). Log: pq_probe.log."""
import sys, torch, numpy as np, time
sys.path.insert(0, ".")
from benchmarks.capacity import source, spacing, near_dups, roc_auc
from noveltynets.memory.novelty import MemoryConfig, NoveltyMemory
import faiss
for src, H in (('real64', 10000), ('gmm64', 1000000)):
    hist_f, fresh, ref = source(src, H)
    hist = torch.cat(list(hist_f(65536)))
    ell = spacing(ref)
    m = NoveltyMemory(MemoryConfig(dim=64, embedder_id='x')); m.set_reference(ref); u = m.neighbour_distance()
    P = lambda x: (m.project(x) / u).numpy()
    for h in ((10000,) if src == 'real64' else (10000, 1000000)):
        hh = hist[:h]; g = torch.Generator().manual_seed(h)
        seen = hh[torch.randint(h, (1000,), generator=g)]
        dups = {r: near_dups(hh[torch.randint(h, (1000,), generator=g)], r, ell, seed=h + i) for i, r in enumerate((0.1, 0.2, 0.3))}
        for name, make, space in (('flat64', lambda: faiss.IndexFlatL2(64), 'full'), ('flat32proj', lambda: faiss.IndexFlatL2(32), 'proj'),
                                  ('pq8proj', lambda: faiss.IndexPQ(32, 8, 8), 'proj'), ('pq16proj', lambda: faiss.IndexPQ(32, 16, 8), 'proj'),
                                  ('pq8x6proj', lambda: faiss.IndexPQ(32, 8, 6), 'proj')):
            f = (lambda x: x.numpy()) if space == 'full' else P
            idx = make(); t = time.time()
            if not idx.is_trained: idx.train(f(hh[:20000]))
            idx.add(f(hh)); ta = time.time() - t
            t = time.time(); df = idx.search(f(fresh), 1)[0][:, 0]; tq = (time.time() - t) / 1000
            print(src, h, name, f'add {ta:.1f}s q {tq*1e3:.2f}ms bytes {faiss.serialize_index(idx).size/2**20:.1f}MB seen {roc_auc(-idx.search(f(seen),1)[0][:,0], -df):.3f}',
                  {r: round(roc_auc(-idx.search(f(v), 1)[0][:, 0], -df), 3) for r, v in dups.items()}, flush=True)
