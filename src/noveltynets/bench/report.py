"""Writing a benchmark's outputs: results.json, results.csv, pareto.png, one grid per method, report.html."""

from __future__ import annotations

import csv
import html
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np

from ..data import make_grid, save_png, to_uint8

TABLE_KEYS = ["near_dup", "precision", "adherence", "vendi", "novelty", "recall", "density", "coverage",
              "avg_knn", "lof", "memorization", "fid", "kid", "cost_ratio", "generated_per_kept"]
GRID_PER_CLASS = 32


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_") or "method"


def _write_grids(result: dict, out: Path) -> dict[str, list[str]]:
    """A grid per method (the first images of each class), ``grid_<method>.png``; returns method -> [file]."""
    grids = {}
    for label, per_class in result["images"].items():
        imgs = np.concatenate([to_uint8(x[:GRID_PER_CLASS]) for x in per_class.values()])
        grids[label] = [f"grid_{slug(label)}.png"]
        save_png(make_grid(imgs, ncols=16), out / grids[label][0])
    return grids


def write_outputs(result: dict, out: Path, meta: dict) -> None:
    """Everything ``noveltynets bench`` writes, into the (temporary) folder ``out``."""
    _write_results(result, out, meta, _write_grids(result, out))


def _write_results(result: dict, out: Path, meta: dict, grids: dict[str, list[str]]) -> None:
    rows, means = result["rows"], result["means"]
    (out / "results.json").write_text(json.dumps({**meta, "config": result["config"], "rows": rows, "means": means}, indent=2))
    keys = list(dict.fromkeys(k for r in rows + means for k in r))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows + means)
    pareto(means, out / "pareto.png")
    (out / "report.html").write_text(report_html(result, meta, grids))


def read_row_lines(path: Path) -> list[dict]:
    """Rows from a log of ``noveltynets bench`` (its ``row {json}`` lines on stderr) or a file of JSON lines."""
    from ..errors import NoveltynetsError

    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise NoveltynetsError(f"bench-merge: cannot read {path} ({err})") from None
    for line in lines:
        line = line.strip()
        if line.startswith("row "):
            line = line[4:]
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise NoveltynetsError(f"bench-merge: {path} has a line that is not JSON: {line[:60]}") from None
    if not rows:
        raise NoveltynetsError(f"bench-merge: {path} holds no rows")
    for row in rows:
        _check_row(path, row)
    return rows


ROW_KEYS = ("class", "setting", "method", "n")
ROW_NUMBERS = ("near_dup", "precision", "vendi")  # what the report plots (a keep row has vendi_all instead of vendi)


def _check_row(source, row, numbers=ROW_NUMBERS) -> None:
    from ..errors import NoveltynetsError
    if not isinstance(row, dict) or any(k not in row for k in ROW_KEYS) or not all(
            isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool) and math.isfinite(row[k]) for k in numbers):
        raise NoveltynetsError(f"bench-merge: {source} has a row without {', '.join(ROW_KEYS + numbers)} "
                               f"(finite numbers for the last): {str(row)[:60]}")


def _check_results(d, r) -> dict:
    """A results.json as bench writes it: a config (n, steps, batch size, classes) and rows, each with ROW_KEYS."""
    from ..errors import NoveltynetsError
    config = r.get("config") if isinstance(r, dict) else None
    if not isinstance(config, dict) or not isinstance(r.get("rows"), list) or any(
            k not in config for k in ("n", "steps", "batch_size", "classes")):
        raise NoveltynetsError(f"bench-merge: {d}/results.json is not a bench result (needs a config with n, steps, batch_size "
                               "and classes, and rows)")
    for row in r["rows"]:
        _check_row(f"{d}/results.json", row, ROW_NUMBERS[:2] if "curves" in r else ROW_NUMBERS)
    if "curves" in r and not isinstance(r["curves"], dict):
        raise NoveltynetsError(f"bench-merge: {d}/results.json has malformed curves")
    return r


