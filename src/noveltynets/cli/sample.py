"""``noveltynets sample``: generate images, optionally guided or filtered with a history kept in a memory store."""

from __future__ import annotations

import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import NoveltynetsError
from .common import DeviceOpt, OverwriteOpt, ProgressOpt, StoreOpt, _check_class, _device, _in_range, friendly
from .output import _refuse_inside, atomic_output


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
    store: Optional[Path] = StoreOpt,
    embedder: Optional[str] = typer.Option(None, "--embedder", help="Novelty embedder: pooled-pixels[:N], multiscale-pooled[:2,4,8], denoiser-mid[:t=T] (default: an existing memory's own, else pooled-pixels:32)."),
    negatives: Optional[str] = typer.Option(None, "--negatives", help="A new memory's reference negatives: real (the training "
                                            "images; the default for models trained here, such as the shipped one), pool "
                                            "(unguided samples; the default otherwise) or jitter (a classify memory)."),
    pool_size: int = typer.Option(128, "--pool-size", help="Unguided samples in a new memory's reference pool (made once, cached)."),
    scope: str = typer.Option("user", "--scope", help="A new memory's scope: session, user or service."),
    model: Optional[Path] = typer.Option(None, "--model", help="A diffusers-format model folder (default: the shipped MNIST-5k model)."),
    out: Path = typer.Option(Path("samples"), "--out", "-o", help="Output folder (must be empty or new)."),
    overwrite: bool = OverwriteOpt,
    device: str = DeviceOpt,
    progress: bool = ProgressOpt,
) -> None:
    """Generate images and write PNGs, grid.png, samples.npz and manifest.json to --out."""
    import numpy as np
    import torch

    from ..data import make_grid, save_png, to_uint8
    from ..filters import parse_filter
    from ..guidance import parse_guide
    from ..models.unet import NULL_CLASS
    from ..progress import progress_bar
    from .. import sampling
    from ..models import load_model
    from ..sampling import make_scheduler, parse_seeds

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
        from ..memory.store import check_name
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
    with atomic_output(out, overwrite) as tmp:
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

        from .. import __version__
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
    typer.echo(f"wrote {n} samples to {out} ({run.seconds:.1f} s sampling, {run.seconds / n * 1000:.0f} ms per sample)")


def _setup_memory(terms, filt, name, store_path, embedder_spec, negatives, pool_size, scope, m, klass, cfg, steps, scheduler, dev, progress,
                  out: Path):
    """Attach a history to the term or filter that keeps one: the named one with ``--memory`` (loaded or
    created in the store), else a novelty memory for this command only. Returns a manifest-info callable (or None)."""
    from ..guidance import NoveltyGuidance
    from ..embed import embedder_from_spec
    from ..memory.setup import StoreObserver, history_owners, open_history
    from ..memory.store import MemoryStore, default_store_path

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
    from ..embed.embedders import DEFAULT_EMBEDDER, spec_of

    if spec is not None:
        return spec
    return spec_of(store.info(name).embedder_id) if name is not None and store.exists(name) else DEFAULT_EMBEDDER

