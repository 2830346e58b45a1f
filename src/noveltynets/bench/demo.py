"""``make demo``: the mission in one command.

The same request twice with one named novelty memory, then the same two runs plain, each
through the CLI exactly as a user would type it. Every run is judged by the independent
evaluation embedder against all earlier runs of its method (the keep-sampling judge): run 1
against nothing, run 2 against run 1. Prints a table, writes ``OUT/demo.png`` (four labelled
grids; near-duplicates of history or of batch-mates framed in red) and ``OUT/demo.json``.

    python -m noveltynets.bench.demo --out out/demo [--class 7 --n 32 --steps 25]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .. import metrics
from ..data import from_uint8, make_grid
from .runner import Judge

METHODS = ("plain", "novelty")  # rows of the table and of the picture
PAD, SCALE, COLS = 2, 3, 8       # make_grid's padding, upscaling of the picture, samples per grid row


def cli() -> list[str]:
    """The ``noveltynets`` entry point of this interpreter's environment, else ``python -m noveltynets.cli``."""
    exe = Path(sys.executable).with_name("noveltynets")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "noveltynets.cli"]


def commands(out: Path, klass: int, n: int, steps: int) -> dict[tuple[str, int], list[str]]:
    """(method, run) → the command line; run r samples seeds (r−1)·n .. r·n − 1."""
    name = "demo-sevens" if klass == 7 else f"demo-class{klass}"
    cmds = {}
    for method in ("novelty", "plain"):  # the mission first, then the same runs without it
        for r in (1, 2):
            extra = ["--guide", "novelty", "--memory", name, "--store", str(out / "store.sqlite")] if method == "novelty" else []
            cmds[method, r] = [*cli(), "sample", "--class", str(klass), "--seeds", f"{(r - 1) * n}-{r * n - 1}",
                               "--steps", str(steps), *extra, "--out", str(out / f"{method}-run{r}"), "--overwrite", "--no-progress"]
    return cmds


def judge_runs(runs: dict[str, list[np.ndarray]], judge) -> dict[str, list[dict]]:
    """Judge each method's runs in order, run r against runs 1..r−1 of the same method.

    ``runs``: method → [(N, H, W) uint8 per run]. Each result holds the judge's metrics and
    ``flags``: per sample, whether it is a near-duplicate (within τ) of history or of an earlier batch-mate."""
    results = {}
    for method, images in runs.items():
        history, results[method] = None, []
        for imgs in images:
            x = from_uint8(imgs)
            m = judge(x, history)
            f = judge.ev.features(x if history is None else torch.cat([history, x])).numpy()
            m["flags"] = (metrics.nearest_earlier_distance(f)[len(f) - len(x):] < judge.tau).tolist()
            results[method].append(m)
            history = x if history is None else torch.cat([history, x])
    return results