def merge_outputs(dirs: list[Path], out: Path, row_files: list[Path] = ()) -> dict:
    """One benchmark from several runs on the same protocol (n, steps, batch size, seeds), e.g. one process
    per class on a multi-core CPU, or more methods run later: rows side by side (a (class, setting) pair
    seen twice keeps its first row), means over the classes each setting has, each run's grids. Rows may
    also come from the logs of runs that never finished (``row_files``). Each row's cost ratio stays the
    one measured against plain in its own run. Returns the merged result, with ``dropped`` duplicates."""
    from ..errors import NoveltynetsError
    from .runner import mean_rows

    runs = []
    for d in dirs:
        try:
            runs.append(_check_results(d, json.loads((Path(d) / "results.json").read_text())))
        except (OSError, ValueError) as err:
            raise NoveltynetsError(f"bench-merge: {d} holds no readable results.json ({err})") from None
    if any("curves" in r for r in runs):
        if row_files or not all("curves" in r for r in runs):
            raise NoveltynetsError("bench-merge: keep benchmarks (bench --keep) merge only with each other, from their folders")
        return merge_keep_outputs(dirs, runs, out)
    same = ("n", "steps", "batch_size", "seed_offset")
    for d, r in zip(dirs[1:], runs[1:]):
        diff = [k for k in same if r["config"].get(k) != runs[0]["config"].get(k)]
        if diff:
            raise NoveltynetsError(f"bench-merge: {d} differs from {dirs[0]} in {', '.join(diff)}")
    extra = [row for f in row_files for row in read_row_lines(f)]
    n = runs[0]["config"]["n"] if runs else extra[0].get("n")
    if any(row.get("n") != n for row in extra):
        raise NoveltynetsError(f"bench-merge: rows with another number of samples than {n}")
    rows, seen, dropped = [], set(), 0
    for row in [row for r in runs for row in r["rows"]] + extra:
        key = (row["class"], row["setting"])
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        rows.append(row)
    classes = list(dict.fromkeys(r["class"] for r in rows))
    config = {**(runs[0]["config"] if runs else {"n": n}), "classes": classes,
              "methods": list(dict.fromkeys(r["setting"] for r in rows))}
    grids: dict[str, list[str]] = {}
    for d, r in zip(dirs, runs):
        tag = "_".join(map(str, r["config"]["classes"]))
        for label in dict.fromkeys(row["setting"] for row in r["rows"]):
            src = Path(d) / f"grid_{slug(label)}.png"
            if src.exists() and f"grid_{slug(label)}_class{tag}.png" not in grids.get(label, []):
                name = f"grid_{slug(label)}_class{tag}.png"
                shutil.copyfile(src, out / name)
                grids.setdefault(label, []).append(name)
    first = runs[0] if runs else {}
    meta = {"created": first.get("created"), "merged_from": [{"dir": str(d), "command": r.get("command"),
            "created": r.get("created")} for d, r in zip(dirs, runs)] + [{"rows": str(f)} for f in row_files],
            "device": first.get("device"), "model": first.get("model"), "versions": first.get("versions"),
            "command": " ; ".join(str(r.get("command")) for r in runs)}
    result = {"config": config, "rows": rows, "means": mean_rows(rows)}
    _write_results(result, out, meta, grids)
    return {**result, "dropped": dropped}


