"""Writing a benchmark's outputs: results.json, results.csv, pareto.png, one grid per method, report.html."""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

import numpy as np

from ..data import make_grid, save_png, to_uint8

TABLE_KEYS = ["near_dup", "precision", "adherence", "vendi", "novelty", "recall", "density", "coverage",
              "avg_knn", "lof", "memorization", "fid", "kid", "cost_ratio", "generated_per_kept"]
GRID_PER_CLASS = 32


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_") or "method"


def write_outputs(result: dict, out: Path, meta: dict) -> None:
    """Everything ``noveltynets bench`` writes, into the (temporary) folder ``out``."""
    rows, means = result["rows"], result["means"]
    (out / "results.json").write_text(json.dumps({**meta, "config": result["config"], "rows": rows, "means": means}, indent=2))
    keys = list(dict.fromkeys(k for r in rows + means for k in r))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows + means)
    grids = {}
    for label, per_class in result["images"].items():
        imgs = np.concatenate([to_uint8(x[:GRID_PER_CLASS]) for x in per_class.values()])
        grids[label] = f"grid_{slug(label)}.png"
        save_png(make_grid(imgs, ncols=16), out / grids[label])
    pareto(means, out / "pareto.png")
    (out / "report.html").write_text(report_html(result, meta, grids))


def pareto(means: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, xlabel in ((axes[0], "near_dup", "near-dup rate vs history (lower is better)"),
                            (axes[1], "vendi", "Vendi score (higher is better)")):
        for r in means:
            ax.scatter(r[key], r["precision"], s=40, marker="s" if r["method"] == "plain" else "o")
            ax.annotate(r["setting"], (r[key], r["precision"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("precision (quality)")
        ax.grid(alpha=0.3)
    fig.suptitle("Quality vs novelty, mean over classes, one point per method setting")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(rows: list[dict]) -> str:
    keys = ["class", "setting"] + [k for k in TABLE_KEYS if k in rows[0]]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)

    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    body = "".join("<tr>" + "".join(f"<td>{cell(r[k])}</td>" for k in keys) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def report_html(result: dict, meta: dict, grids: dict[str, str]) -> str:
    cfg = result["config"]
    settings = html.escape(json.dumps({k: v for k, v in cfg.items() if k != "methods"}))
    grid_html = "".join(f"<h3>{html.escape(label)}</h3><p>first {GRID_PER_CLASS} samples of each class "
                        f"({', '.join(map(str, cfg['classes']))}), one class after another</p><img src='{html.escape(f)}'>"
                        for label, f in grids.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>noveltynets benchmark</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}img{{max-width:100%;image-rendering:pixelated}}</style></head>
<body><h1>noveltynets benchmark</h1>
<p>Command: <code>{html.escape(meta.get("command", ""))}</code><br>Settings: <code>{settings}</code><br>
Device: {html.escape(str(meta.get("device", "")))}; created {html.escape(str(meta.get("created", "")))}; model {html.escape(str(meta.get("model", "")))}</p>
<p>Metrics in the evaluation embedder's space (BENCHMARK.md). near_dup: share of samples closer than τ to an earlier
sample; cost_ratio: wall time per sample over plain sampling's in this run (setup such as a memory's reference pool
excluded: <code>setup_seconds</code> in results.json).</p>
<h2>Mean over classes</h2>{_table(result["means"])}
<h2>Quality vs novelty</h2><img src="pareto.png">
<h2>Per class</h2>{_table(result["rows"])}
<h2>Samples</h2>{grid_html}
</body></html>
"""
