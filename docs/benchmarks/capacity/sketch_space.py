"""Probe (run from the repository root): in which space should the sketch hash 1,024-d rows? gmm1024 at 10^5 and 10^6,
7 MiB of Bloom bits, the default layout (16 tables, 6 directions, widths 0.3-1.2 in units of the space's own l); the
sketch's hits alone as the score. Spaces: the memory's 32-d projection (today), a 64-d projection, the full 1,024-d
rows. Log: sketch_space.log."""
import sys

import torch

sys.path.insert(0, ".")
from benchmarks.capacity import near_dups, roc_auc, source, spacing  # noqa: E402
from noveltynets.embed.sketch import L2Sketch, optimal_hashes  # noqa: E402
from noveltynets.memory.novelty import MemoryConfig, NoveltyMemory  # noqa: E402

hist_f, fresh, ref = source("gmm1024", 10**6)
hist = torch.cat(list(hist_f(65536)))
ell = spacing(ref)
spaces = {}
for k in (32, 64):
    m = NoveltyMemory(MemoryConfig(dim=1024, embedder_id="x", projection=k))
    m.set_reference(ref)
    spaces[f"projected {k}-d"] = (k, lambda x, m=m: m.project(x) / m.neighbour_distance())
spaces["full 1024-d"] = (1024, lambda x: x / ell)
for h in (100_000, 1_000_000):
    hh, g = hist[:h], torch.Generator().manual_seed(h)
    seen = hh[torch.randint(h, (1000,), generator=g)]
    dups = {r: near_dups(hh[torch.randint(h, (1000,), generator=g)], r, ell, seed=h + i) for i, r in enumerate((0.1, 0.2, 0.3))}
    for name, (k, P) in spaces.items():
        nb = 7 * 8 * 2**20
        s = L2Sketch(k, 16, 6, 1.2, nb, optimal_hashes(nb, 10**6 * 16), 2, 0.3)
        for c in hh.split(16384):
            s.add(P(c))
        hf = s.hits(P(fresh))
        print(h, f"{name:14}", f"seen {roc_auc(s.hits(P(seen)), hf):.3f}",
              {r: round(roc_auc(s.hits(P(v)), hf), 3) for r, v in dups.items()}, f"fpr {s.false_positive_rate():.3f}", flush=True)
