"""CADS (Sadat et al., ICLR 2024): condition-annealed sampling, noise on the condition early on.

The class embedding y that the denoiser adds to its time embedding is replaced, in the
conditional pass only (the "no class" pass of CFG is untouched), by

    ŷ = sqrt(γ(t))·y + s·sqrt(1 − γ(t))·n,   n ~ N(0, I),
    γ(t) = 1 for t ≤ τ1,  0 for t ≥ τ2,  (τ2 − t)/(τ2 − τ1) between,

with t ∈ [0, 1] the fraction of noise left (1 at the first step), then rescaled to y's mean and
standard deviation and mixed, ŷ ← ψ·rescaled(ŷ) + (1 − ψ)·ŷ. Early steps (t ≥ τ2) see a
noisy condition and so settle on more varied layouts; the late steps see the true one. No
gradient and no extra model call: the cost is that of plain CFG. Defaults are the paper's
(τ1 = 0.6, τ2 = 0.9, s = 0.25, ψ = 1). n is drawn per sample and step from the sample's seed,
so a seed gives the same image in any batch.

It needs a class-conditional UNet with a class-embedding table (the default model's
``class_embedding``); the noise is applied by a forward hook on that table, entered around
each model call through :meth:`~noveltynets.guidance.base.GuidanceTerm.conditioning`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..errors import NoveltynetsError
from ..models.unet import NULL_CLASS
from ..sampling.seeds import step_noise
from .base import GuidanceTerm


def cads_gamma(t: float, tau1: float, tau2: float) -> float:
    """γ(t): 1 (clean condition) for t ≤ τ1, 0 (pure noise) for t ≥ τ2, linear between."""
    if t <= tau1:
        return 1.0
    if t >= tau2:
        return 0.0
    return (tau2 - t) / (tau2 - tau1)


def cads_noise(y: torch.Tensor, n: torch.Tensor, gamma: float, noise_scale: float, psi: float) -> torch.Tensor:
    """ŷ = sqrt(γ)·y + s·sqrt(1 − γ)·n, rescaled per row to y's mean and std and mixed with weight ψ."""
    y_hat = gamma ** 0.5 * y + noise_scale * (1 - gamma) ** 0.5 * n
    mean, std = y.mean(1, keepdim=True), y.std(1, keepdim=True)
    rescaled = (y_hat - y_hat.mean(1, keepdim=True)) / y_hat.std(1, keepdim=True).clamp_min(1e-8) * std + mean
    return psi * rescaled + (1 - psi) * y_hat


@dataclass
class CADSGuidance(GuidanceTerm):
    name = "cads"
    tau1: float = 0.6
    tau2: float = 0.9
    noise_scale: float = 0.25  # s
    psi: float = 1.0  # rescale mix ψ
    stop: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.tau1 < self.tau2 <= 1.0:
            raise NoveltynetsError(f"cads: need 0 <= tau1 < tau2 <= 1, got tau1={self.tau1}, tau2={self.tau2}")
        if self.noise_scale < 0 or not 0.0 <= self.psi <= 1.0:
            raise NoveltynetsError(f"cads: need noise_scale >= 0 and 0 <= psi <= 1, got {self.noise_scale}, {self.psi}")

    def active(self, progress: float) -> bool:
        return False  # no gradient: CADS acts on the condition only

    def grad(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        return torch.zeros_like(x0_hat)

    def condition(self, y: torch.Tensor, info: dict) -> torch.Tensor:
        """ŷ for the conditional rows ``y`` (B, ...; a class embedding, or a pipeline's text embeddings, each row
        flattened) at step ``info["i"]`` of ``info["num_steps"]``; the noise of row r comes from ``info["seeds"][r]``."""
        t = 1.0 - info["i"] / info["num_steps"]
        gamma = cads_gamma(t, self.tau1, self.tau2)
        if gamma >= 1.0 or self.scale == 0 or not self.start <= 1.0 - t < self.stop:
            return y
        flat = y.flatten(1)
        n = step_noise(info["seeds"], info["i"], 0xCAD5, (flat.shape[1],)).to(flat)
        return cads_noise(flat, n, gamma, self.noise_scale, self.psi).view_as(y)

    @contextlib.contextmanager
    def conditioning(self, eps_model, extra: dict):
        t = 1.0 - extra["i"] / extra["num_steps"]
        gamma = cads_gamma(t, self.tau1, self.tau2)
        table = getattr(getattr(eps_model, "unet", None), "class_embedding", None)
        if table is None:
            raise NoveltynetsError("cads needs a class-conditional model with a class-embedding table")
        if gamma >= 1.0 or self.scale == 0 or not self.start <= 1.0 - t < self.stop:
            yield
            return

        def hook(module, inputs, y):
            labels = inputs[0]
            rows = torch.nonzero(labels != NULL_CLASS).flatten().tolist()
            if not rows:
                return y
            y = y.clone()  # row r of the (possibly 2B, cond first) model batch belongs to sample r mod B
            y[rows] = self.condition(y[rows], {**extra, "seeds": [extra["seeds"][r % len(extra["seeds"])] for r in rows]})
            return y

        handle = table.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()
