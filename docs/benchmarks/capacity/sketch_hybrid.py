"""Probe (run from the repository root, after sketch_space.py): at 10^6 gmm1024 rows, wider cells for full-space tables, and 8 full + 8 projected tables (3.5 MiB each), their hits summed, as sketch_full_tables=8 does. Log: sketch_hybrid.log."""
import sys, torch
sys.path.insert(0, ".")
from benchmarks.capacity import near_dups, roc_auc, source, spacing
from noveltynets.embed.sketch import L2Sketch, optimal_hashes
from noveltynets.memory.novelty import MemoryConfig, NoveltyMemory
hist_f, fresh, ref = source("gmm1024", 10**6)
hist = torch.cat(list(hist_f(65536)))
ell = spacing(ref)
m = NoveltyMemory(MemoryConfig(dim=1024, embedder_id="x")); m.set_reference(ref)
Pp = lambda x: m.project(x) / m.neighbour_distance()
Pf = lambda x: x / ell
h = 10**6; hh, g = hist, torch.Generator().manual_seed(h)
seen = hh[torch.randint(h, (1000,), generator=g)]
dups = {r: near_dups(hh[torch.randint(h, (1000,), generator=g)], r, ell, seed=h + i) for i, r in enumerate((0.1, 0.2, 0.3))}
def build(k, P, T, w0, w1, mib):
    nb = int(mib * 8 * 2**20)
    s = L2Sketch(k, T, 6, w1, nb, optimal_hashes(nb, 10**6 * T), 2, w0)
    for c in hh.split(16384): s.add(P(c))
    return lambda x: s.hits(P(x)).double()
def show(name, score):
    hf = score(fresh)
    print(f"{name:34}", f"seen {roc_auc(score(seen), hf):.3f}", {r: round(roc_auc(score(v), hf), 3) for r, v in dups.items()}, flush=True)
for w0, w1 in ((0.5, 2.0), (1.0, 4.0)):
    show(f"full 16 tables w{w0}-{w1}", build(1024, Pf, 16, w0, w1, 7))
a = build(1024, Pf, 8, 0.3, 1.2, 3.5); b = build(32, Pp, 8, 0.3, 1.2, 3.5)
show("hybrid 8 full + 8 projected", lambda x: a(x) + b(x))
show("  its projected half alone", b)
