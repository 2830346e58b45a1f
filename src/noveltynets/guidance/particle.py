"""Particle guidance (Corso et al., ICLR 2024): the batch's samples repel each other.

The batch is a set of particles with the joint potential Φ = Σ_{i≠j} k(e_i, e_j) over the
embeddings e = E(x̂0), k an RBF kernel k = exp(−‖e_i − e_j‖² / h) with the median bandwidth
of the paper's code, h = median(‖e_i − e_j‖²) / log B (recomputed every step, not
differentiated). Each particle follows −∇_{e_i} Φ = (2/h) Σ_j k_ij (e_i − e_j): away from its
batch-mates, the nearest the strongest. Unlike repel, every sample moves (the potential is
symmetric) and nothing outside the batch is seen: earlier batches are not history.

The step in embedding space is that gradient times h/2 and divided by B − 1,
Δe_i = mean_j k_ij (e_i − e_j): the same direction, in embedding units, so ``scale`` = 1 moves e
by the kernel-weighted mean offset from the others, whatever B and the bandwidth (the paper
leaves the per-step coefficient to the user). :func:`~noveltynets.guidance.base.embedding_step`
maps it back to x̂0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import GuidanceTerm, embedding_step


def rbf_repulsion(e: torch.Tensor) -> torch.Tensor:
    """Δe_i = mean over j ≠ i of k_ij (e_i − e_j), RBF kernel with bandwidth median(d²) / log B (B ≥ 2)."""
    b = len(e)
    diff = e[:, None, :] - e[None, :, :]
    d2 = diff.pow(2).sum(-1)
    off = ~torch.eye(b, dtype=torch.bool, device=e.device)
    h = (d2[off].median() / math.log(b)).clamp_min(1e-12) if b > 2 else d2[off].mean().clamp_min(1e-12)
    k = torch.exp(-d2 / h) * off
    return (k[..., None] * diff).sum(1) / (b - 1)


@dataclass
class ParticleGuidance(GuidanceTerm):
    name = "particle"
    scale: float = 1.0
    embedder: str = "pooled-pixels:8"

    def __post_init__(self):
        super().__post_init__()
        from ..embed.embedders import embedder_from_spec

        self._embed = embedder_from_spec(self.embedder)  # a pixel embedder: needs no model

    def grad(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        if len(x0_hat) < 2:  # one particle has nothing to repel
            return torch.zeros_like(x0_hat)
        with torch.no_grad():
            delta = rbf_repulsion(self._embed(x0_hat).double()).to(x0_hat.dtype)
        return embedding_step(self._embed, x0_hat, delta, info.get("alpha_bar"))
