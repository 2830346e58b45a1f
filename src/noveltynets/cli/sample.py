"""The ``noveltynets`` command line: sample, bench, memory, train-model, train-embedder, check-model."""

from __future__ import annotations

import functools
import glob
import json
import math
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import typer

from .errors import NoveltynetsError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Diffusion sampling that keeps producing samples unlike the ones before.")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is so that it unwinds like Ctrl-C: partial outputs are removed."""


def _on_sigterm(signum, frame):
    raise Terminated()


def friendly(fn):
    """Turn NoveltynetsError (bad input, unusable files) into one line on stderr and exit code 2; SIGINT and SIGTERM
    unwind the command (its temporary output is removed) and exit 130 and 143."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() else None
        try:
            return fn(*args, **kwargs)
        except NoveltynetsError as e:
            _fail(str(e))
        except KeyboardInterrupt as e:
            typer.echo("terminated" if isinstance(e, Terminated) else "interrupted", err=True)
            raise typer.Exit(143 if isinstance(e, Terminated) else 130)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    return wrapper


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _clean_stale(parent: Path, name: str) -> None:
    """Remove the temporary folders of earlier runs on output ``name`` whose process is gone (killed with SIGKILL, or a
    machine that went down): ``.NAME.PID.*.partial`` and ``.NAME.old-PID``."""
    pattern = re.compile(rf"\.{re.escape(name)}\.(?:(\d+)\.[A-Za-z0-9_]+\.partial|old-(\d+))")
    for p in parent.glob(f".{glob.escape(name)}.*"):
        m = pattern.fullmatch(p.name)
        pid = int(m.group(1) or m.group(2)) if m else None
        if pid is not None and p.is_dir() and pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def _device(name: str) -> str:
    import torch
    if name == "cuda" and not torch.cuda.is_available():
        raise NoveltynetsError("--device cuda was asked for but no CUDA device is available")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise NoveltynetsError(f"unknown device {name!r}; use cpu or cuda")
    return name


def _check_class(model, klass: int | None) -> None:
    if klass is not None and not 0 <= klass < model.num_classes:
        raise NoveltynetsError(f"unknown class {klass}: this model has classes 0-{model.num_classes - 1}")


def _in_range(option: str, value: float, lo: float, hi: float, lo_open: bool = False) -> None:
    """A numeric option must be finite and in [lo, hi] ((lo, hi] with ``lo_open``); the message gives the range."""
    ok = math.isfinite(value) and (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:
        raise NoveltynetsError(f"{option} must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value}")


def _prepare_out(out: Path, overwrite: bool) -> Path:
    """Check that ``out`` can be written; return a fresh temporary folder beside it."""
    here, target = Path.cwd().resolve(), out.expanduser().resolve()
    if target == here or target in here.parents or target == Path.home().resolve():
        raise NoveltynetsError(f"--out {out} is the current folder, one above it or the home folder, which a run would replace "
                               "as a whole: name a new or empty folder")
    if out.exists() and not out.is_dir():
        raise NoveltynetsError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise NoveltynetsError(f"output folder {out} is not empty (pass --overwrite to replace it)")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _clean_stale(parent, out.name)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".partial", dir=parent))
    except OSError as e:
        raise NoveltynetsError(f"cannot create the output folder {out} in {parent}: {e.strerror or e}") from None


def _refuse_inside(out: Path, path: Path, what: str) -> None:
    """``path`` (e.g. the memory store) must not lie inside the output folder, which a run replaces as a whole."""
    p, o = Path(path).expanduser().resolve(), Path(out).expanduser().resolve()
    if p == o or o in p.parents:
        raise NoveltynetsError(f"{what} {path} lies inside --out {out}, which the run replaces as a whole: "
                               f"keep it outside the output folder")


def _commit_out(tmp: Path, out: Path) -> None:
    """Move the finished folder into place; an old ``out`` is only removed once the new one is complete."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@app.command()
