"""``noveltynets bench`` (one run, or keep sampling with --keep) and ``bench-merge``."""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import NoveltynetsError
from .common import DeviceOpt, OverwriteOpt, _device, friendly
from .output import atomic_output


@friendly
def bench(
    method: List[str] = typer.Option([], "--method", "-m", help="NAME[:key=value,...]; repeatable (default: plain and novelty). "
                                     "plain always runs as the baseline of every ratio."),
    classes: str = typer.Option("1,3,7", "--classes", help="Comma-separated digits; 'uncond' for unconditional sampling "
                                "(judged against all real images)."),
    n: int = typer.Option(256, "--n", help="Samples per class (seeds 0..n-1, or from --seed-offset on; the same for every method)."),
    seed_offset: int = typer.Option(0, "--seed-offset", help="First seed: S..S+n-1 (with --keep, run r on S+(r-1)*n..): "
                                    "another draw of the same protocol on disjoint seeds."),
    steps: int = typer.Option(50, "--steps", help="DDIM steps."),
    batch_size: int = typer.Option(16, "--batch-size", "-b"),
    quick: bool = typer.Option(False, "--quick", help="Smoke run: class 7, 64 samples, 10 steps (overrides --classes, --n, --steps)."),
    model: Optional[Path] = typer.Option(None, "--model", help="A diffusers-format model folder (default: the shipped model)."),
    out: Path = typer.Option(Path("bench"), "--out", "-o", help="Output folder (must be empty or new)."),
    overwrite: bool = OverwriteOpt,
    device: str = DeviceOpt,
    keep: Optional[int] = typer.Option(None, "--keep", help="Keep sampling: R runs of --n per class, run r on seeds (r-1)*n..r*n-1 "
                                       "(plus --seed-offset), "
                                       "every method keeping its history across the runs (BENCHMARK.md, protocol 2). The "
                                       "output folder fills as runs complete."),
    resume: bool = typer.Option(False, "--resume", help="With --keep: continue the keep benchmark in --out (same settings; "
                                "a larger --keep adds runs)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Benchmark methods side by side on the same seeds: results.json/.csv, pareto.png, grids, report.html."""
    import diffusers
    import torch

    from .. import __version__
    from ..bench.report import write_outputs
    from ..bench.runner import UNCOND, BenchConfig, run_bench
    from ..models import load_model
    from ..progress import progress_bar

    try:
        class_list = [c.strip() if c.strip() == UNCOND else int(c) for c in classes.split(",") if c.strip()]
    except ValueError:
        raise NoveltynetsError(f"--classes must be comma-separated digits or {UNCOND!r}, got {classes!r}") from None
    if keep is not None and keep < 1:
        raise NoveltynetsError(f"--keep needs at least 1 run, got {keep}")
    if resume and keep is None:
        raise NoveltynetsError("--resume continues a keep benchmark: pass --keep R")
    kw = dict(methods=list(method) or ["plain", "novelty"], batch_size=batch_size, device=_device(device), seed_offset=seed_offset)
    cfg = BenchConfig.quick(**kw) if quick else BenchConfig(classes=class_list, n=n, steps=steps, **kw)
    methods = cfg.validate()  # bad input fails here, before the model loads or a file is written
    cfg.check_seeds(keep or 1)
    if keep is None and any(m.memory != "continued" for m in methods):
        raise NoveltynetsError("memory=fresh|unrelated says what a history is across runs: it needs --keep R")
    if keep is not None:
        from ..bench.keep import validate_methods

        validate_methods(cfg)
    m = load_model(model, device=cfg.device)
    meta = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["noveltynets", *sys.argv[1:]]), "device": cfg.device, "model": m.model_id,
            "versions": {"noveltynets": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
                         "python": platform.python_version()},
            "cpu_threads": torch.get_num_threads()}
    # each row as it is judged, on stderr: a long run that is killed still leaves its rows in the log
    log = lambda row: typer.echo("row " + json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), err=True)  # noqa: E731
    if keep is not None:
        _keep_bench(cfg, methods, keep, resume, overwrite, out, m, meta, log, progress)
        return
    with atomic_output(out, overwrite) as tmp:
        with progress_bar(len(cfg.classes) * len(methods), "bench", progress) as advance:
            result = run_bench(cfg, m, advance=advance, log=log)
        write_outputs(result, tmp, meta)
    keys = ["near_dup", "precision", "adherence", "vendi", "cost_ratio"]
    typer.echo("setting".ljust(40) + "".join(k.rjust(12) for k in keys))
    for r in result["means"]:
        typer.echo(r["setting"][:40].ljust(40) + "".join(f"{r.get(k, float('nan')):12.4f}" for k in keys))
    typer.echo(f"wrote {out}/report.html")


def _keep_bench(cfg, methods, runs, resume, overwrite, out, model, meta, log, progress) -> None:
    """``bench --keep``: the output folder fills run by run (a killed benchmark is continued with --resume)."""
    from ..bench.keep import KeepBench
    from ..bench.report import write_keep_outputs
    from ..progress import progress_bar

    bench = KeepBench(cfg, runs, model, out, resume=resume, overwrite=overwrite)
    with progress_bar(len(cfg.classes) * runs * len(methods), "keep", progress) as advance:
        result = bench.run(advance=advance, log=log)
    write_keep_outputs(result, out, meta)
    typer.echo("setting".ljust(44) + "".join(f"run {r}".rjust(14) for r in range(1, runs + 1)))
    for s in dict.fromkeys(r["setting"] for r in result["rows"]):
        cells = {r["run"]: r for r in result["rows"] if r["setting"] == s and str(r["class"]) == str(cfg.classes[-1])}
        typer.echo(s[:44].ljust(44) + "".join((f"{cells[k]['near_dup']:.3f}" if k in cells else "—").rjust(14)
                                              for k in range(1, runs + 1)))
    typer.echo(f"near-dup rate vs history by run (class {cfg.classes[-1]}); wrote {out}/report.html")


@friendly
def bench_merge(
    runs: Optional[List[Path]] = typer.Argument(None, help="Output folders of `noveltynets bench` runs (same n, steps, seeds)."),
    rows: List[Path] = typer.Option([], "--rows", help="A log of a bench run (its 'row {json}' lines), e.g. of a run that was killed; repeatable."),
    out: Path = typer.Option(Path("bench"), "--out", "-o", help="Output folder (must be empty or new)."),
    overwrite: bool = OverwriteOpt,
) -> None:
    """Merge bench runs (e.g. one process per class, or methods added later) into one report."""
    from ..bench.report import merge_outputs

    runs = list(runs or [])
    if len(runs) + len(rows) < 2:
        raise NoveltynetsError("bench-merge needs at least two run folders or row logs")
    with atomic_output(out, overwrite) as tmp:
        result = merge_outputs(runs, tmp, rows)
    dropped = f" ({result['dropped']} repeated class/setting rows dropped)" if result["dropped"] else ""
    typer.echo(f"merged {len(result['rows'])} rows of classes {result['config']['classes']} into {out}/report.html{dropped}")

