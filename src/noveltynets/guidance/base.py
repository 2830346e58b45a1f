"""Shared math of the embedding-space terms.

Terms that act in an embedding space (repel, particle) say where the embedding e = E(x̂0)
should move (Δe); :func:`embedding_step` turns that into the x̂0 change that moves it there.
"""
from __future__ import annotations

import torch

from ..sampling.term import REGISTRY, GuidanceTerm

__all__ = ["REGISTRY", "GuidanceTerm", "embedding_step"]


def embedding_step(embed, x0_hat: torch.Tensor, delta: torch.Tensor, alpha_bar: torch.Tensor | None = None,
                   graph: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The ``grad`` that moves each sample's embedding by ``delta`` (B, dim); rows of zeros are left alone.

    A Gauss–Newton step: dx = Jᵀ·Δe · ⟨Δe, J·Jᵀ·Δe⟩ / ‖J·Jᵀ·Δe‖² (J = ∂e/∂x̂0), exactly the pixel change
    that moves e by Δe when the embedder is linear, as pooled pixels are (J·v by the double-vjp
    trick, so no forward-mode autodiff is needed). The result is scaled by ᾱ/(1 − ᾱ), so that in the
    cheap gradient mode x̂0 moves by exactly ``scale``·dx (x̂0' = x̂0 + (1 − ᾱ)/ᾱ · scale · grad).
    ``graph=(x, e)`` reuses an embedder pass the caller made: x̂0 as a leaf that requires grad and
    e = embed(x) computed from it with grad enabled."""
    hit = delta.norm(dim=1) > 0
    if not hit.any():
        return torch.zeros_like(x0_hat)
    with torch.enable_grad():
        x, e = graph if graph is not None else (x0_hat.detach().requires_grad_(True), None)
        e = embed(x) if e is None else e
        v = torch.autograd.grad(e, x, grad_outputs=delta, retain_graph=True)[0]  # Jᵀ·Δe
        u = torch.zeros_like(e, requires_grad=True)  # Jᵀu is linear in u, so ∂(Jᵀu)/∂u · v = J·v
        jt_u = torch.autograd.grad(e, x, grad_outputs=u, create_graph=True)[0]
        jv = torch.autograd.grad(jt_u, u, grad_outputs=v)[0]  # J·Jᵀ·Δe
    step = ((delta * jv).sum(1) / jv.pow(2).sum(1).clamp_min(1e-12)).view(-1, *[1] * (v.dim() - 1))
    dx = torch.where(hit.view_as(step), step * v, torch.zeros_like(v))
    return dx * (alpha_bar / (1 - alpha_bar) if alpha_bar is not None else 1.0)
