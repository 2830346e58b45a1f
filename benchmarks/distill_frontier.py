"""Distilled novelty within one batch, and its quality–diversity frontier over the rank bins (issue 25).

    python benchmarks/distill_frontier.py --model DISTILLED --classes 1,3,7 --batches 8 --out docs/benchmarks/distill/frontier

Per class, ``--batches`` batches of 16 seeds (batch b: seeds 16b .. 16b + 15), the same for every method:

- ``plain``: the shipped model, CFG 2, 50 DDIM steps (the baseline);
- ``distilled, no rank``: the distilled model at rank 0 (how far fine-tuning moved plain sampling);
- ``distilled ranks 1-16``: the distilled model, sample i of a batch at rank i + 1;
- ``distilled ranks 1-16, rank scale s``: the same with rank guidance (``--rank-scales``, ``SamplingConfig.rank_scale``);
- ``particle``: particle guidance (batch-only repulsion, the stateless peer), on the shipped model.

Judged by the evaluation embedder (never used to rank or train): within each batch, the near-dup rate
(share of samples whose nearest earlier sample of the same batch is closer than τ, the class's τ of
BENCHMARK.md) and Vendi, averaged over batches; over all of a class's samples, precision, adherence and
AvgkNN (k = 5 to the real class: how far out they lie). The frontier: per rank bin r (its samples pooled over
batches and classes), precision, AvgkNN, and the near-dup rate of the rank-r sample against ranks 1..r−1 of its
batch. Writes ``frontier.json`` (every number, with the command), ``frontier.png`` and one grid per method and
class (a row per batch, ranks left to right).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))


def within_batch(features: np.ndarray, tau: float, size: int) -> tuple[float, float, np.ndarray]:
    """(near-dup rate, mean Vendi) over consecutive batches of ``size`` rows, and each row's nearest-earlier distance
    within its batch (inf for a batch's first)."""
    from noveltynets import metrics

    dups, vendis, nearest = [], [], np.full(len(features), np.inf)
    for start in range(0, len(features), size):
        f = features[start:start + size]
        d = metrics.nearest_earlier_distance(f)
        nearest[start + 1:start + len(f)] = d[1:]
        dups.append(float((d[1:] < tau).mean()))
        vendis.append(metrics.vendi_score(f))
    return float(np.mean(dups)), float(np.mean(vendis)), nearest


def main(argv=None):
    from noveltynets import metrics
    from noveltynets.bench.report import slug
    from noveltynets.bench.runner import Judge
    from noveltynets.data import make_grid, save_png, to_uint8
    from noveltynets.models import load_model
    from noveltynets.sampling import SamplingConfig, sample
    from noveltynets.session import parse_guide

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the distilled model (noveltynets distill train)")
    p.add_argument("--classes", default="1,3,7")
    p.add_argument("--batches", type=int, default=16)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cfg", type=float, default=2.0)
    p.add_argument("--particle", default="particle:scale=3", help="the batch-only peer ('' to leave it out)")
    p.add_argument("--rank-scales", default="", help="rank guidance scales besides 1, comma-separated (e.g. 3,6)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the judge stays on the CPU)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    base, distilled = load_model(device=args.device), load_model(args.model, args.device)
    bins = distilled.num_ranks
    size = bins  # one sample per rank bin in a batch
    classes = [int(c) for c in args.classes.split(",")]
    ranks = tuple(range(1, bins + 1))
    methods = {"plain": (base, None, [], 1.0), "distilled, no rank": (distilled, None, [], 1.0),
               f"distilled ranks 1-{bins}": (distilled, ranks, [], 1.0)}
    for s in [float(v) for v in args.rank_scales.split(",") if v.strip()]:
        methods[f"distilled ranks 1-{bins}, rank scale {s:g}"] = (distilled, ranks, [], s)
    if args.particle:
        methods[args.particle] = (base, None, [args.particle], 1.0)
    rows, per_rank, seconds = [], {m: [] for m in methods}, {}
    args.out.mkdir(parents=True, exist_ok=True)
    for c in classes:
        judge = Judge(c)
        seeds = list(range(args.batches * size))
        for name, (model, ranks, guide, rank_scale) in methods.items():
            config = SamplingConfig(c, args.cfg, args.steps, batch_size=size, device=args.device, ranks=ranks,
                                    rank_scale=rank_scale)
            t0 = time.perf_counter()
            run = sample(model, seeds, config, [parse_guide(g) for g in guide])
            seconds[(name, c)] = time.perf_counter() - t0
            save_png(make_grid(to_uint8(run.images), size), args.out / f"grid_{slug(name)}_class{c}.png")  # a row per batch
            f = judge.ev.features(run.images).numpy()
            dup, vendi, nearest = within_batch(f, judge.tau, size)
            inside = metrics.precision_recall(judge.real, f)[0]
            knn = metrics.avg_knn(judge.real, f)
            row = {"class": c, "method": name, "n": len(f), "within_batch_near_dup": dup, "within_batch_vendi": vendi,
                   "precision": inside, "adherence": metrics.adherence(judge.ev.predict(run.images).numpy(), c),
                   "avg_knn": float(knn.mean()), "seconds": seconds[(name, c)], "cost_ratio": seconds[(name, c)] / seconds[("plain", c)]}
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            # per position in the batch (= rank bin for the ranked method): inside the real manifold, AvgkNN, near-dup
            manifold = metrics.inside_real_manifold(judge.real, f)
            for i in range(len(f)):
                per_rank[name].append({"class": c, "position": i % size + 1, "inside": bool(manifold[i]), "avg_knn": float(knn[i]),
                                       "dup": bool(nearest[i] < judge.tau) if np.isfinite(nearest[i]) else None})
    frontier = {}
    for name, items in per_rank.items():
        frontier[name] = []
        for pos in range(1, size + 1):
            its = [x for x in items if x["position"] == pos]
            dups = [x["dup"] for x in its if x["dup"] is not None]
            frontier[name].append({"rank": pos, "precision": float(np.mean([x["inside"] for x in its])),
                                   "avg_knn": float(np.mean([x["avg_knn"] for x in its])),
                                   "near_dup_vs_earlier": float(np.mean(dups)) if dups else None, "n": len(its)})
    means = {}
    for name in methods:
        rs = [r for r in rows if r["method"] == name]
        means[name] = {k: float(np.mean([r[k] for r in rs])) for k in rs[0] if k not in ("class", "method", "n")}
    result = {"command": " ".join(["python", *sys.argv]), "model": distilled.model_id, "base": base.model_id, "bins": bins,
              "threads": torch.get_num_threads(), "rows": rows, "means": means, "frontier": frontier}
    (args.out / "frontier.json").write_text(json.dumps(result, indent=2))
    _plot(frontier, args.out / "frontier.png")
    for name, m in means.items():
        print(name, {k: round(v, 4) for k, v in m.items()})


def _plot(frontier: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name, pts in frontier.items():
        ranks = [p["rank"] for p in pts]
        style = "-o" if "ranks" in name else "--"
        axes[0].plot(ranks, [p["precision"] for p in pts], style, label=name, ms=3)
        axes[1].plot(ranks, [p["avg_knn"] for p in pts], style, label=name, ms=3)
        axes[2].plot(ranks[1:], [p["near_dup_vs_earlier"] for p in pts[1:]], style, label=name, ms=3)
    for ax, title in zip(axes, ["precision", "AvgkNN to the real class (rarity)", "near-dup vs the earlier ranks of its batch"]):
        ax.set_xlabel("rank bin (position in the batch)")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
