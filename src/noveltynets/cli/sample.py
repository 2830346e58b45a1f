"""``noveltynets sample``: generate images, optionally guided or filtered with a history kept in a memory store."""

from __future__ import annotations

import functools
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import NoveltynetsError
from .common import (DeviceOpt, OverwriteOpt, ProgressOpt, StoreOpt, _check_class, _device, friendly, memory_options, option_error,
                     refuse_options_for_existing)
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
    clean: float = typer.Option(0.0, "--clean", help="Re-noise each finished sample to this fraction of the model's T timesteps and "
                                "denoise it again without guidance (0.05 = the last 2 of 50 DDIM steps): the model repairs what a "
                                "late guidance push left off the data, the layout stays. 0: what the guidance asks for (novelty: "
                                "its repair, 0.05, after its memory push to the end; novelty:repair=0 turns it off)."),
    guide: List[str] = typer.Option([], "--guide", "-g", help="Guidance term NAME[:key=value,...] (novelty, repel, particle, cads, minority, minority-mix, minority-self, point); repeatable."),
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
    memory_option: List[str] = typer.Option([], "--memory-option", help="A new novelty memory's setting KEY=VALUE (any "
                                            "MemoryConfig field, e.g. codes_capacity=1000000 for a recall head that holds 10^6 "
                                            "samples); repeatable."),
    ranks: Optional[str] = typer.Option(None, "--ranks", help="Distilled novelty: a rank per sample, in order and repeated "
                                        "(e.g. 1-16 with --n 16: one sample per rank bin); needs a distilled model (--model)."),
    rank_scale: float = typer.Option(1.0, "--rank-scale", help="Rank guidance: the ranks' effect taken this many times "
                                     "(1: as trained; other values: a third model pass per step). Needs --ranks."),
    model: Optional[Path] = typer.Option(None, "--model", help="A diffusers-format model folder (default: the shipped MNIST-5k model)."),
    out: Path = typer.Option(Path("samples"), "--out", "-o", help="Output folder (must be empty or new)."),
    overwrite: bool = OverwriteOpt,
    device: str = DeviceOpt,
    progress: bool = ProgressOpt,
    workers: int = typer.Option(1, "--workers", help="Sampler processes (Ray actors, one per GPU with --device cuda) that "
                                "share one memory; above 1 needs noveltynets[ray]. The same files as one process."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="A running Ray cluster (host:port, ray://host:port "
                                              "or auto) for the workers; default: a local Ray with --workers CPUs."),
) -> None:
    """Generate images and write PNGs, grid.png, samples.npz and manifest.json to --out."""
    import numpy as np
    import torch

    from ..data import make_grid, save_png, to_uint8
    from ..memory.store import check_name, default_store_path
    from ..models import load_model
    from ..sampling import make_scheduler, parse_ranks, parse_seeds
    from ..sampling.loop import check_ranks, clean_of
    from ..session import open_session, parse_guide

    t_start = time.perf_counter()
    # 1. validate everything before any work or any file is written
    seed_list = parse_seeds(seeds) if seeds is not None else None
    if n is not None and n <= 0:
        raise NoveltynetsError(f"--n must be positive, got {n}")
    if seed_list is not None and n is not None and len(seed_list) != n:
        raise NoveltynetsError(f"--n {n} does not match the {len(seed_list)} seeds given by --seeds {seeds}")
    n = n if n is not None else (len(seed_list) if seed_list is not None else 64)
    seed_list = seed_list if seed_list is not None else list(range(n))
    if memory is not None:
        check_name(memory)  # before the reference pool is sampled and cached
    if workers < 1:
        raise NoveltynetsError(f"--workers must be at least 1, got {workers}")
    distributed = workers > 1 or ray_address is not None
    rank_list = parse_ranks(ranks) if ranks is not None else None
    if rank_list is not None and (distributed or filter_spec is not None):
        raise NoveltynetsError(f"--ranks works with one process and no --filter (got {'--workers' if distributed else '--filter'})")
    if rank_list is not None and model is None:
        raise NoveltynetsError("--ranks needs a distilled model: --model DIR, made with `noveltynets distill train` "
                               "(none ships: the CPU-trained one was not good enough, see docs/DISTILL.md)")
    if distributed:  # Ray missing or a cluster out of reach: said before any work
        from ..distributed import connect, open_distributed

        if device not in ("cpu", "cuda"):
            raise NoveltynetsError(f"with --workers, --device is cpu or cuda (each worker gets a GPU of its own), got {device!r}")
        connect(workers, ray_address)
    dev = device if distributed else _device(device)  # the workers' GPUs need not be on this machine
    memory_config = memory_options(memory_option)
    if memory_config and memory is not None:
        refuse_options_for_existing(store or default_store_path(), memory)
    config = _config(klass=klass, cfg=cfg, steps=steps, scheduler=scheduler, eta=eta, temperature=temperature,
                     batch_size=batch_size, device=dev, grad_mode=grad_mode, ranks=tuple(rank_list) if rank_list else None,
                     rank_scale=rank_scale, clean=clean)
    terms = [parse_guide(spec) for spec in guide]
    t_load = time.perf_counter()
    m = load_model(model, device="cpu" if distributed else dev)  # each worker moves its copy to the device
    load_s = time.perf_counter() - t_load
    _check_class(m, klass)
    run_scheduler = make_scheduler(scheduler, m.scheduler_config, steps)  # validates the scheduler name
    try:
        clean_used = clean_of(clean, terms, run_scheduler)  # --clean, or the terms' own (novelty's after its late push)
    except NoveltynetsError as e:
        raise option_error(e) from None
    check_ranks(m, config.ranks)
    if memory is not None or any(t.name == "novelty" for t in terms):  # the session opens the store
        _refuse_inside(out, store or default_store_path(), "the memory store")
    opened = functools.partial(open_distributed, workers=workers) if distributed else open_session
    with opened(m, config, terms, filter_spec, memory, store=store, embedder=embedder, negatives=negatives, pool_size=pool_size,
                scope=scope, memory_config=memory_config, show_progress=progress) as session, atomic_output(out, overwrite) as tmp:
        # 2. sample (a filter keeps one image per seed slot; the seeds they came from go into samples.npz and the manifest)
        t_sample = time.perf_counter()
        run = session.sample(seed_list, show_progress=progress)
        wall_s = time.perf_counter() - t_sample
        seed_list, filt = run.seeds, session.filter
        # 3. write everything into the temporary folder, then move it into place
        images = to_uint8(run.images)
        for i, img in enumerate(images):
            save_png(img, tmp / f"{i:06d}.png")
        save_png(make_grid(images), tmp / "grid.png")
        np.savez_compressed(tmp / "samples.npz", images=images, classes=np.array(run.classes), seeds=np.array(seed_list, dtype=np.int64),
                            **({} if run.ranks is None else {"ranks": np.array(run.ranks, dtype=np.int64)}))
        import diffusers

        from .. import __version__
        manifest = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["noveltynets", *sys.argv[1:]]),
            "settings": {**config.to_dict(), "clean": clean_used, "n": n, "seeds": seeds or f"0-{n - 1}", "guidance": [t.to_dict() for t in terms],
                         "filter": {**filt.to_dict(), "generated": run.generated, "kept_seeds": run.seeds} if filt else None,
                         "workers": workers},
            "model": {"id": m.model_id, "path": str(m.path)},
            "memory": session.info(),
            "timings": {"model_load_s": round(load_s, 3), "sampling_s": round(run.seconds, 3), "per_sample_s": round(run.seconds / n, 4),
                        "sampling_wall_s": round(wall_s, 3),  # with several workers: less than sampling_s, their sum
                        "batch_s": [round(b, 3) for b in run.batch_seconds], "total_s": round(time.perf_counter() - t_start, 3)},
            "versions": {"noveltynets": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version()},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    typer.echo(f"wrote {n} samples to {out} ({run.seconds:.1f} s sampling, {run.seconds / n * 1000:.0f} ms per sample)")


def _config(**fields):
    """The run's :class:`~noveltynets.sampling.SamplingConfig`; a bad value's error names its option (``--batch-size``)."""
    from ..sampling import SamplingConfig

    try:
        return SamplingConfig(**fields)
    except NoveltynetsError as e:  # "batch_size must be ..." -> "--batch-size must be ..."
        raise option_error(e) from None
