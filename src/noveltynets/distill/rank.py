"""The rank index of distilled novelty: per class, a greedy order of the training images by quality and novelty.

Each next image maximises ``w·quality + (1 − w)·novelty`` over the images not yet ranked, where

- quality is the model's own signal: minus the denoising loss of the image under its class,
  ``E_t,ε ||ε − ε̂(√ᾱ_t·x0 + √(1 − ᾱ_t)·ε, t, class)||²`` over fixed timesteps and noises (a
  Monte-Carlo estimate of the diffusion ELBO up to weights: an image the model finds likely scores
  high), as a percentile within its class (0 worst, 1 best);
- novelty is the distance to the nearest image already ranked, over the median pairwise distance
  within the class, in a feature space of the project's own: ``"denoiser"`` (the diffusion model's
  down-block features, LPIPS-style: :func:`~noveltynets.minority.score.lpips_like`, written as a
  Euclidean embedding) or ``"pixels"`` (8×8 pooled pixels). The first image of a class is its best.

Early ranks therefore spread over the class (each far from those before it, at good quality); late
ranks fill in the dense, typical middle. The order is bucketed into ``bins`` rank bins, 1 .. ``bins``:

- ``"anchors"`` (the default): the first ``bins`` ranked images are anchors, and each image goes to the bin
  of its nearest anchor, so bin r is the neighbourhood of the r-th ranked image and ranks 1..K name K
  different regions of the class, ordered by the ranking;
- ``"positions"``: equal-count runs of the order (bin 1 = the first n/K ranked). Each such bin is spread
  over the whole class, so it tells the denoiser almost nothing about the image: measured on the shipped
  model, a model fine-tuned on them lost 2e-6 .. 2e-4 less eps-loss with the right rank than with a wrong
  one (of 0.015), and its samples did not change with the rank.

A model fine-tuned on (class, bin) → image samples bin r's share of the class when asked for rank r.
The evaluation embedder is never used here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import NoveltynetsError
from ..progress import progress_bar
from ..sampling.loop import initial_noise

FEATURES = ("denoiser", "pixels")
BINNINGS = ("anchors", "positions")


@dataclass(frozen=True)
class RankConfig:
    weight: float = 0.5  # w: quality's share of the greedy score (1: by quality alone, 0: farthest-point order)
    bins: int = 16  # K rank bins
    features: str = "denoiser"
    timesteps: tuple[int, ...] = (50, 150, 300, 500, 700)  # of the denoising loss
    draws: int = 2  # noises per timestep
    seed: int = 0
    binning: str = "anchors"  # "anchors": bin r = the images nearest the r-th ranked one; "positions": equal-count runs of the order

    def __post_init__(self):
        if not 0.0 <= self.weight <= 1.0:
            raise NoveltynetsError(f"weight must be in [0, 1], got {self.weight}")
        if not 1 <= self.bins <= 255:
            raise NoveltynetsError(f"bins must be in 1..255, got {self.bins}")
        if self.features not in FEATURES:
            raise NoveltynetsError(f"features must be one of {', '.join(FEATURES)}, got {self.features!r}")
        if self.binning not in BINNINGS:
            raise NoveltynetsError(f"binning must be one of {', '.join(BINNINGS)}, got {self.binning!r}")
        if not self.timesteps:
            raise NoveltynetsError("timesteps of the denoising loss: give at least one")
        if self.draws < 1:
            raise NoveltynetsError(f"draws must be at least 1, got {self.draws}")

    def to_dict(self) -> dict:
        return {**asdict(self), "timesteps": list(self.timesteps)}


@torch.no_grad()
def denoising_loss(model, images: torch.Tensor, classes: torch.Tensor, timesteps=(50, 150, 300, 500, 700), draws: int = 2,
                   seed: int = 0, batch_size: int = 250, device: str = "cpu") -> torch.Tensor:
    """(N,) mean eps-prediction loss of ``images`` under ``model`` given ``classes``, over ``timesteps`` × ``draws`` noises;
    the noise of image i, draw k comes from seed ``seed + k·N + i`` (independent of ``batch_size``)."""
    n = len(images)
    abar = model.alphas_cumprod.to(device)
    out = torch.zeros(n)
    for start in range(0, n, batch_size):
        x0 = images[start:start + batch_size].to(device)
        y = torch.as_tensor(classes[start:start + batch_size], dtype=torch.long, device=device)
        for k in range(draws):
            eps = initial_noise([seed + k * n + i for i in range(start, start + len(x0))], tuple(x0.shape[1:]))[0].to(device)
            for t in timesteps:
                a = abar[int(t)]
                tt = torch.full((len(x0),), int(t), device=device, dtype=torch.long)
                pred = model.unet(a.sqrt() * x0 + (1 - a).sqrt() * eps, tt, class_labels=y).sample
                out[start:start + len(x0)] += (pred - eps).pow(2).flatten(1).mean(1).cpu() / (draws * len(timesteps))
    return out


@torch.no_grad()
def rank_features(model, images: torch.Tensor, kind: str = "denoiser", batch_size: int = 250, device: str = "cpu") -> torch.Tensor:
    """(N, D) features whose Euclidean distances are the ranking's: ``"denoiser"`` gives ‖f(a) − f(b)‖² =
    ``lpips_like`` over the model's down blocks (:class:`~noveltynets.minority.score.DenoiserDistance`), ``"pixels"``
    8×8 average-pooled pixels."""
    if kind == "pixels":
        return F.adaptive_avg_pool2d(images.clamp(-1, 1), 8).flatten(1)
    if kind != "denoiser":
        raise NoveltynetsError(f"unknown ranking features {kind!r}; known: {', '.join(FEATURES)}")
    from ..minority.score import DenoiserDistance, unit_channels

    dist = DenoiserDistance(model.unet)
    parts = []
    for start in range(0, len(images), batch_size):
        taps = [unit_channels(f) for f in dist.taps(images[start:start + batch_size].to(device))]
        # scaled so that the squared norm of a difference averages over space and layers, as lpips_like does
        layers = [f.flatten(1) / (f.shape[2] * f.shape[3] * len(taps)) ** 0.5 for f in taps]
        parts.append(torch.cat(layers, 1).cpu())
    return torch.cat(parts)


def greedy_order(quality: torch.Tensor, features: torch.Tensor, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(order, novelty at pick): indices into the class's images, best first. ``quality`` (N,) is a percentile in [0, 1];
    novelty is the distance to the nearest image ranked before, over the class's median pairwise distance (0 for the first)."""
    n = len(quality)
    feats = features.double()
    d = torch.cdist(feats, feats)
    scale = d[torch.triu_indices(n, n, 1).unbind()].median().clamp_min(1e-12) if n > 1 else torch.tensor(1.0, dtype=torch.float64)
    q = quality.double()
    nearest = torch.zeros(n, dtype=torch.float64)  # distance to the nearest ranked image (scaled); none ranked yet: 0
    taken = torch.zeros(n, dtype=torch.bool)
    order, novelty = [], []
    for step in range(n):
        score = q.clone() if step == 0 else weight * q + (1 - weight) * nearest  # the first: the best
        score[taken] = -float("inf")
        i = int(score.argmax())
        order.append(i)
        novelty.append(float(nearest[i]))
        taken[i] = True
        from_i = d[i] / scale
        nearest = from_i if step == 0 else torch.minimum(nearest, from_i)
    return np.array(order), np.array(novelty)


