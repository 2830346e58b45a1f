"""Minority score (Um & Ye, "Don't Play Favorites", ICLR 2024, §3.1): how much detail a one-shot
Tweedie reconstruction from a heavily noised copy loses.

For a real image x0: x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε at t = 0.9T, then
x̂0 = (x_t − sqrt(1 − ᾱ_t)·ε̂(x_t, t)) / sqrt(ᾱ_t), and the score is d(x0, x̂0), averaged
over ``draws`` noises. Common images are restored well from little signal (the denoiser
pulls them back to where most data lies); unique ones are not, so a high score means a
minority sample. The paper uses LPIPS for d. LPIPS' ImageNet backbones cannot be downloaded
here. The default distance is L2 (per-pixel mean), the one whose score ranks the training images'
AvgkNN best here (Spearman 0.558 conditional, 0.331 unconditional, at t = 0.9T) and the one the
shipped classifier was trained on; ``"denoiser"`` is LPIPS-style over the diffusion model's own
features (:class:`DenoiserDistance`: 0.474 / 0.215), L1 is there too, and any callable
``(x, y) -> (N,)`` (e.g. an ``lpips.LPIPS`` instance whose weights the user has) works. The evaluation embedder is not among them: it judges the
samples, so it must not also label what minority guidance follows.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..errors import NoveltynetsError
from ..models.unet import NULL_CLASS
from ..progress import progress_bar
from ..sampling.loop import initial_noise

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FeatureDistance(nn.Module):
    """LPIPS-style distance: at each tapped layer (after every ReLU of ``body``), features are
    unit-normalised over channels, their squared differences averaged over space and summed
    over channels; the layers' values are averaged. This is LPIPS without its learned
    per-channel weights (the paper's "baseline" variant), over any convolutional ``body``."""

    def __init__(self, body: nn.Sequential):
        super().__init__()
        self.body = body.eval().requires_grad_(False)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps (B, C, H, W) after every ReLU of the body, in order."""
        out = []

        def walk(module: nn.Module, h: torch.Tensor) -> torch.Tensor:
            children = list(module.children())
            if not children:
                h = module(h)
                if isinstance(module, nn.ReLU):
                    out.append(h)
                return h
            for child in children:
                h = walk(child, h)
            return h

        walk(self.body, x)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        dev = next(self.body.parameters()).device
        return lpips_like(self.taps(x.to(dev)), self.taps(y.to(dev)))


class DenoiserDistance(nn.Module):
    """LPIPS-style over the diffusion model's own features: the output of each of its down blocks for the clean
    image seen at a small timestep ``t`` (no noise added, no class), combined as :func:`lpips_like`."""

    def __init__(self, unet, t: int = 20, null_class: int = NULL_CLASS):
        super().__init__()
        self.unet, self.t, self.null_class = unet, t, null_class

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps (B, C, H, W) of each down block, in order (the distance's, and the ranking's features)."""
        taps: list[torch.Tensor] = []
        keep = lambda module, inputs, out: taps.append(out[0] if isinstance(out, tuple) else out)
        hooks = [block.register_forward_hook(keep) for block in self.unet.down_blocks]
        try:
            t = torch.full((len(x),), self.t, device=x.device, dtype=torch.long)
            kw = {"class_labels": torch.full_like(t, self.null_class)} if self.unet.config.num_class_embeds else {}
            self.unet(x.clamp(-1, 1), t, **kw)
        finally:
            for h in hooks:
                h.remove()
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        dev = next(self.unet.parameters()).device
        return lpips_like(self.taps(x.to(dev)), self.taps(y.to(dev)))


def lpips_like(fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
    """(N,): per layer, features unit-normalised over channels, squared differences summed over channels and averaged
    over space; the layers' values averaged (LPIPS without its learned per-channel weights)."""
    if not fx:
        raise NoveltynetsError("the feature distance's network has no layers to tap")
    per_layer = [(unit_channels(a) - unit_channels(b)).pow(2).sum(1).mean(dim=(1, 2)) for a, b in zip(fx, fy)]
    return torch.stack(per_layer).mean(0)


def unit_channels(f: torch.Tensor) -> torch.Tensor:
    """Features (N, C, H, W) unit-normalised over channels at each position, as LPIPS does."""
    return f / (f.norm(dim=1, keepdim=True) + 1e-10)


def get_distance(spec: str | Distance, device: str = "cpu", model=None) -> Distance:
    """``"denoiser"`` (LPIPS-style over ``model``'s own features, :class:`DenoiserDistance`), ``"l1"``, ``"l2"``
    (per-pixel means), or a callable ``(x, y) -> (N,)`` / ``(N, 1, 1, 1)`` such as ``lpips.LPIPS``."""
    if callable(spec):
        return spec
    if spec == "denoiser":
        if model is None:
            raise NoveltynetsError("the denoiser distance needs the diffusion model")
        return DenoiserDistance(model.unet)
    if spec == "l1":
        return lambda x, y: (x - y).abs().flatten(1).mean(1)
    if spec == "l2":
        return lambda x, y: (x - y).pow(2).flatten(1).mean(1)
    if spec == "perceptual":
        raise NoveltynetsError("the 'perceptual' distance (over the evaluation embedder) is gone: the judge must not label "
                               "what guidance follows; use 'denoiser' (the model's own features), 'l1' or 'l2'")
    raise NoveltynetsError(f"unknown distance {spec!r}: use 'denoiser', 'l1', 'l2' or a callable")


def timestep_at(fraction: float, num_train_timesteps: int) -> int:
    """The training timestep at ``fraction`` of the schedule (0.9 → 0.9T)."""
    if not 0.0 < fraction <= 1.0:
        raise NoveltynetsError(f"t must be a fraction of the schedule in (0, 1], got {fraction}")
    return min(num_train_timesteps - 1, max(0, round(fraction * num_train_timesteps) - 1))


@torch.no_grad()
def minority_score(model, images: torch.Tensor, classes: torch.Tensor | None = None, t: float = 0.9, draws: int = 1,
                   distance: str | Distance = "l2", seed: int = 0, batch_size: int = 256, device: str = "cpu",
                   show_progress: bool = False) -> torch.Tensor:
    """(N,) minority scores of ``images`` (N, C, H, W) in [-1, 1] under ``model`` (a
    :class:`~noveltynets.models.unet.DiffusionModel`). ``classes``: each image's class for a
    class-conditional reconstruction; default the null class (unconditional, as in the paper).
    The noise of image i, draw k comes from seed ``seed + k·N + i``, so scores do not depend on
    ``batch_size``. x̂0 is clipped to the data range [-1, 1]."""
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(model.image_shape):
        raise NoveltynetsError(f"images must be (N, {', '.join(map(str, model.image_shape))}), got {tuple(images.shape)}")
    if draws < 1 or batch_size < 1:
        raise NoveltynetsError("draws and batch_size must be positive")
    n = len(images)
    classes = torch.full((n,), NULL_CLASS, dtype=torch.long) if classes is None else torch.as_tensor(classes, dtype=torch.long)
    if classes.shape != (n,):
        raise NoveltynetsError(f"need one class per image: {n} images, {tuple(classes.shape)} classes")
    abar_all = model.alphas_cumprod
    step = timestep_at(t, len(abar_all))
    abar = abar_all[step].to(device)
    dist = get_distance(distance, device, model)
    scores = torch.zeros(n)
    with progress_bar(n * draws, "minority score", enabled=show_progress) as advance:
        for k in range(draws):
            for start in range(0, n, batch_size):
                x0 = images[start:start + batch_size].to(device)
                eps = initial_noise([seed + k * n + i for i in range(start, start + len(x0))], tuple(x0.shape[1:]))[0].to(device)
                xt = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
                tt = torch.full((len(x0),), step, device=device, dtype=torch.long)
                eps_hat = model.unet(xt, tt, class_labels=classes[start:start + len(x0)].to(device)).sample
                x0_hat = ((xt - (1 - abar).sqrt() * eps_hat) / abar.sqrt()).clamp(-1, 1)
                d = torch.as_tensor(dist(x0, x0_hat)).reshape(len(x0), -1).mean(1)
                scores[start:start + len(x0)] += d.float().cpu() / draws
                advance(len(x0))
    return scores


def quantile_classes(scores: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin scores into ``levels`` classes by quantiles: class 0 holds the lowest (most common)
    scores, class ``levels − 1`` the highest (the rarest). Returns (labels (N,), the
    ``levels − 1`` inner thresholds)."""
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if levels < 2 or levels > len(scores):
        raise NoveltynetsError(f"levels must be between 2 and the number of scores ({len(scores)}), got {levels}")
    thresholds = torch.quantile(scores, torch.arange(1, levels, dtype=torch.float64) / levels)
    return torch.bucketize(scores, thresholds, right=True), thresholds


def level_scores(scores: torch.Tensor, classes: torch.Tensor, levels: int) -> torch.Tensor:
    """r_l (``levels``,): the median score of each quantile class (``torch.median``: the lower middle value of
    an even count), the level the mixed-score sampler (:mod:`~noveltynets.minority.mix`) weighs class l by."""
    scores, classes = torch.as_tensor(scores, dtype=torch.float64), torch.as_tensor(classes, dtype=torch.long)
    counts = classes.bincount(minlength=levels)
    if len(counts) != levels or (counts == 0).any():
        raise NoveltynetsError(f"every one of the {levels} quantile classes needs a score, got counts {counts.tolist()}")
    return torch.stack([scores[classes == lv].median() for lv in range(levels)])


def default_levels(n: int, per_class: int = 450) -> int:
    """A level count that leaves each quantile class about ``per_class`` images (at least 2 classes)."""
    return max(2, n // per_class)
