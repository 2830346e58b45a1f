"""Capacity: how a novelty memory holds up as history grows from 10³ to 10⁶ samples, beside faiss indexes.

    python benchmarks/capacity.py --source gmm64 --max-history 1000000 --out docs/benchmarks/capacity

Sources (``--source``), each giving history, fresh and reference rows:

- ``real64``: real sample embeddings of the default model (class 7, 15 DDIM steps, ``pooled-pixels:8``:
  docs/benchmarks/novelty/emb7_15steps.pt, 10k history, 1k fresh, 256 reference), up to 10⁴.
- ``gmm64``: a 32-component full-covariance Gaussian mixture fitted to those 10k real embeddings, drawn from
  for as many rows as asked (beyond what can be sampled on a CPU).
- ``gmm1024``: 1,024-d (``pooled-pixels:32``, the default memory's embedding): a 16-component mixture fitted
  in the top 64 principal directions of the MNIST-5k training images (they ship with the package), lifted back
  with isotropic noise of the discarded directions' variance.

Memories (``--memories``): ``net`` (the default config: a sharp net as recall head, 20k-row replay) and
``sketch`` (``sketch_mb=7, replay_size=10000``: an LSH sketch of every sample as recall head) and ``sketch-full``
(the same with 8 of its 16 tables on the full embeddings, ``sketch_full_tables=8``; not in the default list) and ``codes``
(``codes_capacity=1000000, hidden=192, replay_size=5000``: every sample's 13-byte residual-quantizer code as recall
head, a narrower smooth head and a 5k replay, to fit 16 MB; not in the default list). One memory of
each kind observes the history in chunks of ``--chunk`` (``--big-chunk`` from ``--big-from`` on: each observe
trains the same number of steps, so less per sample there); at each history size of ``--checkpoints`` up to
``--max-history`` (``--net-max`` for the net, which is known to fail at 10⁵) it is measured:

- seen AUC: recall head on 1,000 observed rows vs 1,000 fresh rows (ROC-AUC), and the recall head's seconds per row
  queried (the 1,000 fresh rows at once);
- near-dup AUC at ρ = 0.1, 0.2, 0.3: history rows plus noise of norm ρ·ℓ (ℓ: the reference's median
  nearest-neighbour distance in the embedding space) vs fresh rows, scored by the smooth head (which guidance
  follows) and by the recall head;
- bytes (every tensor of its state), update seconds per sample, query seconds per sampling step (the smooth
  head's value and gradient for a batch of 16, as guidance asks at every step).

Beside them on the same rows: faiss ``IndexFlatL2`` (exact kNN: the ceiling of near-dup AUC), IVF-PQ and HNSW:
bytes (serialised), add seconds, query seconds per query, recall@1 against flat, near-dup AUC. Rows go to
``OUT/SOURCE.json``; ``--plot`` draws every source's rows found in OUT into ``OUT/capacity.png``, with the memories
of ``OUT/*/SOURCE.json`` (memories run on their own) beside them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RHOS = (0.1, 0.2, 0.3)
MEMORIES = {"net": {}, "sketch": {"sketch_mb": 7, "replay_size": 10_000},
            "sketch-full": {"sketch_mb": 7, "replay_size": 10_000, "sketch_full_tables": 8},
            "codes": {"codes_capacity": 1_000_000, "hidden": 192, "replay_size": 5_000}}


def roc_auc(pos, neg) -> float:
    """The novelty benchmarks' ROC-AUC (ties half), on any array-likes."""
    from benchmarks.novelty_nets.common import roc_auc as auc

    return auc(np.asarray(pos, float), np.asarray(neg, float))