def pareto(means: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    colours = {name: plt.cm.tab10(i % 10) for i, name in enumerate(dict.fromkeys(r["method"] for r in means))}
    for ax, key, xlabel in ((axes[0], "near_dup", "near-dup rate vs history (lower is better)"),
                            (axes[1], "vendi", "Vendi score (higher is better)")):
        good = [r["precision"] for r in means if r["precision"] >= 0.5]
        floor = min(good) - 0.03 if good and len(good) < len(means) else None  # far outliers would squash the rest
        for r in means:
            y = r["precision"] if floor is None else max(r["precision"], floor)
            ax.scatter(r[key], y, s=40, color=colours[r["method"]], label=r["method"],
                       marker="v" if y != r["precision"] else "s" if r["method"] == "plain" else "o")
            short = r["setting"].partition(":")[2] or "default"
            if y != r["precision"]:
                short += f" (precision {r['precision']:.2f}, off the scale)"
            ax.annotate(short, (r[key], y), fontsize=6, xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("precision (quality)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    unique: dict = {}
    for label, handle in zip(labels, handles):
        unique.setdefault(label, handle)  # each method's first point
    axes[0].legend(unique.values(), unique.keys(), fontsize=7, loc="best")
    fig.suptitle("Quality vs novelty, mean over classes, one point per method setting (colour: method)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(rows: list[dict]) -> str:
    keys = ["class", "setting"] + [k for k in TABLE_KEYS if k in rows[0]]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)

    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(k, '—'))}</td>" for k in keys) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def report_html(result: dict, meta: dict, grids: dict[str, str]) -> str:
    cfg = result["config"]
    settings = html.escape(json.dumps({k: v for k, v in cfg.items() if k != "methods"}))
    grid_html = "".join(f"<h3>{html.escape(label)}</h3><p>first {GRID_PER_CLASS} samples of each class "
                        f"({', '.join(map(str, cfg['classes']))}), one class after another</p>"
                        + "".join(f"<img src='{html.escape(f)}'>" for f in files) for label, files in grids.items())
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


# -- the keep-sampling benchmark (bench --keep) ---------------------------------------------------
def merge_keep_outputs(dirs: list[Path], runs: list[dict], out: Path) -> dict:
    """One keep benchmark from several (e.g. one process per class) with the same n, steps, batch size, runs and seeds."""
    from ..errors import NoveltynetsError

    same = ("n", "steps", "batch_size", "runs", "model", "seed_offset")
    for d, r in zip(dirs[1:], runs[1:]):
        diff = [k for k in same if r["config"].get(k) != runs[0]["config"].get(k)]
        if diff:
            raise NoveltynetsError(f"bench-merge: {d} differs from {dirs[0]} in {', '.join(diff)}")
    rows, curves, grids, dropped = [], {}, {}, 0
    for d, r in zip(dirs, runs):
        new = [c for c in r["curves"] if c not in curves]
        dropped += sum(1 for row in r["rows"] if str(row["class"]) not in new)
        rows += [row for row in r["rows"] if str(row["class"]) in new]
        curves.update({c: r["curves"][c] for c in new})
        for label in dict.fromkeys(row["setting"] for row in r["rows"] if row["method"] != "real"):
            src = Path(d) / f"grid_{slug(label)}.png"
            if src.exists() and new:
                name = f"grid_{slug(label)}_class{'_'.join(new)}.png"
                shutil.copyfile(src, out / name)
                grids.setdefault(label, []).append(name)
    config = {**runs[0]["config"], "classes": [json.loads(c) if c.isdigit() else c for c in curves]}
    meta = {"merged_from": [{"dir": str(d), "command": r.get("command"), "created": r.get("created")} for d, r in zip(dirs, runs)],
            "command": " ; ".join(str(r.get("command")) for r in runs), "device": runs[0].get("device"),
            "created": runs[0].get("created")}
    result = {"config": config, "rows": rows, "curves": curves}
    _write_keep_results(result, out, meta, grids)
    return {**result, "dropped": dropped}


def write_keep_outputs(result: dict, out: Path, meta: dict) -> None:
    """results.json/.csv, keep_near_dup.png, keep_modes.png, a grid per method (its last run) and report.html."""
    _write_keep_results(result, out, meta, _write_grids(result, out))


def _write_keep_results(result: dict, out: Path, meta: dict, grids: dict[str, list[str]]) -> None:
    rows = result["rows"]
    (out / "results.json").write_text(json.dumps({**meta, "config": result["config"], "rows": rows, "curves": result["curves"]}, indent=2))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = out / ".results.csv.partial"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(out / "results.csv")
    keep_plots(result, out)
    (out / "report.html").write_text(keep_report_html(result, meta, grids))


def keep_plots(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, classes = result["rows"], list(result["curves"])
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    colours = {s: ("black" if s == "real images" else plt.cm.tab10(i % 10)) for i, s in enumerate(settings)}
    for name, ylabel in (("keep_near_dup.png", "near-dup rate vs all history (lower is better)"),
                         ("keep_modes.png", "distinct modes (greedy cover at τ)")):
        fig, axes = plt.subplots(1, max(1, len(classes)), figsize=(5.5 * max(1, len(classes)), 4.5), squeeze=False)
        for ax, label in zip(axes[0], classes):
            for s in settings:
                if name == "keep_near_dup.png":
                    pts = sorted((r["run"], r["near_dup"]) for r in rows if r["setting"] == s and str(r["class"]) == label)
                    if pts:
                        ax.plot(*zip(*pts), marker="o", color=colours[s], ls="--" if s == "real images" else "-", label=s)
                    ax.set_xlabel("run")
                    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
                elif s in result["curves"][label]:
                    curve = result["curves"][label][s]
                    ax.plot(range(1, len(curve) + 1), curve, color=colours[s], ls="--" if s == "real images" else "-", label=s)
                    ax.set_xlabel("samples generated")
            ax.set_title(f"class {label}")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)


def _keep_table(rows: list[dict], key: str, runs: int) -> str:
    """One row per setting, one column per run: ``key`` (and precision beside near_dup)."""
    head = "<tr><th>setting</th>" + "".join(f"<th>run {r}</th>" for r in range(1, runs + 1)) + "</tr>"
    body = ""
    for s in dict.fromkeys(r["setting"] for r in rows):
        cells = []
        for run in range(1, runs + 1):
            r = next((x for x in rows if x["setting"] == s and x["run"] == run), None)
            v = "—" if r is None or key not in r else f"{r[key]:.4g}" if isinstance(r[key], float) else str(r[key])
            if r is not None and key == "near_dup" and "precision" in r and r["method"] != "real":
                v += f" / {r['precision']:.3f}"
            cells.append(f"<td>{html.escape(v)}</td>")
        body += f"<tr><td style='text-align:left'>{html.escape(s)}</td>{''.join(cells)}</tr>"
    return f"<table>{head}{body}</table>"


def keep_report_html(result: dict, meta: dict, grids: dict[str, list[str]]) -> str:
    cfg, rows = result["config"], result["rows"]
    tables = ""
    for label in result["curves"]:
        rs = [r for r in rows if str(r["class"]) == label]
        tables += f"<h2>Class {html.escape(label)}</h2>"
        for key, title in (("near_dup", "near-dup rate vs all history / precision"), ("modes", "distinct modes so far"),
                           ("cost_ratio", "wall time ÷ plain's (first run: with a new memory's reference pool)"),
                           ("history_bytes", "history bytes"), ("step_ms", "ms per guided step of the history's term"),
                           ("adherence", "adherence")):
            tables += f"<h3>{title}</h3>{_keep_table(rs, key, cfg['runs'])}"
    grid_html = "".join(f"<h3>{html.escape(s)}</h3>" + "".join(f"<img src='{html.escape(f)}'>" for f in files)
                        for s, files in grids.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>noveltynets keep-sampling benchmark</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:2em auto}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}img{{max-width:100%;image-rendering:pixelated}}</style></head>
<body><h1>Keep sampling: {cfg['runs']} runs of {cfg['n']} per class</h1>
<p>Command: <code>{html.escape(str(meta.get("command", "")))}</code><br>Settings: <code>{html.escape(json.dumps(cfg))}</code><br>
Device: {html.escape(str(meta.get("device", "")))}; created {html.escape(str(meta.get("created", "")))}</p>
<p>Each run is judged against every earlier sample of its method's history (earlier runs and earlier in the run), in
the evaluation embedder's space (BENCHMARK.md, "keep sampling"). "real images": the class's real images in a fixed
random order, {cfg['n']} per run while they last: the floor a generator drawing fresh data would reach.</p>
<h2>Near-dup rate by run</h2><img src="keep_near_dup.png">
<h2>Distinct modes vs samples generated</h2><img src="keep_modes.png">
{tables}
<h2>Last run of each method</h2>{grid_html}
</body></html>
"""