def picture(runs: dict[str, list[np.ndarray]], results: dict[str, list[dict]], path: Path) -> None:
    """One PNG: a row per method, a column per run, each grid labelled with its near-dup rate."""
    font = ImageFont.load_default(size=16)
    tiles = []
    for method, images in runs.items():
        for r, (imgs, res) in enumerate(zip(images, results[method]), 1):
            grid = Image.fromarray(make_grid(imgs, ncols=COLS, pad=PAD)).convert("RGB")
            draw, (h, w) = ImageDraw.Draw(grid), imgs.shape[1:]
            for i, dup in enumerate(res["flags"]):
                if dup:
                    y, x = divmod(i, COLS)
                    y, x = PAD + y * (h + PAD) - 1, PAD + x * (w + PAD) - 1
                    draw.rectangle([x, y, x + w + 1, y + h + 1], outline=(230, 40, 40))
            grid = grid.resize((grid.width * SCALE, grid.height * SCALE), Image.NEAREST)
            label = f"{method}, run {r}: near-dup vs history {res['near_dup']:.2f}, precision {res['precision']:.2f}"
            tile = Image.new("RGB", (grid.width, grid.height + 28), "white")
            tile.paste(grid, (0, 28))
            ImageDraw.Draw(tile).text((4, 5), label, fill="black", font=font)
            tiles.append(tile)
    cols = max(len(v) for v in runs.values())
    tw, th = max(t.width for t in tiles), max(t.height for t in tiles)
    canvas = Image.new("RGB", (cols * tw + (cols - 1) * 12, len(runs) * th + (len(runs) - 1) * 12), "white")
    for k, tile in enumerate(tiles):
        canvas.paste(tile, ((k % cols) * (tw + 12), (k // cols) * (th + 12)))
    canvas.save(path)


def _against(r: int) -> str:
    return "nothing" if r == 1 else "run 1" if r == 2 else f"runs 1-{r - 1}"


def table(results: dict[str, list[dict]], n: int, seconds: dict[str, list[float]] | None = None):
    from rich.table import Table

    t = Table(title="Judged by the evaluation embedder, each run against all earlier runs of its method")
    for col in ("method", "run", "seeds", "judged against", "near-dup vs history", "precision", "seconds"):
        t.add_column(col, justify="left" if col in ("method", "judged against") else "right")
    for method, rows in results.items():
        for r, res in enumerate(rows, 1):
            secs = f"{seconds[method][r - 1]:.0f}" if seconds else ""
            t.add_row(method, str(r), f"{(r - 1) * n}-{r * n - 1}", _against(r),
                      f"{res['near_dup']:.3f}", f"{res['precision']:.3f}", secs)
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--class", dest="klass", type=int, default=7)
    p.add_argument("--n", type=int, default=32, help="samples per run (at least 6)")
    p.add_argument("--steps", type=int, default=25)
    a = p.parse_args(argv)
    if a.n < 6 or a.steps < 1:
        p.error("--n must be at least 6 (precision uses 5 nearest neighbours) and --steps positive")
    from rich.console import Console

    console, t0 = Console(), time.perf_counter()
    a.out.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):  # a fresh memory every time: the demo is idempotent
        (a.out / f"store.sqlite{suffix}").unlink(missing_ok=True)
    cmds, seconds = commands(a.out, a.klass, a.n, a.steps), {m: [] for m in METHODS}
    for (method, r), cmd in cmds.items():
        console.print(f"[bold]$ {shlex.join(cmd)}[/bold]", soft_wrap=True)
        t = time.perf_counter()
        if rc := subprocess.run(cmd).returncode:  # the CLI has printed its one-line error
            return rc
        seconds[method].append(time.perf_counter() - t)
    runs = {m: [np.load(a.out / f"{m}-run{r}" / "samples.npz")["images"] for r in (1, 2)] for m in METHODS}
    results = judge_runs(runs, Judge(a.klass))
    picture(runs, results, a.out / "demo.png")
    console.print(table(results, a.n, seconds))
    plain, nov = results["plain"][1]["near_dup"], results["novelty"][1]["near_dup"]
    console.print(f"Run 2, near-duplicates of run 1 or of each other: plain {plain:.1%}, with the memory {nov:.1%} "
                  f"({time.perf_counter() - t0:.0f} s in all). Red frames in {a.out / 'demo.png'} mark them "
                  f"(rows: {', '.join(METHODS)}; columns: run 1, run 2).")
    keep = ("near_dup", "novelty", "precision", "recall", "adherence", "vendi")
    (a.out / "demo.json").write_text(json.dumps({
        "settings": {"class": a.klass, "n": a.n, "steps": a.steps},
        "commands": [shlex.join(c) for c in cmds.values()],
        "runs": {m: [{"run": r, "seeds": f"{(r - 1) * a.n}-{r * a.n - 1}", "seconds": seconds[m][r - 1],
                      **{k: rows[r - 1][k] for k in keep if k in rows[r - 1]}} for r in (1, 2)] for m, rows in results.items()},
        "total_seconds": time.perf_counter() - t0}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
