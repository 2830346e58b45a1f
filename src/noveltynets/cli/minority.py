"""``noveltynets minority score`` and ``minority train``: minority guidance's uniqueness scores and classifier."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from ..errors import NoveltynetsError
from ..spec import in_range
from .common import DeviceOpt, ProgressOpt, _check_class, _device, friendly
from .output import atomic_output

minority_app = typer.Typer(no_args_is_help=True, help="Minority guidance (Um & Ye, ICLR 2024): score real images' uniqueness.")


@minority_app.command("score")
@friendly
def minority_score_cmd(
    out: Path = typer.Option(Path("minority_scores.npz"), "--out", "-o", help="Scores file (.npz) to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    split: str = typer.Option("train", "--split", help="Real images to score: train, heldout or all."),
    klass: Optional[int] = typer.Option(None, "--class", "-c", help="Only this digit's images."),
    t: float = typer.Option(0.9, "--t", help="Noise level as a fraction of the schedule (the paper: 0.9)."),
    draws: int = typer.Option(1, "--draws", help="Noise draws averaged per image."),
    distance: str = typer.Option("l2", "--distance", help="l2 (default), l1, or denoiser (LPIPS-style over the model's own features)."),
    levels: Optional[int] = typer.Option(None, "--levels", "-L", help="Quantile classes (default: about 450 images each)."),
    conditional: bool = typer.Option(False, "--conditional/--unconditional", help="Reconstruct with each image's digit as the class (default: the null class, as in the paper)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise draws."),
    batch_size: int = typer.Option(256, "--batch-size", "-b"),
    model: Optional[Path] = typer.Option(None, "--model", help="A diffusers-format model folder (default: the shipped MNIST-5k model)."),
    device: str = DeviceOpt,
    grids: Optional[Path] = typer.Option(None, "--grids", help="Also write highest.png and lowest.png (the 64 highest- and lowest-scoring images) to this folder."),
    progress: bool = ProgressOpt,
) -> None:
    """Score real images by how much a one-shot reconstruction from t = 0.9T loses (high = rare), bin them into quantile classes, write --out."""
    import numpy as np
    import torch

    from ..data import load_split
    from ..minority import default_levels, minority_score, quantile_classes
    from ..models import load_model

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
        from ..data import make_grid, save_png, to_uint8

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
    device: str = DeviceOpt,
    class_conditional: Optional[bool] = typer.Option(None, "--class-conditional/--no-class-conditional",
                                                     help="Also condition on each image's digit, p(l | x_t, t, c), the paper's "
                                                     "intra-class form (default: when the scores were --conditional)."),
    progress: bool = ProgressOpt,
) -> None:
    """Train the noise-conditioned minority classifier (x_t, t[, c]) → quantile class on the scored images."""
    import numpy as np
    import torch

    from ..data import load_split
    from ..minority import level_scores, train_classifier
    from ..models import load_model

    if steps < 1 or batch_size < 1:
        raise NoveltynetsError("--steps and --batch-size must be positive")
    in_range("--lr", lr, 0, 1, lo_open=True)
    dev = _device(device)
    try:
        z = np.load(scores)
        split, index, classes = str(z["split"]), torch.as_tensor(z["index"]), torch.as_tensor(z["classes"])
        digits, conditional = torch.as_tensor(z["digits"]), bool(z["conditional"])
        levels = dict(thresholds=z["thresholds"].tolist(),
                      level_scores=level_scores(z["scores"], classes, len(z["thresholds"]) + 1).tolist())
    except (OSError, KeyError, ValueError, NoveltynetsError) as e:
        raise NoveltynetsError(f"cannot read minority scores from {scores}: {e}") from None
    with atomic_output(out, overwrite) as tmp:
        m = load_model(model, dev)
        images = load_split(split).images[index]
        by_digit = conditional if class_conditional is None else class_conditional
        clf, log = train_classifier(images, classes, m.alphas_cumprod, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                    device=dev, show_progress=progress, conditions=digits if by_digit else None,
                                    num_conditions=m.num_classes if by_digit else None)
        clf.config.update(model_id=m.model_id, scores=str(z["distance"]), t=float(z["t"]), **levels)  # levels: for minority-mix
        clf.cpu().save(tmp, log)
    last = log[-1]
    typer.echo(f"{'class-conditional ' if clf.num_conditions else ''}classifier over {clf.num_classes} classes written to {out}; held-out accuracy at t=0.1T/0.5T/0.9T: "
               f"{last.get('acc_t0.1', float('nan')):.3f}/{last.get('acc_t0.5', float('nan')):.3f}/{last.get('acc_t0.9', float('nan')):.3f}")

