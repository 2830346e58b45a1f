"""Eps-model wrappers: classifier-free guidance, and ``GuidedModel`` applying guidance terms.

Every eps-model here is a callable ``model(x, t, extra) -> eps`` where ``t`` is a (B,)
tensor of timesteps and ``extra`` a dict holding at least ``classes`` (B,) and the step
(``i``, ``num_steps``); it may instead return ``(eps, rho)``, rho (B,) in [0, 1] the share of
each sample's noise to re-draw at this step (see :func:`~noveltynets.sampling.sample_batch`).
Samplers know nothing about guidance: they call the outermost one, and, where it has them,
its ``start_batch()`` before and ``end_batch(x0, info)`` after each batch.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from ..models.unet import NULL_CLASS
from .term import GuidanceTerm


class CFGDenoiser:
    """eps = eps_u + w·(eps_c − eps_u), with both passes in one batch of 2B.

    A distilled model (``rank_stride`` > 0) reads ``extra["ranks"]`` (B,) where present: the label is
    ``class + rank_stride·rank``, and the unconditional pass keeps the rank (the null class at that rank),
    so CFG sharpens the class while the rank acts as it was trained.

    Rank guidance (``rank_scale`` = s ≠ 1, with ranks): eps + (s − 1)·(eps_c − eps_c0), eps_c0 the class
    without a rank (rank 0): the rank's effect on the class prediction taken s times, as CFG does for a
    condition (a third pass, in the same batch). s = 1 is the model as trained."""

    def __init__(self, unet, cfg_scale: float = 1.0, null_class: int = NULL_CLASS, rank_stride: int = 0, rank_scale: float = 1.0):
        self.unet, self.cfg_scale, self.null_class, self.rank_stride = unet, cfg_scale, null_class, rank_stride
        self.rank_scale = rank_scale

    def __call__(self, x: torch.Tensor, t: torch.Tensor, extra: dict) -> torch.Tensor:
        classes = extra["classes"]
        ranks = extra.get("ranks")
        if ranks is not None and not self.rank_stride:
            raise ValueError("ranks were given to a model without a rank index")
        offset = 0 if ranks is None else self.rank_stride * ranks.to(classes.device)
        labels = [classes + offset]
        cfg = self.cfg_scale != 1.0 and not bool((classes == self.null_class).all())
        if cfg:
            labels.append(torch.full_like(classes, self.null_class) + offset)
        rank_guided = ranks is not None and self.rank_scale != 1.0
        if rank_guided:
            labels.append(classes)  # the class at rank 0: no rank
        if len(labels) == 1:  # one pass: no batch to build
            return self.unet(x, t, class_labels=labels[0]).sample
        out = self.unet(torch.cat([x] * len(labels)), torch.cat([t] * len(labels)), class_labels=torch.cat(labels)).sample
        eps_c, *rest = out.chunk(len(labels))
        eps = eps_c if not cfg else rest[0] + self.cfg_scale * (eps_c - rest[0])
        return eps if not rank_guided else eps + (self.rank_scale - 1) * (eps_c - rest[-1])


class GuidedModel:
    """eps' = eps − sqrt(1 − ᾱ_t) · Σ scale_i · ∇_{x_t} log p_i  (see guidance.base for the convention).

    ``grad_mode="x0"`` (cheap): ∇_{x_t} ≈ ∇_{x̂0} / sqrt(ᾱ_t), eps from a no-grad pass.
    ``grad_mode="exact"``: ∇_{x_t} = (∂x̂0/∂x_t)ᵀ ∇_{x̂0}, one backward pass through the denoiser.
    Terms with ``space == "xt"`` return ∇_{x_t} themselves (at x_t) and are added as they are, in both modes.
    A term whose gradient has a NaN or Inf is skipped for that step, with a warning. Terms that
    re-noise (``term.renoises``) are asked for ρ at x̂0 of the guided eps; the largest ρ per
    sample is returned beside eps, as ``(eps, rho)`` (see :func:`~noveltynets.sampling.sample_batch`).
    Every term's ``conditioning(eps_model, extra)`` context is entered around each model call (CADS).
    It owns its terms' lifecycle: ``start_batch()`` resets them, ``end_batch(x0, info)`` shows them
    the finished batch (where memories learn).
    """

    def __init__(self, eps_model, terms: list[GuidanceTerm], alphas_cumprod: torch.Tensor, grad_mode: str = "x0"):
        if grad_mode not in ("x0", "exact"):
            raise ValueError(f"grad_mode must be 'x0' or 'exact', got {grad_mode!r}")
        self.eps_model, self.terms, self.grad_mode = eps_model, list(terms), grad_mode
        self.alphas_cumprod = alphas_cumprod

    def start_batch(self) -> None:
        for term in self.terms:
            term.reset()

    def end_batch(self, x0: torch.Tensor, info: dict) -> None:
        for term in self.terms:
            term.on_samples_end(x0, info)

    def _term_grads(self, point: torch.Tensor, active, extra: dict) -> torch.Tensor:
        """Σ scale_i · grad_i at ``point`` (x̂0 or x_t, by the terms' space)."""
        total = torch.zeros_like(point)
        for term in active:
            g = term.grad(point.detach(), extra)
            if not torch.isfinite(g).all():
                warnings.warn(f"guidance {term.name!r}: non-finite gradient at step {extra['i']}; skipped for this step", RuntimeWarning, stacklevel=2)
                continue
            total = total + term.scale * g
        return total

    def __call__(self, x: torch.Tensor, t: torch.Tensor, extra: dict) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        with contextlib.ExitStack() as stack:
            for term in self.terms:
                stack.enter_context(term.conditioning(self.eps_model, extra))
            return self._guided(x, t, extra)

    def _guided(self, x: torch.Tensor, t: torch.Tensor, extra: dict) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        progress = extra["i"] / extra["num_steps"]
        if not any(term.active(progress) or term.renoises(progress) for term in self.terms):
            with torch.no_grad():
                return self.eps_model(x, t, extra)
        a = self.alphas_cumprod.to(x.device)[t].view(-1, *[1] * (x.dim() - 1))
        info = {**extra, "x": x, "t": t, "alpha_bar": a, "denoiser": self.eps_model, "alphas_cumprod": self.alphas_cumprod}
        if self.grad_mode == "exact" and any(term.space == "x0" and term.active(progress) for term in self.terms):
            return self._exact(x, t, extra, a, info)
        with torch.no_grad():
            eps = self.eps_model(x, t, extra)
        return self.correct(x, eps, a, info)

    def correct(self, x: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, info: dict,
                grad_x: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The guided eps for the model's ``eps`` at x_t = ``x`` with ᾱ_t = ``a`` (broadcastable to x), cheap mode
        (∇_{x_t} ≈ ∇_{x̂0} / sqrt(ᾱ_t)) unless ``grad_x`` (the x̂0 terms' ∇_{x_t}, exact mode) is given; ``info`` holds
        the step (``i``, ``num_steps``) and what the terms read. With a re-noise request: ``(eps, rho)``.
        Any sampler that can say where it is (ᾱ_t, or its equivalent, see noveltynets.integrations.diffusers) uses it."""
        progress = info["i"] / info["num_steps"]
        active = [term for term in self.terms if term.active(progress)]
        renoising = [term for term in self.terms if term.renoises(progress)]
        on_x0 = [term for term in active if term.space == "x0"]
        on_xt = [term for term in active if term.space == "xt"]
        if grad_x is None:
            grad_x = torch.zeros_like(x)
            if on_x0:
                x0_hat = (x - (1 - a).sqrt() * eps) / a.sqrt()
                grad_x = self._term_grads(x0_hat, on_x0, {**info, "eps": eps}) / a.sqrt()
        if on_xt:  # x_t-space terms (noise-conditioned classifiers) give ∇_{x_t} directly
            grad_x = grad_x + self._term_grads(x, on_xt, {**info, "eps": eps})
        if active:
            eps = eps - (1 - a).sqrt() * grad_x
        if renoising:  # asked where the guided step leads: x̂0 of the guided eps
            x0_hat = (x - (1 - a).sqrt() * eps) / a.sqrt()
            rhos = [r for r in (term.renoise(x0_hat, {**info, "eps": eps}) for term in renoising) if r is not None]
            if rhos:
                return eps, torch.stack(rhos).amax(0).clamp(0, 1)
        return eps

    def _exact(self, x, t, extra, a, info):
        """Exact mode: ∇_{x_t} = (∂x̂0/∂x_t)ᵀ ∇_{x̂0}, one backward pass through the denoiser."""
        progress = extra["i"] / extra["num_steps"]
        on_x0 = [term for term in self.terms if term.active(progress) and term.space == "x0"]
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            eps = self.eps_model(x_in, t, extra)
            x0_hat = (x_in - (1 - a).sqrt() * eps) / a.sqrt()
            g0 = self._term_grads(x0_hat, on_x0, {**info, "eps": eps.detach()})
            grad_x = torch.autograd.grad(x0_hat, x_in, grad_outputs=g0)[0]
        return self.correct(x, eps.detach(), a, info, grad_x)
