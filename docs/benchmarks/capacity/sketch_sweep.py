"""Probe (run from the repository root): the sketch's tables, directions and cell widths at 7 MiB, its hits alone as the score, at 10^4 (real64) and 10^5 / 10^6 (gmm64). Log: sketch_sweep.log."""
import sys, torch, numpy as np, itertools
sys.path.insert(0, ".")
from benchmarks.capacity import source, spacing, near_dups, roc_auc
from noveltynets.memory.novelty import MemoryConfig, NoveltyMemory
from noveltynets.embed.sketch import L2Sketch, optimal_hashes
import faiss
res = {}
for src, H in (('real64', 10000), ('gmm64', 1000000)):
    hist_f, fresh, ref = source(src, H)
    hist = torch.cat(list(hist_f(65536)))
    ell = spacing(ref)
    m = NoveltyMemory(MemoryConfig(dim=64, embedder_id='x')); m.set_reference(ref); u = m.neighbour_distance()
    P = lambda x: m.project(x) / u
    for h in ((10000,) if src == 'real64' else (100000, 1000000)):
        hh = hist[:h]; g = torch.Generator().manual_seed(h)
        seen = hh[torch.randint(h, (1000,), generator=g)]
        dups = {r: near_dups(hh[torch.randint(h, (1000,), generator=g)], r, ell, seed=h + i) for i, r in enumerate((0.1, 0.2, 0.3))}
        idx = faiss.IndexFlatL2(64); idx.add(hh.numpy()); df = idx.search(fresh.numpy(), 1)[0][:, 0]
        print(src, h, 'exact', {r: round(roc_auc(-idx.search(v.numpy(), 1)[0][:, 0], -df), 3) for r, v in dups.items()}, flush=True)
        Ph = P(hh)
        for T, K, wmin, w in [(16,6,0.3,1.2),(16,4,0.3,1.2),(16,6,0.5,2.0),(24,4,0.3,1.5),(32,4,0.3,2),(12,6,0.4,1.0),(16,3,0.2,1.0)]:
            nb = 7*8*2**20
            s = L2Sketch(32, T, K, w, nb, optimal_hashes(nb, 10**6*T), 2, wmin)
            for c in Ph.split(65536): s.add(c)
            hf = s.hits(P(fresh))
            print(f'  T{T} K{K} w{wmin}-{w} seen {roc_auc(s.hits(P(seen)), hf):.3f}', {r: round(roc_auc(s.hits(P(v)), hf), 3) for r, v in dups.items()}, f'fpr {s.false_positive_rate():.3f}', flush=True)
