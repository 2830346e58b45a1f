"""Acceptance check of a diffusion model: class adherence under CFG and unconditional class balance.

Judged by the evaluation embedder (never used for guidance): at CFG ``cfg``, the share of
samples classified as the requested digit; unconditionally, each digit's share relative
to uniform (1.0 = exactly 10%).
"""

from __future__ import annotations

import torch

from ..models import DiffusionModel
from ..models.embedder import EvalEmbedder
from ..models.unet import NULL_CLASS
from ..sampling import CFGDenoiser, generate, make_scheduler


def check_model(model: DiffusionModel, embedder: EvalEmbedder, per_class: int = 100, n_uncond: int = 1000, cfg: float = 2.0,
                steps: int = 50, scheduler: str = "ddim", batch_size: int = 250, device: str = "cpu", seed_offset: int = 1_000_000,
                show_progress: bool = True) -> dict:
    shape = model.image_shape
    make = lambda: make_scheduler(scheduler, model.scheduler_config, steps)  # noqa: E731
    classes = [c for c in range(model.num_classes) for _ in range(per_class)]
    seeds = list(range(seed_offset, seed_offset + len(classes)))
    cond = generate(CFGDenoiser(model.unet, cfg), make, seeds, classes, shape, batch_size, device=device, show_progress=show_progress)
    pred = embedder.predict(cond.images)
    requested = torch.tensor(classes)
    per_class_adherence = {c: (pred[requested == c] == c).float().mean().item() for c in range(model.num_classes)}
    useeds = list(range(seed_offset + len(classes), seed_offset + len(classes) + n_uncond))
    uncond = generate(CFGDenoiser(model.unet, 1.0), make, useeds, [NULL_CLASS] * n_uncond, shape, batch_size, device=device, show_progress=show_progress)
    counts = torch.bincount(embedder.predict(uncond.images), minlength=model.num_classes).tolist()
    ratio = [c / (n_uncond / model.num_classes) for c in counts]
    return {
        "model_id": model.model_id, "cfg": cfg, "steps": steps, "scheduler": scheduler,
        "adherence": (pred == requested).float().mean().item(), "adherence_per_class": per_class_adherence,
        "uncond_counts": counts, "uncond_ratio_min": min(ratio), "uncond_ratio_max": max(ratio),
        "samples_per_second": (len(classes) + n_uncond) / (cond.seconds + uncond.seconds),
    }
