"""Minority guidance measured as in the paper's Figure 5 (AvgkNN and LOF against l̃ and against w)
and Figure 8 / Table 1 (minority vs plain sampling on AvgkNN, LOF, minority score, with precision).

    python docs/benchmarks/minority/guidance_sweep.py --n 256 --steps 50 --out docs/benchmarks/minority/sweep_uncond

With ``--guides`` (benchmark method specs, ``;``-separated, e.g. ``minority-mix:strength=1;minority-self:grad=exact``)
it makes plain and those settings instead, and figure13.png: the first 12 seeds of every setting, one row each
(the paper's Figure 13, λ across).

Every setting makes the same seeds (0..n-1), unconditionally unless --class is given; metrics are
those of ``noveltynets bench`` (evaluation embedder space, against all real images, or the class's),
plus the minority score of the samples (the shipped classifier's setting: l2, reconstruction
conditioned on the digit the evaluation network reads, 4 draws, t = 0.9T). Writes rows.jsonl,
figure5.png and one grid per setting.
"""
import argparse
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from noveltynets.bench.methods import Context, parse_method  # noqa: E402
from noveltynets.bench.runner import Judge  # noqa: E402
from noveltynets.data import make_grid, save_png, to_uint8  # noqa: E402
from noveltynets.minority import minority_score  # noqa: E402
from noveltynets.models import load_model  # noqa: E402
from noveltynets.session import parse_guide  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=256)
ap.add_argument("--steps", type=int, default=50)
ap.add_argument("--class", dest="klass", type=int, default=None)
ap.add_argument("--cfg", type=float, default=2.0)
ap.add_argument("--classifier", default="")
ap.add_argument("--levels", default="0,3,6,9", help="l̃ swept at --scale")
ap.add_argument("--scale", type=float, default=2.0)
ap.add_argument("--scales", default="0.5,1,2,4,8", help="w swept at l̃ = 0 and at l̃ = L-1")
ap.add_argument("--guides", default="", help="';'-separated method specs to make beside plain (instead of the l̃/w sweep)")
ap.add_argument("--figure-only", action="store_true", help="only redraw the figure from --out's rows.jsonl and grids")
ap.add_argument("--out", type=Path, required=True)
args = ap.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

model = load_model()
judge = Judge(args.klass)
seeds = list(range(args.n))
clf = f",classifier={args.classifier}" if args.classifier else ""
top = parse_guide("minority" + (f":classifier={args.classifier}" if args.classifier else "")).num_classes - 1
settings = [("plain", None, None)]
if args.guides:
    settings += [(g.strip(), None, None) for g in args.guides.split(";")]
else:
    settings += [(f"minority:level={lv},scale={args.scale}{clf}", int(lv), args.scale) for lv in args.levels.split(",")]
    for lv in (0, top):
        settings += [(f"minority:level={lv},scale={w}{clf}", lv, float(w)) for w in args.scales.split(",") if float(w) != args.scale]
ctx = Context(model, steps=args.steps, batch_size=64)
rows = [json.loads(line) for line in open(args.out / "rows.jsonl")] if args.figure_only else []
with open(os.devnull if args.figure_only else args.out / "rows.jsonl", "w") as log:
    for label, level, w in [] if args.figure_only else settings:
        method = parse_method(f"{label}{',' if ':' in label else ':'}cfg={args.cfg}")
        run = method.run(ctx, args.klass, seeds)
        seconds = run.seconds
        digits = judge.ev.predict(run.images)
        score = minority_score(model, run.images, digits, distance="l2", draws=4, t=0.9)
        m = judge(run.images)
        row = {"setting": label.replace(clf, ""), "level": level, "scale": w, "class": args.klass, "n": args.n, "steps": args.steps,
               "seconds": round(seconds, 1), "minority_score": float(score.mean()),
               **{k: m[k] for k in ("avg_knn", "lof", "precision", "recall", "density", "coverage", "vendi", "near_dup", "fid")}}
        rows.append(row)
        log.write(json.dumps(row) + "\n")
        log.flush()
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        save_png(make_grid(to_uint8(run.images[:64]), ncols=16), args.out / f"grid_{label.replace(':', '_').replace(',', '_')}.png")

plain = rows[0]
what = "unconditional" if args.klass is None else f"class {args.klass}, CFG {args.cfg}"
if args.guides:  # Figure 13: the same seeds in every row
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 0.8 * len(rows) + 0.4))
    for ax, row in zip(np.atleast_1d(axes), rows):
        grid = plt.imread(args.out / f"grid_{row['setting'].replace(':', '_').replace(',', '_')}.png")
        ax.imshow(grid[: grid.shape[0] // 4, : grid.shape[1] * 12 // 16], cmap="gray")  # first row: seeds 0..11
        short = row["setting"].replace("minority-", "").replace("strength=", "λ=").replace(",form=", " ").replace(":", "\n")
        ax.set_ylabel(short.replace(",", "\n"), rotation=0, ha="right", va="center", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{what}: seeds 0-11 in every row, {args.steps} DDIM steps", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out / "figure13.png", dpi=110)
    print("wrote", args.out)
    raise SystemExit(0)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
by_level = sorted((r for r in rows if r["scale"] == args.scale), key=lambda r: r["level"])
for key, ax in zip(("avg_knn", "lof"), axes[:2]):
    ax.plot([r["level"] for r in by_level], [r[key] for r in by_level], "o-", label=f"minority, w = {args.scale}")
    ax.axhline(plain[key], color="grey", ls="--", label="plain")
    ax.set_xlabel("target class l̃ (0 = most common)")
    ax.set_title(f"{key} vs l̃")
    ax.legend(fontsize=8)
for lv, style in ((0, "s-"), (top, "o-")):
    rs = sorted((r for r in rows if r["level"] == lv), key=lambda r: r["scale"])
    axes[2].plot([r["scale"] for r in rs], [r["avg_knn"] for r in rs], style, label=f"l̃ = {lv}")
axes[2].axhline(plain["avg_knn"], color="grey", ls="--", label="plain")
axes[2].set_xscale("log", base=2)
axes[2].set_xlabel("scale w")
axes[2].set_title("avg_knn vs w")
axes[2].legend(fontsize=8)
fig.suptitle(f"Minority guidance, {what}: {args.n} samples, {args.steps} DDIM steps, same seeds")
fig.tight_layout()
fig.savefig(args.out / "figure5.png", dpi=110)
print("wrote", args.out)
