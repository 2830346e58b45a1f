"""Self-guided minority sampling (after Um & Ye, "Self-guided generation of minority samples using
diffusion models", ECCV 2024, arXiv 2407.11555): minority guidance with no classifier, for any model.

At a guided step the current x̂0 is noised again to a fixed perturbation time t_p (``perturb``·T),
x_p = sqrt(ᾱ_p)·x̂0 + sqrt(1 − ᾱ_p)·ε, and denoised once (Tweedie): x̃0 = (x_p − sqrt(1 − ᾱ_p)·ε̂(x_p, t_p)) /
sqrt(ᾱ_p). How much x̃0 misses x̂0 is the sample's own minority score (the score of
:mod:`~noveltynets.minority.score`, measured on the sample in the making), and guidance ascends it:
the gradient of ‖x̂0 − sg(x̃0)‖₂ (the reconstruction held fixed, as the authors' code does), normalised to
a largest entry of 1 per sample (their ``use_normed_grad``; here the x̂0 gradient, before any Jacobian, where
theirs normalises the x_t gradient). With the session's exact gradient mode that
gradient is carried to x_t through the denoiser (one backward pass: the paper's sampler); in the cheap
mode through ∂x̂0/∂x_t ≈ I/sqrt(ᾱ_t). It is scaled so that in the cheap mode the largest change of any
pixel of x̂0 per guided step is ``scale``·(1 − ᾱ_t) (``weight="var"``, the default: strong while the image
is still noise, fading as it settles, as the authors' default ``mg_scale_type='var'`` weighs the push by
the step's posterior variance) or ``scale`` at every step (``weight="fixed"``).

Cost per guided step: one more denoiser pass (at t_p, under classifier-free guidance two), plus, in the
exact mode, a backward pass through the denoiser. The perturbation noise of each sample comes from its
seed and the step, so a seed gives the same image in any batch. It needs the denoiser itself
(``needs_denoiser``): noveltynets' sampler and ``NoveltyDDIMPipeline`` give it; a wrapped diffusers
pipeline refuses the term. The distance is L2 (the authors' code offers L2 beside LPIPS, whose
ImageNet weights cannot be had here; the evaluation embedder must not stand in for it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import NoveltynetsError
from ..guidance.base import GuidanceTerm
from ..sampling.seeds import step_noise
from .score import timestep_at

SALT = 0x5E1F  # keeps this term's noise apart from any other drawn from (seed, step)


@dataclass
class MinoritySelf(GuidanceTerm):
    name = "minority-self"
    space = "x0"
    needs_denoiser = True
    scale: float = 1.0  # w: in the cheap mode the largest per-pixel change of x̂0 per guided step
    perturb: float = 0.8  # t_p as a fraction of the schedule (the authors' default p_ratio)
    weight: str = "var"  # "var": x̂0 moves by up to scale·(1 − ᾱ_t) per step; "fixed": by up to scale

    def __post_init__(self):
        super().__post_init__()
        if not self.scale >= 0:
            raise NoveltynetsError(f"minority-self: scale must be >= 0, got {self.scale}")
        if not 0 < self.perturb <= 1:
            raise NoveltynetsError(f"minority-self: perturb must be a fraction of the schedule in (0, 1], got {self.perturb}")
        if self.weight not in ("var", "fixed"):
            raise NoveltynetsError(f"minority-self: weight must be var or fixed, got {self.weight!r}")

    def reconstruction(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        """x̃0: x̂0 noised to t_p (noise from each sample's seed and step) and denoised once."""
        denoiser, abar = info.get("denoiser"), info.get("alphas_cumprod")
        if denoiser is None or abar is None:
            raise NoveltynetsError("minority-self needs the denoiser at another timestep: noveltynets' sampler and "
                                   "NoveltyDDIMPipeline give it, a wrapped diffusers pipeline does not")
        tp = timestep_at(self.perturb, len(abar))
        a_p = abar[tp].to(x0_hat.device, x0_hat.dtype)
        noise = step_noise(info.get("seeds") or [None] * len(x0_hat), info["i"], SALT, tuple(x0_hat.shape[1:]))
        x_p = a_p.sqrt() * x0_hat + (1 - a_p).sqrt() * noise.to(x0_hat.device, x0_hat.dtype)
        t = torch.full((len(x0_hat),), tp, device=x0_hat.device, dtype=torch.long)
        with torch.no_grad():
            eps = denoiser(x_p, t, info)
        return (x_p - (1 - a_p).sqrt() * eps) / a_p.sqrt()

    def grad(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        """∇_{x̂0} ‖x̂0 − sg(x̃0)‖₂ normalised to a largest entry of 1, times ᾱ_t ("var") or ᾱ_t/(1 − ᾱ_t) ("fixed")."""
        diff = x0_hat - self.reconstruction(x0_hat, info)
        peak = diff.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (diff.dim() - 1))
        a = info["alpha_bar"]
        return diff / peak * (a if self.weight == "var" else a / (1 - a))
