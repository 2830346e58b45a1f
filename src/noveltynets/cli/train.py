"""``noveltynets train-model``, ``train-embedder`` and ``check-model``: the shipped model and evaluation embedder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import NoveltynetsError
from ..spec import in_range
from .common import _device, friendly


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
    from ..models.trainer import TrainConfig, train_model

    if steps <= 0 or batch_size <= 0:
        raise NoveltynetsError("--steps and --batch-size must be positive")
    in_range("--lr", lr, 0, 1, lo_open=True)
    train_model(out, TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed), device=_device(device), show_progress=progress)
    typer.echo(f"model written to {out}")


@friendly
def train_embedder_cmd(
    out: Path = typer.Option(..., "--out", "-o"),
    epochs: int = typer.Option(30, "--epochs"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train the evaluation embedder (a CNN digit classifier used only by metrics)."""
    from ..models.embedder import train_embedder

    if epochs <= 0:
        raise NoveltynetsError("--epochs must be positive")
    result = train_embedder(out, epochs=epochs, seed=seed, device=_device(device), show_progress=progress)
    typer.echo(json.dumps(result))


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
    from ..bench.model_check import check_model
    from ..models import load_model
    from ..models.embedder import load_eval_embedder

    in_range("--cfg", cfg, 0, 100)
    if per_class < 1 or n_uncond < 0 or steps < 1 or batch_size < 1:
        raise NoveltynetsError("--per-class, --steps and --batch-size must be positive, --n-uncond non-negative")
    dev = _device(device)
    result = check_model(load_model(model, dev), load_eval_embedder(embedder, dev), per_class, n_uncond, cfg, steps,
                         batch_size=batch_size, device=dev, show_progress=progress)
    text = json.dumps(result, indent=2)
    if out is not None:
        out.write_text(text)
    typer.echo(text)