# -- sources ---------------------------------------------------------------------------------------------------
class Mixture:
    """Rows drawn from a Gaussian mixture in ``k`` dimensions, lifted by ``basis`` (k, dim) plus isotropic ``noise``."""

    def __init__(self, data: np.ndarray, components: int, k: int | None = None, seed: int = 0):
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture

        self.pca = PCA(k, random_state=seed).fit(data) if k else None
        z = self.pca.transform(data) if k else data
        self.noise = float(np.sqrt(self.pca.noise_variance_)) if k else 0.0
        self.gmm = GaussianMixture(components, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(z)
        self.dim = data.shape[1]

    def draw(self, n: int, seed: int) -> torch.Tensor:
        g = self.gmm
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(n, g.weights_)
        z = np.concatenate([rng.multivariate_normal(m, c, size=int(k), method="cholesky")
                            for m, c, k in zip(g.means_, g.covariances_, counts)])
        z = z[rng.permutation(n)]
        x = self.pca.inverse_transform(z) + self.noise * rng.standard_normal((n, self.dim)) if self.pca else z
        return torch.from_numpy(x).float()


def source(name: str, max_history: int):
    """(history iterator factory, fresh, reference): history rows come in order, the same for every memory."""
    real = torch.load(ROOT / "docs/benchmarks/novelty/emb7_15steps.pt")
    if name == "real64":
        hist = real["history"].float()[:max_history]
        return (lambda chunk: iter(hist.split(chunk))), real["fresh"].float(), real["pool"].float()[:128]
    if name == "gmm64":
        mix = Mixture(real["history"].float().numpy(), 32)
    elif name == "gmm1024":
        from noveltynets.data import load_split

        mix = Mixture(load_split("train").images.flatten(1).numpy(), 16, k=64)
    else:
        raise SystemExit(f"unknown source {name!r}")

    def history(chunk: int):
        for i, start in enumerate(range(0, max_history, 65_536)):  # drawn in blocks, cut into chunks
            yield from mix.draw(min(65_536, max_history - start), seed=1000 + i).split(chunk)
    return history, mix.draw(1000, seed=1), mix.draw(128, seed=2)


def near_dups(rows: torch.Tensor, rho: float, ell: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = torch.randn(rows.shape, generator=g)
    return rows + n / n.norm(dim=1, keepdim=True) * rho * ell


def spacing(ref: torch.Tensor) -> float:
    d = torch.cdist(ref.double(), ref.double())
    d.fill_diagonal_(float("inf"))
    return float(d.min(1).values.median())


# -- measurements ----------------------------------------------------------------------------------------------
def memory_row(mem, seen, fresh, dups) -> dict:
    """A memory's AUCs, bytes and guidance query time on these rows."""
    with torch.no_grad():
        rec = lambda x: mem.recall_logit(x).cpu().numpy()  # noqa: E731
        smooth = lambda x: mem.logit(x).cpu().numpy()  # noqa: E731
        t = time.perf_counter()
        rec_fresh = rec(fresh)
        recall_s = (time.perf_counter() - t) / len(fresh)
        row = {"seen_auc": roc_auc(rec(seen), rec_fresh), "seen_auc_smooth": roc_auc(smooth(seen), smooth(fresh)),
               "recall_s_per_row": recall_s}
        for rho, d in dups.items():
            row[f"neardup_auc_{rho}_smooth"] = roc_auc(smooth(d), smooth(fresh))
            row[f"neardup_auc_{rho}_recall"] = roc_auc(rec(d), rec_fresh)
    q = fresh[:16].clone()
    times = []
    for _ in range(20):  # one guidance step's query: value and gradient of the smooth head for a batch of 16
        x = q.clone().requires_grad_(True)
        t = time.perf_counter()
        torch.autograd.grad(mem.logit(x).sum(), x)
        times.append(time.perf_counter() - t)
    row["query_s_per_step"] = float(np.median(times))
    row["bytes"] = int(sum(v.numel() * v.element_size() for v in mem.state_tensors().values()))
    return row


def faiss_rows(hist: np.ndarray, seen, fresh, dups, seed: int = 0) -> dict:
    import faiss

    d = hist.shape[1]
    out, truth = {}, None
    n = len(hist)
    kinds = {"flat": lambda: faiss.IndexFlatL2(d),
             "ivfpq": lambda: faiss.IndexIVFPQ(faiss.IndexFlatL2(d), d, max(16, int(4 * np.sqrt(n))), 16 if d >= 64 else 8, 8),
             "hnsw": lambda: faiss.IndexHNSWFlat(d, 32)}
    for kind, make in kinds.items():
        if kind == "ivfpq" and n < 10_000:
            continue  # too few rows to train its quantisers
        index = make()
        t = time.perf_counter()
        if kind == "ivfpq":
            rng = np.random.default_rng(seed)
            index.train(hist[rng.choice(n, min(n, 65_536), replace=False)])
            index.nprobe = 16
        index.add(hist)
        add_s = time.perf_counter() - t
        t = time.perf_counter()
        dist_f, ids = index.search(fresh.numpy(), 1)
        query_s = (time.perf_counter() - t) / len(fresh)
        truth = ids[:, 0] if kind == "flat" else truth
        row = {"bytes": int(faiss.serialize_index(index).size), "add_s_per_sample": add_s / n, "query_s": query_s,
               "recall_at_1": float((ids[:, 0] == truth).mean())}
        dist_s = index.search(seen.numpy(), 1)[0][:, 0]
        row["seen_auc"] = roc_auc(-dist_s, -dist_f[:, 0])
        for rho, x in dups.items():
            row[f"neardup_auc_{rho}"] = roc_auc(-index.search(x.numpy(), 1)[0][:, 0], -dist_f[:, 0])
        out[kind] = row
    return out


def regroup(chunks, big_chunk: int, big_from: int):
    """The chunks as they come until ``big_from`` rows have passed, then joined into chunks of ``big_chunk`` rows."""
    fed, pending = 0, []
    for chunk in chunks:
        if fed < big_from:
            fed += len(chunk)
            yield chunk
            continue
        pending.append(chunk)
        if sum(map(len, pending)) >= big_chunk:
            yield torch.cat(pending)
            pending = []
    if pending:
        yield torch.cat(pending)


def run(args) -> list[dict]:
    from noveltynets.memory.novelty import MemoryConfig, NoveltyMemory

    history, fresh, ref = source(args.source, args.max_history)
    ell = spacing(ref)
    dim = fresh.shape[1]
    mems = {}
    for kind in args.memories:
        mem = NoveltyMemory(MemoryConfig(dim=dim, embedder_id=args.source, **MEMORIES[kind]))
        mem.set_reference(ref)
        mems[kind] = mem
    spent, observed, fed, rows = {k: 0.0 for k in mems}, {k: 0 for k in mems}, 0, []
    checkpoints = sorted(c for c in args.checkpoints if c <= args.max_history)
    kept = []  # every row fed, for faiss (and the seen/near-dup draws)
    for chunk in regroup(history(args.chunk), args.big_chunk, args.big_from):
        for kind, mem in mems.items():
            if kind == "net" and fed >= args.net_max:
                continue
            t = time.perf_counter()
            mem.observe(chunk)
            spent[kind] += time.perf_counter() - t
            observed[kind] += len(chunk)
        kept.append(chunk)
        fed += len(chunk)
        if checkpoints and fed >= checkpoints[0]:
            h = checkpoints.pop(0)
            hist = torch.cat(kept)
            kept = [hist]
            g = torch.Generator().manual_seed(h)
            seen = hist[torch.randint(len(hist), (len(fresh),), generator=g)]
            dups = {rho: near_dups(hist[torch.randint(len(hist), (len(fresh),), generator=g)], rho, ell, seed=h + i)
                    for i, rho in enumerate(RHOS)}
            row = {"source": args.source, "history": fed, "dim": dim, "ell": ell}
            for kind, mem in mems.items():
                if observed[kind] < fed:  # the net stopped at --net-max
                    continue
                r = memory_row(mem, seen, fresh, dups)
                r["update_s_per_sample"] = spent[kind] / fed
                row[f"memory_{kind}"] = r
            if fed <= args.faiss_max:
                row["faiss"] = faiss_rows(hist.numpy(), seen, fresh, dups)
            rows.append(row)
            print(json.dumps(row), flush=True)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{args.source}.json").write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows},
                                                                    indent=1))
        if not checkpoints:
            break
    return rows