def anchor_bins(order: np.ndarray, features: torch.Tensor, bins: int) -> np.ndarray:
    """Rank bin 1..bins of each image: 1 + the index of its nearest among the first ``bins`` images of ``order`` (the
    anchors; an anchor is in its own bin). Bin r is the neighbourhood of the r-th ranked image."""
    anchors = torch.as_tensor(order[:bins])
    feats = features.double()
    return (torch.cdist(feats, feats[anchors]).argmin(1) + 1).numpy().astype(np.int64)


def bin_of_position(positions: np.ndarray, n: int, bins: int) -> np.ndarray:
    """Rank bin 1..bins of 0-based positions in an order of ``n``: equal-count bins, the first holding the first ranked."""
    return (np.asarray(positions) * bins // n + 1).astype(np.int64)


@dataclass
class Ranking:
    """The rank of every image of a split: per image (in the split's order) its class, 0-based position in its class's
    order, rank bin (1..bins), quality percentile, denoising loss and novelty when it was picked."""
    config: RankConfig
    classes: np.ndarray
    position: np.ndarray
    bin: np.ndarray
    quality: np.ndarray
    loss: np.ndarray
    novelty: np.ndarray

    def save(self, path) -> None:
        import json
        import os

        tmp = f"{path}.partial.npz"
        np.savez(tmp, classes=self.classes, position=self.position, bin=self.bin, quality=self.quality, loss=self.loss,
                 novelty=self.novelty, config=np.array(json.dumps(self.config.to_dict())))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "Ranking":
        import json

        z = np.load(path)
        cfg = json.loads(str(z["config"]))
        return cls(RankConfig(**{**cfg, "timesteps": tuple(cfg["timesteps"])}), z["classes"], z["position"], z["bin"],
                   z["quality"], z["loss"], z["novelty"])


def rank_split(model, images: torch.Tensor, labels: torch.Tensor, cfg: RankConfig = RankConfig(), device: str = "cpu",
               show_progress: bool = False) -> Ranking:
    """Rank ``images`` (N, C, H, W) of classes ``labels`` (N,) under ``model`` (the model to be fine-tuned), class by class."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    n = len(labels)
    position, bins = np.zeros(n, np.int64), np.zeros(n, np.int64)
    quality, novelty = np.zeros(n), np.zeros(n)
    present = sorted(set(labels.tolist()))
    with progress_bar(n, "rank", enabled=show_progress) as advance:
        loss = denoising_loss(model, images, labels, cfg.timesteps, cfg.draws, cfg.seed, device=device)
        for c in present:
            idx = torch.nonzero(labels == c).flatten()
            lc = loss[idx]
            # quality percentile: the lowest loss is 1, the highest 0 (ties share their mean rank)
            q = torch.as_tensor(_percentile_rank(-lc.numpy()))
            feats = rank_features(model, images[idx], cfg.features, device=device)
            order, nov = greedy_order(q, feats, cfg.weight)
            pos = np.empty(len(idx), np.int64)
            pos[order] = np.arange(len(idx))
            position[idx.numpy()] = pos
            bins[idx.numpy()] = (anchor_bins(order, feats, cfg.bins) if cfg.binning == "anchors"
                                 else bin_of_position(pos, len(idx), cfg.bins))
            quality[idx.numpy()] = q.numpy()
            novelty[idx.numpy()[order]] = nov
            advance(len(idx))
    return Ranking(cfg, labels.numpy(), position, bins, quality, loss.numpy(), novelty)


def _percentile_rank(values: np.ndarray) -> np.ndarray:
    """Each value's rank among ``values`` scaled to [0, 1] (0 the smallest), ties at their mean rank."""
    from scipy.stats import rankdata

    if len(values) == 1:
        return np.ones(1)
    return (rankdata(values) - 1) / (len(values) - 1)
