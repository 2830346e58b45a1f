"""Probe (run from the repository root): codes of 12 bytes per row or less, that with a smaller head would fit a
10^6-row history in 16 MB, in the memory's 32-d projection (units of l): seen and near-dup ROC-AUC at 10^4 and 10^6
(gmm64), beside flat and 16-byte PQ (pq_probe.py). Log: pq_budget.log.

    python docs/benchmarks/capacity/pq_budget.py [KIND,KIND,...] [TRAIN]   # default: every kind below, 200000

Env SOURCE: benchmarks/capacity.py's source (gmm64, the default, or gmm1024: codes of its 32-d projection).
TRAIN: the first history rows the codebooks are trained on (a memory would have only its first rows, or its replay).

Every kind is scored on its codes' reconstructions (sa_encode, sa_decode, then exact search): for PQ that is what
IndexPQ.search computes (asymmetric distances); additive quantizers (RQ, LSQ and their product forms) would otherwise
need stored norms, which cost bytes per row. Env SEARCH=native: each index's own search over its codes instead (what
a memory would query with; ``rq12x8_cqint8`` keeps a 1-byte norm per row for it, ``rq12x8`` decodes every code)."""
import os, sys, time
import torch
sys.path.insert(0, ".")
from benchmarks.capacity import source, spacing, near_dups, roc_auc
from noveltynets.memory.novelty import MemoryConfig, NoveltyMemory
import faiss

faiss.omp_set_num_threads(2)


def beam(index, size: int = 16):
    """A residual quantizer that keeps ``size`` candidates per codebook when it trains and encodes (default 1)."""
    index.rq.max_beam_size = size
    return index


def nearest(base: faiss.Index, x):
    """Squared distance from each row of ``x`` to the nearest reconstructed history row."""
    return base.search(x, 1)[0][:, 0]

KINDS = {  # name: (index maker, bytes per row)
    "flat32": (lambda: faiss.IndexFlatL2(32), 128),
    "pq16x8": (lambda: faiss.IndexPQ(32, 16, 8), 16),
    "pq8x12": (lambda: faiss.IndexPQ(32, 8, 12), 12),
    "pq16x6": (lambda: faiss.IndexPQ(32, 16, 6), 12),
    "pq32x3": (lambda: faiss.IndexPQ(32, 32, 3), 12),
    "opq_pq16x6": (lambda: faiss.index_factory(32, "OPQ16,PQ16x6"), 12),
    "pq8x10": (lambda: faiss.IndexPQ(32, 8, 10), 10),
    # 12-byte codes of 8-bit codebooks: OPQ rotated to 24 or 36 dims (12 sub-spaces), residual and local-search
    # additive quantizers (12 codebooks over all 32 dims), and their product forms (2 halves of 6 codebooks)
    "opq12_24_pq12": (lambda: faiss.index_factory(32, "OPQ12_24,PQ12"), 12),
    "opq12_36_pq12": (lambda: faiss.index_factory(32, "OPQ12_36,PQ12"), 12),
    "rq12x8": (lambda: beam(faiss.index_factory(32, "RQ12x8")), 12),
    "rq12x8_cqint8": (lambda: beam(faiss.index_factory(32, "RQ12x8_Ncqint8")), 13),
    "prq2x6x8": (lambda: faiss.index_factory(32, "PRQ2x6x8"), 12),
    "lsq12x8": (lambda: faiss.index_factory(32, "LSQ12x8"), 12),
    "plsq2x6x8": (lambda: faiss.index_factory(32, "PLSQ2x6x8"), 12),
}
names = sys.argv[1].split(",") if len(sys.argv) > 1 else list(KINDS)
train = int(sys.argv[2]) if len(sys.argv) > 2 else 200000
src, native = os.environ.get("SOURCE", "gmm64"), os.environ.get("SEARCH") == "native"
hist_f, fresh, ref = source(src, 1000000)
hist = torch.cat(list(hist_f(65536)))
ell = spacing(ref)
m = NoveltyMemory(MemoryConfig(dim=hist.shape[1], embedder_id="x")); m.set_reference(ref); u = m.neighbour_distance()
P = lambda x: (m.project(x) / u).numpy()
for h in (10000, 1000000):
    hh = hist[:h]; g = torch.Generator().manual_seed(h)
    x = P(hh)
    seen = hh[torch.randint(h, (1000,), generator=g)]
    dups = {r: near_dups(hh[torch.randint(h, (1000,), generator=g)], r, ell, seed=h + i) for i, r in enumerate((0.1, 0.2, 0.3))}
    for name in names:
        make, nb = KINDS[name]
        idx = make(); t = time.time()
        if not idx.is_trained:
            idx.train(x[:train])
        if native:
            idx.add(x); ta = time.time() - t
            assert idx.sa_code_size() == nb, idx.sa_code_size()
            base = idx
        else:
            codes = idx.sa_encode(x); ta = time.time() - t
            assert codes.shape == (h, nb), codes.shape
            base = faiss.IndexFlatL2(32); base.add(idx.sa_decode(codes))
        t = time.time(); df = nearest(base, P(fresh)); tq = (time.time() - t) / len(fresh)
        aucs = {r: round(roc_auc(-nearest(base, P(v)), -df), 3) for r, v in dups.items()}
        print(src, h, name + " native" * native, f"{nb} B/row encode {ta:.1f}s q {tq * 1e3:.2f}ms codes {nb * h / 2**20:.1f}MB",
              f"seen {roc_auc(-nearest(base, P(seen)), -df):.3f}", aucs, flush=True)
