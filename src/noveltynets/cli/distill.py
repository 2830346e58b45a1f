"""``noveltynets distill train``: teach a model a rank index (distilled novelty, :mod:`noveltynets.distill`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import NoveltynetsError
from ..spec import in_range
from .common import DeviceOpt, ProgressOpt, _device, friendly, option_error

distill_app = typer.Typer(no_args_is_help=True, help="Distilled novelty: a model whose rank index 1..K sweeps a quality-diversity frontier.")


@distill_app.command("train")
@friendly
def distill_train_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the distilled model, ranking, checkpoint and log (rerun to resume)."),
    base: Optional[Path] = typer.Option(None, "--base", help="Model to start from (default: the shipped MNIST-5k model); a "
                                        "distilled model is fine-tuned further."),
    bins: int = typer.Option(16, "--bins", help="Rank bins K: ranks 1..K at sampling time."),
    weight: float = typer.Option(0.5, "--weight", help="Quality's share w of the greedy ranking score (the rest: distance to the images ranked before)."),
    binning: str = typer.Option("anchors", "--binning", help="anchors: bin r = the images nearest the r-th ranked one (default); "
                                "positions: equal-count runs of the order."),
    features: str = typer.Option("denoiser", "--features", help="Ranking distance space: denoiser (the model's own features) or pixels."),
    quality_timesteps: str = typer.Option("50,150,300,500,700", "--quality-timesteps", help="Timesteps of the denoising loss "
                                          "that rates each image's quality (comma-separated)."),
    quality_draws: int = typer.Option(2, "--quality-draws", help="Noises per timestep of the denoising loss."),
    steps: int = typer.Option(1500, "--steps"),
    batch_size: int = typer.Option(64, "--batch-size"),
    lr: float = typer.Option(2e-4, "--lr"),
    p_norank: float = typer.Option(0.2, "--p-norank", help="Share of each batch trained without a rank (keeps plain sampling)."),
    rank_lr_scale: float = typer.Option(250.0, "--rank-lr-scale", help="The rank vectors' learning rate as a multiple of --lr."),
    seed: int = typer.Option(0, "--seed"),
    device: str = DeviceOpt,
    progress: bool = ProgressOpt,
) -> None:
    """Rank the training split per class (quality and novelty), then fine-tune the model on (class, rank bin) -> image."""
    from dataclasses import replace

    from ..distill.rank import RankConfig
    from ..distill.train import DistillConfig, distill_train

    if steps <= 0 or batch_size <= 0:
        raise NoveltynetsError("--steps and --batch-size must be positive")
    in_range("--lr", lr, 0, 1, lo_open=True)
    if out.exists() and not out.is_dir():
        raise NoveltynetsError(f"--out {out} exists and is not a folder")
    try:
        timesteps = tuple(int(t) for t in quality_timesteps.split(",") if t.strip())
    except ValueError:
        raise NoveltynetsError(f"--quality-timesteps must be comma-separated integers, got {quality_timesteps!r}") from None
    if any(not 0 <= t < 1000 for t in timesteps):
        raise NoveltynetsError(f"--quality-timesteps must lie in 0..999 (the training schedule), got {quality_timesteps!r}")
    try:
        rank = RankConfig(weight=weight, bins=bins, features=features, timesteps=timesteps, draws=quality_draws, seed=seed,
                          binning=binning)
        base_cfg = DistillConfig()
        cfg = DistillConfig(rank=rank, train=replace(base_cfg.train, steps=steps, batch_size=batch_size, lr=lr, seed=seed),
                            p_norank=p_norank, rank_lr_scale=rank_lr_scale)
    except NoveltynetsError as e:  # "weight must be ..." -> "--weight must be ..."
        raise option_error(e, {"timesteps": "quality-timesteps", "draws": "quality-draws"}) from None
    distill_train(out, base, cfg, device=_device(device), show_progress=progress)
    typer.echo(f"distilled model written to {out} (sample with: noveltynets sample --model {out} --class 7 --n {bins} --ranks 1-{bins})")