def plot(out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = {f.stem: json.loads(f.read_text())["rows"] for f in sorted(out.glob("*.json"))}
    for f in sorted(out.glob("*/*.json")):  # memories run on their own (--out OUT/NAME), drawn beside the same source's
        for row in json.loads(f.read_text())["rows"]:
            same = [r for r in sources.setdefault(f.stem, []) if r["history"] == row["history"]]
            mems = {k: v for k, v in row.items() if k.startswith("memory_")}
            if same:
                same[0].update(mems)
            else:
                sources[f.stem].append({"history": row["history"], **mems})
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.6), gridspec_kw={"width_ratios": [1, 1, 1, 0.45]})
    for (src, rows), marker in zip(sources.items(), "osd^v"):
        rows = sorted(rows, key=lambda r: r["history"])
        for kind, style in (("memory_net", "C0"), ("memory_sketch", "C1"), ("memory_sketch-full", "C4"),
                            ("memory_codes", "C5")):
            pts = [(r["history"], r[kind]) for r in rows if kind in r]
            if not pts:
                continue
            h = [p[0] for p in pts]
            axes[0].plot(h, [p[1]["seen_auc"] for p in pts], marker=marker, color=style, label=f"{src} {kind[7:]} (recall head)")
            axes[1].plot(h, [p[1]["neardup_auc_0.2_smooth"] for p in pts], marker=marker, color=style, ls="--",
                         label=f"{src} {kind[7:]} smooth head")
            axes[1].plot(h, [p[1]["neardup_auc_0.2_recall"] for p in pts], marker=marker, color=style,
                         label=f"{src} {kind[7:]} recall head")
            axes[2].plot(h, [p[1]["bytes"] / 2**20 for p in pts], marker=marker, color=style, label=f"{src} {kind[7:]}")
        for kind, style in (("flat", "k"), ("ivfpq", "C2"), ("hnsw", "C3")):
            pts = [(r["history"], r["faiss"][kind]) for r in rows if kind in r.get("faiss", {})]
            if not pts:
                continue
            h = [p[0] for p in pts]
            axes[0].plot(h, [p[1]["seen_auc"] for p in pts], marker=marker, color=style, ls=":", label=f"{src} faiss {kind}")
            axes[1].plot(h, [p[1]["neardup_auc_0.2"] for p in pts], marker=marker, color=style, ls=":", label=f"{src} faiss {kind}")
            axes[2].plot(h, [p[1]["bytes"] / 2**20 for p in pts], marker=marker, color=style, ls=":", label=f"{src} faiss {kind}")
    for ax, title in zip(axes, ("seen vs fresh ROC-AUC", "near-dup (ρ = 0.2ℓ) vs fresh ROC-AUC", "bytes (MiB)")):
        ax.set_xscale("log")
        ax.set_xlabel("history (samples)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    axes[2].axhline(16, color="r", lw=0.8)
    axes[3].axis("off")  # the near-dup panel's legend, beside it rather than over its lines
    axes[3].legend(*axes[1].get_legend_handles_labels(), fontsize=6, loc="center left")
    axes[2].legend(fontsize=6)
    fig.tight_layout()
    path = out / "capacity.png"
    fig.savefig(path, dpi=110)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="gmm64", choices=("real64", "gmm64", "gmm1024"))
    p.add_argument("--memories", nargs="+", default=["net", "sketch"], choices=list(MEMORIES))
    p.add_argument("--max-history", type=int, default=1_000_000)
    p.add_argument("--checkpoints", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    p.add_argument("--net-max", type=int, default=10_000, help="the net memory stops here (its seen AUC was 0.578 at 10^5, measured)")
    p.add_argument("--faiss-max", type=int, default=1_000_000)
    p.add_argument("--chunk", type=int, default=16, help="rows per observe (a batch of samples: 16 is the sampler's default)")
    p.add_argument("--big-chunk", type=int, default=1024, help="rows per observe from --big-from on (to reach 10^6 on a CPU)")
    p.add_argument("--big-from", type=int, default=10_000)
    p.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/capacity")
    p.add_argument("--plot", action="store_true", help="only draw OUT/capacity.png from the rows in OUT")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    if not args.plot:
        run(args)
    print(plot(args.out))


if __name__ == "__main__":
    main()
