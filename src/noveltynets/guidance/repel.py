"""Sparse repellency (SPELL; Kirchhof et al., "Shielded Diffusion", ICML 2025): keep x̂0 out of balls around references.

At every guided step, for each sample whose x̂0 embedding e lies within radius r of reference
embeddings z_k, the correction

    Δe = λ · Σ_{k: ‖e − z_k‖ < r} (r − ‖e − z_k‖) / ‖e − z_k‖ · (e − z_k)

moves it to the edge of each ball it is in, times the over-compensation λ (1.6 by default,
the paper's choice, so that the denoiser's pull back does not land it inside again). It is
zero for samples in no ball: the intervention is sparse. References are a protected set
(e.g. training images), the finished samples of earlier batches (``history``, dynamic) and
the batch-mates' current x̂0 (``in_batch``: sample i is repelled from batch-mates j < i, so
earlier samples keep their course, as in the order the benchmark counts near-duplicates).
Neighbours come from a faiss flat index (exact, radius search), which grows with history.

Δe is taken back to x̂0 space by a Gauss–Newton step along Jᵀ·Δe (J = ∂e/∂x̂0), which for
pooled pixels is exactly the pixel change that moves the embedding by Δe; and the returned
``grad`` is scaled so that, in the cheap gradient mode, x̂0 moves by exactly ``scale`` · that
change (guidance.base: x̂0' = x̂0 + (1 − ᾱ)/ᾱ · scale · grad).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import NoveltynetsError
from .base import GuidanceTerm


def ball_correction(e: torch.Tensor, refs: list[torch.Tensor], radius: float) -> torch.Tensor:
    """Σ over references z within ``radius`` of e_i of (r − d)/d · (e_i − z); ``refs[i]`` (K_i, dim) are e_i's neighbours."""
    out = torch.zeros_like(e)
    for i, z in enumerate(refs):
        if len(z):
            diff = e[i] - z
            d = diff.norm(dim=1, keepdim=True).clamp_min(1e-8)
            out[i] = ((radius - d) / d * diff)[d.squeeze(1) < radius].sum(0)
    return out


@dataclass
class RepelGuidance(GuidanceTerm):
    name = "repel"
    scale: float = 1.0
    radius: float = 0.5  # in embedding units; pooled 8×8 pixels of one class: nearest-neighbour distances ~0.3–0.8
    overcompensation: float = 1.6  # λ
    history: bool = True  # earlier batches' finished samples are references
    in_batch: bool = True  # batch-mates earlier in the batch are references for the later ones
    embedder: str = "pooled-pixels:8"
    references: Any = field(default=None, repr=False, compare=False, metadata={"config": False})  # protected set (N, dim)

    def __post_init__(self):
        super().__post_init__()
        if self.radius <= 0 or self.overcompensation <= 0:
            raise NoveltynetsError(f"repel: radius and overcompensation must be positive, got {self.radius} and {self.overcompensation}")
        from ..memory.embedders import embedder_from_spec

        self._embed = embedder_from_spec(self.embedder)  # needs no model: pooled pixels and the like
        self._index = None
        if self.references is not None:
            self.add(torch.as_tensor(self.references))
        self.interventions = 0  # samples moved, summed over steps (how sparse it is)

    def add(self, embeddings: torch.Tensor) -> None:
        """Add reference embeddings (N, dim) to the index."""
        import faiss

        e = embeddings.detach().float().cpu().contiguous()
        if e.ndim != 2 or e.shape[1] != self._embed.dim or not torch.isfinite(e).all():
            raise NoveltynetsError(f"repel: references must be finite (N, {self._embed.dim}), got {tuple(e.shape)}")
        if self._index is None:
            self._index = faiss.IndexFlatL2(self._embed.dim)
        self._index.add(e.numpy())

    @property
    def n_references(self) -> int:
        return 0 if self._index is None else self._index.ntotal

    def _neighbours(self, e: torch.Tensor) -> list[torch.Tensor]:
        """For each row of e, the stored references within the radius (K_i, dim)."""
        if self._index is None or self._index.ntotal == 0:
            return [e[:0]] * len(e)
        lims, _, ids = self._index.range_search(e.detach().float().cpu().contiguous().numpy(), self.radius ** 2)
        return [torch.from_numpy(self._index.reconstruct_batch(ids[lims[i]:lims[i + 1]])).to(e) if lims[i + 1] > lims[i]
                else e[:0] for i in range(len(e))]

    def grad(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        with torch.enable_grad():
            x = x0_hat.detach().requires_grad_(True)
            e = self._embed(x)
            refs = self._neighbours(e)
            if self.in_batch:  # batch-mates j < i join i's references
                refs = [torch.cat([r, e[:i].detach()]) for i, r in enumerate(refs)]
            delta = self.overcompensation * ball_correction(e.detach(), refs, self.radius)
            hit = delta.norm(dim=1) > 0
            self.interventions += int(hit.sum())
            if not hit.any():
                return torch.zeros_like(x0_hat)
            v = torch.autograd.grad(e, x, grad_outputs=delta, retain_graph=True)[0]  # Jᵀ·Δe
            u = torch.zeros_like(e, requires_grad=True)  # J·v by the double-vjp trick: Jᵀu is linear in u, ∂(Jᵀu)/∂u·v = Jv
            jt_u = torch.autograd.grad(e, x, grad_outputs=u, create_graph=True)[0]
            jv = torch.autograd.grad(jt_u, u, grad_outputs=v)[0]  # J·Jᵀ·Δe
        step = ((delta * jv).sum(1) / jv.pow(2).sum(1).clamp_min(1e-12)).view(-1, *[1] * (v.dim() - 1))
        dx = torch.where(hit.view_as(step), step * v, torch.zeros_like(v))  # the x̂0 change that moves e by Δe
        a = info.get("alpha_bar")
        return dx * (a / (1 - a) if a is not None else 1.0)

    def on_samples_end(self, x0: torch.Tensor, info: dict) -> None:
        if self.history:
            with torch.no_grad():
                self.add(self._embed(x0))
