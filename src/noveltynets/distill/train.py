"""``noveltynets distill train``: rank the training split, then fine-tune a model on (class, rank bin) → image.

The UNet starts from the given model (default: the shipped one) and gains a rank embedding
(:mod:`~noveltynets.distill.model`, zero at the start); a distilled model given as the base is
fine-tuned further from its own class and rank vectors (and its ``ranking.npz``). Training is the default model's trainer
(:func:`~noveltynets.models.trainer.train_loop`: EMA, resumable, progress bar) with two label
dropouts: the class to the null class (``p_uncond``, for CFG) and, independently, the rank to
"no rank" (``p_norank``), so the model keeps its plain behaviour at rank 0 and learns every
(class or null, rank) pair. The ranking is written first (``OUT/ranking.npz``) and reused by a
resumed run with the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import load_split
from ..errors import NoveltynetsError
from ..models.trainer import TrainConfig, train_loop
from ..models.unet import load_model
from .model import add_rank_embedding, save_ranked
from .rank import RankConfig, Ranking, rank_split


@dataclass
class DistillConfig:
    rank: RankConfig = field(default_factory=RankConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1500, batch_size=64, lr=2e-4, warmup=100, ema_decay=0.999,
                                                                   log_every=50, checkpoint_every=250))
    p_norank: float = 0.2  # share of the batch trained without its rank ("no rank": the plain model)
    rank_lr_scale: float = 250.0  # the rank vectors learn this much faster than the fine-tuned weights (10x learnt too slowly)

    def __post_init__(self):
        if not 0.0 <= self.p_norank < 1.0:
            raise NoveltynetsError(f"p_norank must be in [0, 1), got {self.p_norank}")
        if self.rank_lr_scale <= 0:
            raise NoveltynetsError(f"rank_lr_scale must be positive, got {self.rank_lr_scale}")


def ranking_for(out: Path, model, cfg: RankConfig, device: str, show_progress: bool) -> Ranking:
    """``OUT/ranking.npz`` if it was made with ``cfg`` (a resumed run), else the base model's own (a distilled model
    fine-tuned further), else a new ranking of the train split; written to ``OUT/ranking.npz``."""
    path = out / "ranking.npz"
    for candidate in (path, Path(model.path) / "ranking.npz"):
        if candidate.exists():
            try:
                old = Ranking.load(candidate)
            except (OSError, ValueError, KeyError):
                continue  # unreadable: made again
            if old.config == cfg:
                if candidate != path:
                    old.save(path)
                return old
    if model.num_ranks:
        raise NoveltynetsError(f"{model.model_id} is distilled, but its ranking.npz is missing or was made with other settings: "
                               "fine-tune it further with the settings it was made with, or start from a plain model")
    train = load_split("train")
    ranking = rank_split(model, train.images, train.labels, cfg, device=device, show_progress=show_progress)
    ranking.save(path)
    return ranking


def distill_train(out: str | Path, base: str | Path | None = None, cfg: DistillConfig = DistillConfig(), device: str = "cpu",
                  show_progress: bool = True) -> Path:
    """Rank, fine-tune and write the distilled model to ``out`` (a diffusers-format model folder with ``ranks.json``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    torch.manual_seed(cfg.train.seed)
    model = load_model(base, dev)
    if model.num_ranks and model.num_ranks != cfg.rank.bins:
        raise NoveltynetsError(f"model {model.model_id} is distilled with {model.num_ranks} rank bins, not {cfg.rank.bins}")
    if tuple(model.image_shape) != (1, 32, 32) or model.num_classes != 10:
        raise NoveltynetsError(f"distillation trains on the MNIST-5k train split: it needs a 1×32×32 model of 10 classes, "
                               f"got {model.image_shape} with {model.num_classes}")
    ranking = ranking_for(out, model, cfg.rank, device, show_progress)
    unet = model.unet
    stride = add_rank_embedding(unet, cfg.rank.bins, model.rank_stride or None).stride
    null = stride - 1
    labels = torch.as_tensor(ranking.classes, device=dev)
    bins = torch.as_tensor(ranking.bin, device=dev)

    def draw_labels(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c, r = labels[idx].clone(), bins[idx].clone()
        c[torch.rand(len(idx), device=dev, generator=gen) < cfg.train.p_uncond] = null
        r[torch.rand(len(idx), device=dev, generator=gen) < cfg.p_norank] = 0
        return c + stride * r

    record = {"device": device, "base_model": model.model_id, "p_norank": cfg.p_norank, "rank_lr_scale": cfg.rank_lr_scale,
              "rank": cfg.rank.to_dict()}
    unet = train_loop(out, unet, cfg.train, dev, draw_labels, record, show_progress, name="distill",
                      lr_scales={"class_embedding.ranks": cfg.rank_lr_scale})
    save_ranked(unet.cpu(), out, {"base_model": model.model_id, "rank": cfg.rank.to_dict(),
                                  "bin_sizes": np.bincount(ranking.bin, minlength=cfg.rank.bins + 1)[1:].tolist()})
    return out