@friendly
def sample(
    klass: Optional[int] = typer.Option(None, "--class", "-c", help="Digit to generate (0-9); omit for unconditional samples."),
    n: Optional[int] = typer.Option(None, "--n", "-n", help="Number of samples (default 64, or the number of --seeds)."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="Samples per batch (does not change the images)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Seeds, one per sample: 0-63, 1,5,9 or 0-9,100-109 (default 0..n-1)."),
    cfg: float = typer.Option(2.0, "--cfg", help="Classifier-free guidance scale (1 = off); ignored without --class."),
    steps: int = typer.Option(50, "--steps", help="Number of denoising steps."),
    scheduler: str = typer.Option("ddim", "--scheduler", help="ddim, ddpm, dpm++ or unipc."),
    eta: float = typer.Option(0.0, "--eta", help="DDIM eta (0 = deterministic)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Initial-noise temperature (scales the starting noise; 1 = off)."),
    guide: List[str] = typer.Option([], "--guide", "-g", help="Guidance term NAME[:key=value,...] (novelty, repel, particle, cads, minority, point); repeatable."),
    filter_spec: Optional[str] = typer.Option(None, "--filter", "-f", help="Outer-loop filter NAME[:key=value,...]: oversample, knn-filter, lsh-filter."),
    grad_mode: str = typer.Option("x0", "--grad-mode", help="x0 (cheap) or exact (backward pass through the denoiser)."),
    memory: Optional[str] = typer.Option(None, "--memory", "-m", help="Named history to guide with and update (created if missing): a novelty "
                                         "memory, or the exact/LSH history of repel, knn-filter, lsh-filter, oversample."),
    store: Optional[Path] = typer.Option(None, "--store", help="Memory store file (default ~/.cache/noveltynets/memories.sqlite)."),
    embedder: Optional[str] = typer.Option(None, "--embedder", help="Novelty embedder: pooled-pixels[:N], multiscale-pooled[:2,4,8], denoiser-mid[:t=T] (default: an existing memory's own, else pooled-pixels:32)."),
    negatives: Optional[str] = typer.Option(None, "--negatives", help="A new memory's reference negatives: real (the training "
                                            "images; the default for models trained here, such as the shipped one), pool "
                                            "(unguided samples; the default otherwise) or jitter (a classify memory)."),
    pool_size: int = typer.Option(128, "--pool-size", help="Unguided samples in a new memory's reference pool (made once, cached)."),
    scope: str = typer.Option("user", "--scope", help="A new memory's scope: session, user or service."),
    model: Optional[Path] = typer.Option(None, "--model", help="A diffusers-format model folder (default: the shipped MNIST-5k model)."),
    out: Path = typer.Option(Path("samples"), "--out", "-o", help="Output folder (must be empty or new)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output folder."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Generate images and write PNGs, grid.png, samples.npz and manifest.json to --out."""
    import numpy as np
    import torch

    from .data import make_grid, save_png, to_uint8
    from .filters import parse_filter
    from .guidance import parse_guide
    from .models.unet import NULL_CLASS
    from .progress import progress_bar
    from . import sampling
    from .models import load_model
    from .sampling import make_scheduler, parse_seeds

    t_start = time.perf_counter()
    # 1. validate everything before any work or any file is written
    seed_list = parse_seeds(seeds) if seeds is not None else None
    if n is not None and n <= 0:
        raise NoveltynetsError(f"--n must be positive, got {n}")
    if seed_list is not None and n is not None and len(seed_list) != n:
        raise NoveltynetsError(f"--n {n} does not match the {len(seed_list)} seeds given by --seeds {seeds}")
    n = n if n is not None else (len(seed_list) if seed_list is not None else 64)
    seed_list = seed_list if seed_list is not None else list(range(n))
    if batch_size <= 0:
        raise NoveltynetsError(f"--batch-size must be positive, got {batch_size}")
    if steps <= 0:
        raise NoveltynetsError(f"--steps must be positive, got {steps}")
    if grad_mode not in ("x0", "exact"):
        raise NoveltynetsError(f"--grad-mode must be x0 or exact, got {grad_mode!r}")
    if memory is not None:
        from .memory.store import check_name
        check_name(memory)  # before the reference pool is sampled and cached
    _in_range("--cfg", cfg, 0, 100)
    _in_range("--eta", eta, 0, 1)  # DDIM's eta: 0 deterministic, 1 as stochastic as DDPM; above 1 the variance is invalid
    _in_range("--temperature", temperature, 0, 10, lo_open=True)
    terms = [parse_guide(spec) for spec in guide]
    filt = parse_filter(filter_spec) if filter_spec else None
    dev = _device(device)
    t_load = time.perf_counter()
    m = load_model(model, device=dev)
    load_s = time.perf_counter() - t_load
    _check_class(m, klass)
    make_scheduler(scheduler, m.scheduler_config, steps)  # validates the scheduler name
    memory_info = _setup_memory(terms, filt, memory, store, embedder, negatives, pool_size, scope, m, klass, cfg, steps, scheduler, dev,
                                progress, out)
    tmp = _prepare_out(out, overwrite)

    try:
        # 2. sample
        def generate(s, show=progress):
            return sampling.sample(m, s, klass, cfg, steps, scheduler, eta, terms, grad_mode, batch_size, dev, show,
                                   temperature=temperature)

        if filt is None:
            run = generate(seed_list)
        else:  # keep one image per seed slot; the seeds they came from go into samples.npz and the manifest
            t0 = time.perf_counter()
            with progress_bar(n, f"{filt.name} (kept)", enabled=progress) as advance:
                fr = filt.run(lambda s: generate(s, False).images, seed_list, batch_size, advance)
            run = sampling.SampleRun(fr.images, fr.seeds, [klass if klass is not None else NULL_CLASS] * n, [time.perf_counter() - t0])
            seed_list = fr.seeds
        # 3. write everything into the temporary folder, then move it into place
        images = to_uint8(run.images)
        for i, img in enumerate(images):
            save_png(img, tmp / f"{i:06d}.png")
        save_png(make_grid(images), tmp / "grid.png")
        np.savez_compressed(tmp / "samples.npz", images=images, classes=np.array(run.classes), seeds=np.array(seed_list, dtype=np.int64))
        import diffusers

        from . import __version__
        manifest = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["noveltynets", *sys.argv[1:]]),
            "settings": {"class": klass, "n": n, "batch_size": batch_size, "seeds": seeds or f"0-{n - 1}", "cfg": cfg if klass is not None else 1.0,
                         "steps": steps, "scheduler": scheduler, "eta": eta, "temperature": temperature, "grad_mode": grad_mode,
                         "guidance": [t.to_dict() for t in terms], "device": dev,
                         "filter": {**filt.to_dict(), "generated": fr.generated, "kept_seeds": fr.seeds} if filt else None},
            "model": {"id": m.model_id, "path": str(m.path)},
            "memory": memory_info() if memory_info else None,
            "timings": {"model_load_s": round(load_s, 3), "sampling_s": round(run.seconds, 3), "per_sample_s": round(run.seconds / n, 4),
                        "batch_s": [round(b, 3) for b in run.batch_seconds], "total_s": round(time.perf_counter() - t_start, 3)},
            "versions": {"noveltynets": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version()},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        _commit_out(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    typer.echo(f"wrote {n} samples to {out} ({run.seconds:.1f} s sampling, {run.seconds / n * 1000:.0f} ms per sample)")


def _setup_memory(terms, filt, name, store_path, embedder_spec, negatives, pool_size, scope, m, klass, cfg, steps, scheduler, dev, progress,
                  out: Path):
    """Attach a history to the term or filter that keeps one: the named one with ``--memory`` (loaded or
    created in the store), else a novelty memory for this command only. Returns a manifest-info callable (or None)."""
    from .guidance import NoveltyGuidance
    from .embed import embedder_from_spec
    from .memory.setup import StoreObserver, history_owners, open_history
    from .memory.store import MemoryStore, default_store_path

    owners = history_owners(terms, filt)
    if name is not None and not owners:
        used = ", ".join([t.name for t in terms] + ([filt.name] if filt else [])) or "plain sampling"
        raise NoveltynetsError(f"--memory needs a method that keeps a history (--guide novelty or repel, --filter knn-filter, "
                               f"lsh-filter or oversample); {used} keeps none")
    if name is not None and len(owners) > 1:
        raise NoveltynetsError(f"--memory names one history, but {' and '.join(o.name for o in owners)} each keep one")
    novelty = [o for o in owners if isinstance(o, NoveltyGuidance)]
    if len(novelty) > 1:
        raise NoveltynetsError("--guide novelty is given more than once: one novelty term per run (put all its settings in one spec)")
    if name is None and not novelty:
        return None  # a peer's history lives for this command only, inside its term or filter
    owner = owners[0] if name is not None else novelty[0]
    if negatives not in (None, "pool", "real", "jitter"):
        raise NoveltynetsError(f"--negatives must be pool, real or jitter, got {negatives!r}")
    if pool_size < 2:
        raise NoveltynetsError("--pool-size must be at least 2")
    _refuse_inside(out, store_path or default_store_path(), "the memory store")
    st = MemoryStore(store_path)
    if isinstance(owner, NoveltyGuidance):
        emb = embedder_from_spec(_embedder_spec(st, name, embedder_spec), m)
    elif embedder_spec is not None:
        raise NoveltynetsError(f"--embedder is the novelty memory's; {owner.name}'s history uses its own (e.g. {owner.name}:embedder=...)")
    else:
        emb = owner.history_embedder(m)
    cfg_used = cfg if klass is not None else 1.0
    history, version = open_history(st, name, owner, m, emb, klass, cfg_used, steps, scheduler, negatives, pool_size, scope, dev, progress)
    if name is None:  # session scope: lives for this command only
        owner.attach(history, None, emb)
        return lambda: {"name": None, "scope": "session", "kind": history.kind, "embedder": emb.id, "n_seen": history.n_seen}
    settings = {"class": klass, "cfg": cfg_used, "steps": steps, "scheduler": scheduler, "guidance": [t.to_dict() for t in terms],
                "filter": filt.to_dict() if filt else None}
    observer = StoreObserver(st, name, owner, version, settings)
    owner.attach(history, observer, emb)
    start_version = version
    return lambda: {"name": name, "store": str(st.path), "kind": history.kind, "embedder": emb.id, "version_before": start_version,
                    "version_after": observer.version, "n_seen": owner.memory.n_seen}


def _embedder_spec(store, name: str | None, spec: str | None) -> str:
    """``--embedder`` if given, else the embedder an existing memory was made with, else the default."""
    from .embed.embedders import DEFAULT_EMBEDDER, spec_of

    if spec is not None:
        return spec
    return spec_of(store.info(name).embedder_id) if name is not None and store.exists(name) else DEFAULT_EMBEDDER


@app.command("train-model")
@friendly
def train_model_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the model, checkpoint and training log (rerun to resume)."),
    steps: int = typer.Option(20_000, "--steps"),
    batch_size: int = typer.Option(256, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train the default class-conditional UNet on the MNIST-5k train split (EMA, bf16 on GPU, resumable)."""
    from .models.trainer import TrainConfig, train_model

    if steps <= 0 or batch_size <= 0:
        raise NoveltynetsError("--steps and --batch-size must be positive")
    _in_range("--lr", lr, 0, 1, lo_open=True)
    train_model(out, TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed), device=_device(device), show_progress=progress)
    typer.echo(f"model written to {out}")


@app.command("train-embedder")
@friendly
def train_embedder_cmd(
    out: Path = typer.Option(..., "--out", "-o"),
    epochs: int = typer.Option(30, "--epochs"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train the evaluation embedder (a CNN digit classifier used only by metrics)."""
    from .models.embedder import train_embedder

    if epochs <= 0:
        raise NoveltynetsError("--epochs must be positive")
    result = train_embedder(out, epochs=epochs, seed=seed, device=_device(device), show_progress=progress)
    typer.echo(json.dumps(result))


@app.command("check-model")
@friendly
def check_model_cmd(
    model: Optional[Path] = typer.Option(None, "--model"),
    embedder: Optional[Path] = typer.Option(None, "--embedder"),
    per_class: int = typer.Option(100, "--per-class"),
    n_uncond: int = typer.Option(1000, "--n-uncond"),
    cfg: float = typer.Option(2.0, "--cfg"),
    steps: int = typer.Option(50, "--steps"),
    batch_size: int = typer.Option(250, "--batch-size"),
    device: str = typer.Option("cpu", "--device"),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the result as JSON here."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Judge a model with the evaluation embedder: adherence at --cfg, unconditional class balance."""
    from .bench.model_check import check_model
    from .models import load_model
    from .models.embedder import load_eval_embedder

    _in_range("--cfg", cfg, 0, 100)
    if per_class < 1 or n_uncond < 0 or steps < 1 or batch_size < 1:
        raise NoveltynetsError("--per-class, --steps and --batch-size must be positive, --n-uncond non-negative")
    dev = _device(device)
    result = check_model(load_model(model, dev), load_eval_embedder(embedder, dev), per_class, n_uncond, cfg, steps,
                         batch_size=batch_size, device=dev, show_progress=progress)
    text = json.dumps(result, indent=2)
    if out is not None:
        out.write_text(text)
    typer.echo(text)


@app.command()
@friendly
def bench(
    method: List[str] = typer.Option([], "--method", "-m", help="NAME[:key=value,...]; repeatable (default: plain and novelty). "
                                     "plain always runs as the baseline of every ratio."),
    classes: str = typer.Option("1,3,7", "--classes", help="Comma-separated digits; 'uncond' for unconditional sampling "
                                "(judged against all real images)."),
    n: int = typer.Option(256, "--n", help="Samples per class (seeds 0..n-1, the same for every method)."),
    steps: int = typer.Option(50, "--steps", help="DDIM steps."),
    batch_size: int = typer.Option(16, "--batch-size", "-b"),
    quick: bool = typer.Option(False, "--quick", help="Smoke run: class 7, 64 samples, 10 steps (overrides --classes, --n, --steps)."),
    model: Optional[Path] = typer.Option(None, "--model", help="A diffusers-format model folder (default: the shipped model)."),
    out: Path = typer.Option(Path("bench"), "--out", "-o", help="Output folder (must be empty or new)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output folder."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    keep: Optional[int] = typer.Option(None, "--keep", help="Keep sampling: R runs of --n per class, run r on seeds (r-1)*n..r*n-1, "
                                       "every method keeping its history across the runs (BENCHMARK.md, protocol 2). The "
                                       "output folder fills as runs complete."),
    resume: bool = typer.Option(False, "--resume", help="With --keep: continue the keep benchmark in --out (same settings; "
                                "a larger --keep adds runs)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Benchmark methods side by side on the same seeds: results.json/.csv, pareto.png, grids, report.html."""
    import diffusers
    import torch

    from . import __version__
    from .bench.report import write_outputs
    from .bench.runner import UNCOND, BenchConfig, run_bench
    from .models import load_model
    from .progress import progress_bar

    try:
        class_list = [c.strip() if c.strip() == UNCOND else int(c) for c in classes.split(",") if c.strip()]
    except ValueError:
        raise NoveltynetsError(f"--classes must be comma-separated digits or {UNCOND!r}, got {classes!r}") from None
    if keep is not None and keep < 1:
        raise NoveltynetsError(f"--keep needs at least 1 run, got {keep}")
    if resume and keep is None:
        raise NoveltynetsError("--resume continues a keep benchmark: pass --keep R")
    kw = dict(methods=list(method) or ["plain", "novelty"], batch_size=batch_size, device=_device(device))
    cfg = BenchConfig.quick(**kw) if quick else BenchConfig(classes=class_list, n=n, steps=steps, **kw)
    methods = cfg.validate()  # bad input fails here, before the model loads or a file is written
    if keep is None and any(m.memory != "continued" for m in methods):
        raise NoveltynetsError("memory=fresh|unrelated says what a history is across runs: it needs --keep R")
    if keep is not None:
        from .bench.keep import validate_methods

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
    tmp = _prepare_out(out, overwrite)
    try:
        with progress_bar(len(cfg.classes) * len(methods), "bench", progress) as advance:
            result = run_bench(cfg, m, advance=advance, log=log)
        write_outputs(result, tmp, meta)
        _commit_out(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    keys = ["near_dup", "precision", "adherence", "vendi", "cost_ratio"]
    typer.echo("setting".ljust(40) + "".join(k.rjust(12) for k in keys))
    for r in result["means"]:
        typer.echo(r["setting"][:40].ljust(40) + "".join(f"{r.get(k, float('nan')):12.4f}" for k in keys))
    typer.echo(f"wrote {out}/report.html")


def _keep_bench(cfg, methods, runs, resume, overwrite, out, model, meta, log, progress) -> None:
    """``bench --keep``: the output folder fills run by run (a killed benchmark is continued with --resume)."""
    from .bench.keep import KeepBench
    from .bench.report import write_keep_outputs
    from .progress import progress_bar

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


@app.command("bench-merge")
@friendly
def bench_merge(
    runs: Optional[List[Path]] = typer.Argument(None, help="Output folders of `noveltynets bench` runs (same n, steps, seeds)."),
    rows: List[Path] = typer.Option([], "--rows", help="A log of a bench run (its 'row {json}' lines), e.g. of a run that was killed; repeatable."),
    out: Path = typer.Option(Path("bench"), "--out", "-o", help="Output folder (must be empty or new)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output folder."),
) -> None:
    """Merge bench runs (e.g. one process per class, or methods added later) into one report."""
    from .bench.report import merge_outputs

    runs = list(runs or [])
    if len(runs) + len(rows) < 2:
        raise NoveltynetsError("bench-merge needs at least two run folders or row logs")
    tmp = _prepare_out(out, overwrite)
    try:
        result = merge_outputs(runs, tmp, rows)
        _commit_out(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    dropped = f" ({result['dropped']} repeated class/setting rows dropped)" if result["dropped"] else ""
    typer.echo(f"merged {len(result['rows'])} rows of classes {result['config']['classes']} into {out}/report.html{dropped}")


memory_app = typer.Typer(no_args_is_help=True, help="Manage novelty memories in a store.")
app.add_typer(memory_app, name="memory")
StoreOpt = typer.Option(None, "--store", help="Memory store file (default ~/.cache/noveltynets/memories.sqlite).")


def _store(path, read_only: bool = False, must_exist: bool = False):
    """The store at ``path`` (default: the user's). Commands that only read open it read-only, and they and the commands
    that change an existing memory refuse a missing store rather than create an empty one."""
    from .memory.store import MemoryStore
    return MemoryStore(path, read_only=read_only, create=not must_exist)


@memory_app.command("list")
@friendly
def memory_list(store: Optional[Path] = StoreOpt) -> None:
    """One line per history: name, kind, scope, samples seen, embedder, model."""
    st = _store(store, read_only=True)
    for name in st.names():
        try:
            i = st.info(name)
            typer.echo(f"{i.name}\t{i.kind}\t{i.scope}\t{i.n_seen} seen\t{i.embedder_id}\t{i.model_id}")
        except Exception as e:  # one damaged row must not hide the others
            typer.echo(f"{name}\t(unreadable: {e})")


@memory_app.command("show")
@friendly
def memory_show(name: str, store: Optional[Path] = StoreOpt) -> None:
    """Everything about one memory or history, as JSON."""
    from dataclasses import asdict
    st = _store(store, read_only=True)
    info = asdict(st.info(name))
    mem, _ = st.load(name)
    info["samples_recorded"] = st.count_samples(name)
    if mem.kind == "novelty":
        info.update(replay_size=len(mem.replay), reference_negatives=len(mem.negatives), train_steps=mem.train_steps)
    typer.echo(json.dumps(info, indent=2))


@memory_app.command("reset")
@friendly
def memory_reset(name: str, store: Optional[Path] = StoreOpt) -> None:
    """Forget a memory's history (keeps its settings and reference negatives)."""
    _store(store, must_exist=True).reset(name)
    typer.echo(f"memory {name!r} reset")


@memory_app.command("delete")
@friendly
def memory_delete(name: str, store: Optional[Path] = StoreOpt) -> None:
    _store(store, must_exist=True).delete(name)
    typer.echo(f"memory {name!r} deleted")


@memory_app.command("export")
@friendly
def memory_export(name: str, path: Path, store: Optional[Path] = StoreOpt) -> None:
    """Write one memory (state and sample records) to a standalone file."""
    _store(store, read_only=True).export(name, path)
    typer.echo(f"memory {name!r} exported to {path}")


@memory_app.command("import")
@friendly
def memory_import(path: Path, name: Optional[str] = typer.Option(None, "--name", help="Import under another name."),
                  store: Optional[Path] = StoreOpt) -> None:
    """Add the memory in an exported file to the store."""
    if not path.is_file():
        raise NoveltynetsError(f"no such file {path}")
    typer.echo(f"memory {_store(store).import_(path, name)!r} imported")


@memory_app.command("pretrain")
@friendly
def memory_pretrain(
    name: str,
    from_dataset: bool = typer.Option(False, "--from-dataset", help="Teach the memory the training images."),
    klass: Optional[int] = typer.Option(None, "--class", "-c", help="Only this digit's training images."),
    embedder: Optional[str] = typer.Option(None, "--embedder", help="Default: an existing memory's own, else pooled-pixels:32."),
    epochs: int = typer.Option(20, "--epochs", help="Passes over the training images."),
    model: Optional[Path] = typer.Option(None, "--model"),
    steps: int = typer.Option(50, "--steps", help="Steps of the reference pool's samples."),
    pool_size: int = typer.Option(512, "--pool-size"),
    store: Optional[Path] = StoreOpt,
    device: str = typer.Option("cpu", "--device"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Create a service-wide memory that has "seen" the training set, so guidance with it avoids echoing training data."""
    import torch

    from .data import load_split
    from .embed import embedder_from_spec
    from .memory.setup import open_memory, pretrain
    from .models import load_model
    from .progress import progress_bar

    if not from_dataset:
        raise NoveltynetsError("nothing to pretrain from: pass --from-dataset")
    dev = _device(device)
    m = load_model(model, dev)
    _check_class(m, klass)
    st = _store(store)
    emb = embedder_from_spec(_embedder_spec(st, name, embedder), m)
    mem, version = open_memory(st, name, m, emb, klass, 2.0 if klass is not None else 1.0, steps, "ddim", "pool", pool_size,
                               "service", dev, progress)
    train = load_split("train")
    images = train.of_class(klass) if klass is not None else train.images
    with torch.no_grad():
        e = emb(images.to(dev))

    def record(memory, emb_chunk, idx):  # each training image is observed (and recorded) once
        nonlocal version
        memory, version = st.observe(name, memory, version, emb_chunk, [{"settings": {"source": "train", "index": int(i)}} for i in idx])
        return memory

    chunk = 256
    with progress_bar(-(-len(e) // chunk) + epochs, "pretrain", enabled=progress) as advance:
        mem = pretrain(mem, e, epochs, observe=record, advance=advance, chunk=chunk)
    st.save(name, mem)
    typer.echo(f"memory {name!r} has seen {mem.n_seen} training images")


minority_app = typer.Typer(no_args_is_help=True, help="Minority guidance (Um & Ye, ICLR 2024): score real images' uniqueness.")
app.add_typer(minority_app, name="minority")


@minority_app.command("score")
@friendly
def minority_score_cmd(
    out: Path = typer.Option(Path("minority_scores.npz"), "--out", "-o", help="Scores file (.npz) to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    split: str = typer.Option("train", "--split", help="Real images to score: train, heldout or all."),
    klass: Optional[int] = typer.Option(None, "--class", "-c", help="Only this digit's images."),
    t: float = typer.Option(0.9, "--t", help="Noise level as a fraction of the schedule (the paper: 0.9)."),
    draws: int = typer.Option(1, "--draws", help="Noise draws averaged per image."),
    distance: str = typer.Option("perceptual", "--distance", help="perceptual (LPIPS-style over the shipped evaluation network), l1 or l2."),
    levels: Optional[int] = typer.Option(None, "--levels", "-L", help="Quantile classes (default: about 450 images each)."),
    conditional: bool = typer.Option(False, "--conditional/--unconditional", help="Reconstruct with each image's digit as the class (default: the null class, as in the paper)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise draws."),
    batch_size: int = typer.Option(256, "--batch-size", "-b"),
    model: Optional[Path] = typer.Option(None, "--model", help="A diffusers-format model folder (default: the shipped MNIST-5k model)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    grids: Optional[Path] = typer.Option(None, "--grids", help="Also write highest.png and lowest.png (the 64 highest- and lowest-scoring images) to this folder."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Score real images by how much a one-shot reconstruction from t = 0.9T loses (high = rare), bin them into quantile classes, write --out."""
    import numpy as np
    import torch

    from .data import load_split
    from .minority import default_levels, minority_score, quantile_classes
    from .models import load_model

    if out.suffix != ".npz":
        raise NoveltynetsError(f"--out must be a .npz file, got {out}")
    if out.exists() and not overwrite:
        raise NoveltynetsError(f"{out} exists (pass --overwrite to replace it)")
    if split not in ("train", "heldout", "all"):
        raise NoveltynetsError(f"unknown split {split!r}; use train, heldout or all")
    if draws < 1 or batch_size < 1:
        raise NoveltynetsError("--draws and --batch-size must be positive")
    dev = _device(device)
    m = load_model(model, dev)
    _check_class(m, klass)
    data = load_split(split)
    index = torch.arange(len(data)) if klass is None else torch.nonzero(data.labels == klass).flatten()
    images, digits = data.images[index], data.labels[index]
    n_levels = levels if levels is not None else default_levels(len(images))
    if not 2 <= n_levels <= len(images):
        raise NoveltynetsError(f"--levels must be between 2 and the number of images ({len(images)}), got {n_levels}")
    scores = minority_score(m, images, digits if conditional else None, t=t, draws=draws, distance=distance, seed=seed,
                            batch_size=batch_size, device=dev, show_progress=progress)
    classes, thresholds = quantile_classes(scores, n_levels)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial.npz")
    try:
        np.savez(tmp, scores=scores.numpy(), classes=classes.numpy(), thresholds=thresholds.numpy(), index=index.numpy(),
                 digits=digits.numpy(), split=split, t=t, draws=draws, distance=distance, conditional=conditional, seed=seed,
                 model_id=m.model_id)
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise NoveltynetsError(f"cannot write {out}: {e.strerror or e}") from None
    if grids is not None:
        from .data import make_grid, save_png, to_uint8

        order = scores.argsort(descending=True)
        try:
            grids.mkdir(parents=True, exist_ok=True)
            for name, idx in (("highest", order[:64]), ("lowest", order.flip(0)[:64])):
                save_png(make_grid(to_uint8(images[idx]), ncols=8), grids / f"{name}.png")
        except OSError as e:
            raise NoveltynetsError(f"cannot write grids to {grids}: {e.strerror or e}") from None
    counts = classes.bincount(minlength=n_levels).tolist()
    typer.echo(f"{len(scores)} images scored (mean {scores.mean():.4f}, min {scores.min():.4f}, max {scores.max():.4f}); "
               f"{n_levels} quantile classes of {min(counts)}-{max(counts)} images; written to {out}")


@minority_app.command("train")
@friendly
def minority_train_cmd(
    scores: Path = typer.Option(..., "--scores", help="The .npz written by 'noveltynets minority score'."),
    out: Path = typer.Option(Path("minority-classifier"), "--out", "-o", help="Folder for config.json, model.safetensors and train_log.jsonl."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
    steps: int = typer.Option(3000, "--steps", help="Training steps."),
    batch_size: int = typer.Option(128, "--batch-size", "-b"),
    lr: float = typer.Option(1e-3, "--lr"),
    seed: int = typer.Option(0, "--seed"),
    model: Optional[Path] = typer.Option(None, "--model", help="The diffusion model whose noise schedule the classifier learns (default: the shipped one)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    class_conditional: Optional[bool] = typer.Option(None, "--class-conditional/--no-class-conditional",
                                                     help="Also condition on each image's digit, p(l | x_t, t, c), the paper's "
                                                     "intra-class form (default: when the scores were --conditional)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train the noise-conditioned minority classifier (x_t, t[, c]) → quantile class on the scored images."""
    import numpy as np
    import torch

    from .data import load_split
    from .minority import train_classifier
    from .models import load_model

    if steps < 1 or batch_size < 1:
        raise NoveltynetsError("--steps and --batch-size must be positive")
    _in_range("--lr", lr, 0, 1, lo_open=True)
    dev = _device(device)
    try:
        z = np.load(scores)
        split, index, classes = str(z["split"]), torch.as_tensor(z["index"]), torch.as_tensor(z["classes"])
        digits, conditional = torch.as_tensor(z["digits"]), bool(z["conditional"])
    except (OSError, KeyError, ValueError) as e:
        raise NoveltynetsError(f"cannot read minority scores from {scores}: {e}") from None
    tmp = _prepare_out(out, overwrite)
    try:
        m = load_model(model, dev)
        images = load_split(split).images[index]
        by_digit = conditional if class_conditional is None else class_conditional
        clf, log = train_classifier(images, classes, m.alphas_cumprod, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                    device=dev, show_progress=progress, conditions=digits if by_digit else None,
                                    num_conditions=m.num_classes if by_digit else None)
        clf.config.update(model_id=m.model_id, scores=str(z["distance"]), t=float(z["t"]))
        clf.cpu().save(tmp, log)
        _commit_out(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    last = log[-1]
    typer.echo(f"{'class-conditional ' if clf.num_conditions else ''}classifier over {clf.num_classes} classes written to {out}; held-out accuracy at t=0.1T/0.5T/0.9T: "
               f"{last.get('acc_t0.1', float('nan')):.3f}/{last.get('acc_t0.5', float('nan')):.3f}/{last.get('acc_t0.9', float('nan')):.3f}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
