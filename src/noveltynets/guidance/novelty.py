"""Novelty anti-guidance: push x̂0 away from what a memory has seen, plus in-batch repulsion.

The memory says how likely an embedding is to have been generated before in this scope.
``objective="unseen"`` (default) follows ∇ log P(unseen) = −P(seen)·∇logit, which is
strong near history and vanishes far from it; ``objective="seen"`` follows −∇ log P(seen)
= −(1 − P(seen))·∇logit, strongest far from history (measured: then an unrelated memory
works as well as the real one, see docs/benchmarks/novelty). So that members of one
batch do not converge on each other either, the batch's own x̂0 embeddings count as
history for the other members: a kernel estimate log Σ_{j≠i} k(e_i, e_j) (RBF, median
bandwidth) is added to log P(seen) with weight ``batch_weight``.

``normalize="batch"`` (default) rescales the batch's gradients so the largest per-sample
RMS is sqrt(ᾱ_t) (relative strengths kept); ``"sample"`` makes every sample's RMS sqrt(ᾱ_t).
In the cheap gradient mode the eps correction then has RMS up to ``scale · sqrt(1 − ᾱ_t)``:
``scale`` is the size of the push relative to the noise, whatever the memory's logit scale. After each batch the memory observes the finished samples (``on_samples_end``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..errors import NoveltynetsError
from .base import GuidanceTerm


def batch_log_seen(emb: torch.Tensor) -> torch.Tensor:
    """log Σ_{j≠i} exp(−‖e_i − e_j‖² / (2h²)), h² = median squared distance / 2 (B,)."""
    d2 = torch.cdist(emb, emb).pow(2)
    off = ~torch.eye(len(emb), dtype=torch.bool, device=emb.device)
    h2 = d2[off].detach().median().clamp_min(1e-8) / 2
    return torch.logsumexp((-d2 / (2 * h2)).masked_fill(~off, -math.inf), dim=1)


@dataclass
class NoveltyGuidance(GuidanceTerm):
    name = "novelty"
    scale: float = 1.0
    stop: float = 0.5  # the layout is set in the first half; later pushes only cost quality (measured)
    objective: str = "unseen"  # "unseen": maximise log P(unseen); "seen": minimise log P(seen)
    normalize: str = "batch"  # "batch", "sample" or "none"
    batch_weight: float = 1.0
    memory: Any = field(default=None, repr=False, compare=False, metadata={"config": False})
    embedder: Any = field(default=None, repr=False, compare=False, metadata={"config": False})
    observer: Callable | None = field(default=None, repr=False, compare=False, metadata={"config": False})

    def __post_init__(self):
        super().__post_init__()
        if self.objective not in ("unseen", "seen"):
            raise NoveltynetsError(f"novelty: objective must be 'unseen' or 'seen', got {self.objective!r}")
        if self.normalize not in ("batch", "sample", "none"):
            raise NoveltynetsError(f"novelty: normalize must be 'batch', 'sample' or 'none', got {self.normalize!r}")

    def log_prob(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        """log p of being *novel*: −log P(seen | history) − batch_weight · log(in-batch similarity)."""
        emb = self.embedder(x0_hat)
        if self.memory is None:
            logp = torch.zeros(len(emb), device=emb.device)
        else:
            logit = self.memory.logit(emb).to(emb.device)
            logp = F.logsigmoid(-logit) if self.objective == "unseen" else -F.logsigmoid(logit)
        if self.batch_weight and len(emb) > 1:
            logp = logp - self.batch_weight * batch_log_seen(emb)
        return logp

    def grad(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        g = super().grad(x0_hat, info)
        if self.normalize != "none":
            rms = g.flatten(1).pow(2).mean(1).sqrt().view(-1, *[1] * (g.dim() - 1))
            rms = rms.max() if self.normalize == "batch" else rms
            a = info.get("alpha_bar")
            g = g / rms.clamp_min(1e-12) * (a.sqrt() if a is not None else 1.0)
        return g

    def on_samples_end(self, x0: torch.Tensor, info: dict) -> None:
        if self.memory is None:
            return
        with torch.no_grad():
            emb = self.embedder(x0)
        if self.observer is not None:  # e.g. the store: observes under its lock and persists
            self.observer(emb, info)
        else:
            self.memory.observe(emb)
