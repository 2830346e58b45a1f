"""Novelty anti-guidance: push x̂0 away from what a memory has seen, plus in-batch repulsion.

The memory says how likely an embedding is to have been generated before in this scope.
``objective="unseen"`` (default) follows ∇ log P(unseen) = −P(seen)·∇logit, which is
strong near history and vanishes far from it; ``objective="seen"`` follows −∇ log P(seen)
= −(1 − P(seen))·∇logit, strongest far from history (measured: then an unrelated memory
works as well as the real one, see docs/benchmarks/novelty). So that members of one
batch do not converge on each other either, the batch's own x̂0 embeddings count as
history for the other members: a kernel estimate log Σ_{j≠i} k(e_i, e_j) (RBF, median
bandwidth) is added to log P(seen) with weight ``batch_weight``.

The memory part is P(seen)·∇logit (objective "unseen"): with ``normalize="batch"``
(default) ∇logit is divided by the batch's largest per-sample RMS, with ``"sample"`` by each
sample's own, and the result times sqrt(ᾱ_t); the factor P(seen) is kept, so a sample far
from history is not pushed (normalising the whole gradient instead rescaled those tiny
pushes to full size, and then a memory of unrelated samples worked as well as the real one:
the push was a perturbation). The batch part is normalised the same way, times
``batch_weight``. In the cheap gradient mode the eps correction then has RMS up to
``scale · (1 + batch_weight) · sqrt(1 − ᾱ_t)``, whatever the memory's logit scale.

After each batch the memory observes the finished samples (``on_samples_end``) and, with
``trajectory=True`` (default) and a memory whose reference pool holds unguided x̂0 at the
same steps, the batch's x̂0 at every guided step: a memory of finished samples only did
not know, during the guided window, which trajectories were heading for history (measured:
early-warning AUC ~0.5, see docs/benchmarks/novelty).
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
    scale: float = 0.5  # trajectory memory, 15 steps: class 7 0.213 -> 0.071 near-dups at -0.016 precision; 1.0 cut more (0.031) at -0.06 (docs/benchmarks/novelty)
    stop: float = 0.5  # the layout is set in the first half; later pushes only cost quality (measured)
    objective: str = "unseen"  # "unseen": maximise log P(unseen); "seen": minimise log P(seen)
    normalize: str = "batch"  # "batch", "sample" or "none"
    batch_weight: float = 0.0  # in-batch repulsion; measured: at weight 1 it costs ~0.3 precision (docs/benchmarks/novelty)
    renoise_rho: float = 0.0  # share of the noise re-drawn where the memory says "seen"; 0 = off (default: measured
    # worse than the push alone on the 50-step protocol, see docs/benchmarks/novelty)
    renoise_threshold: float = 0.5  # ... i.e. where P(seen | x̂0) is above this
    renoise_stop: float = 0.8  # ... until this fraction of the run (from ``start``)
    subspace: int = 0  # > 0: push only along the top-k principal directions of the memory's reference embeddings
    # (the directions in which the model's own samples vary), not off the data manifold; 0 = off
    trajectory: bool = True  # the memory also observes x̂0 at the guided steps (if its reference pool has them)
    trajectory_points: int = 8  # ... at this many of them, evenly spaced (0 = all): with 50 steps, all 25 guided x̂0 per
    # sample would outnumber the finished samples 25:1 in the memory's replay and its reference pool
    memory: Any = field(default=None, repr=False, compare=False, metadata={"config": False})
    embedder: Any = field(default=None, repr=False, compare=False, metadata={"config": False})
    observer: Callable | None = field(default=None, repr=False, compare=False, metadata={"config": False})

    def __post_init__(self):
        super().__post_init__()
        self._trajectory: list[torch.Tensor] = []
        if not 0 <= self.renoise_rho <= 1 or not 0 <= self.renoise_threshold <= 1:
            raise NoveltynetsError(f"novelty: renoise_rho and renoise_threshold must be in [0, 1], got "
                                   f"{self.renoise_rho} and {self.renoise_threshold}")
        if not self.start <= self.renoise_stop <= 1:
            raise NoveltynetsError(f"novelty: need start <= renoise_stop <= 1, got renoise_stop={self.renoise_stop}")
        if self.objective not in ("unseen", "seen"):
            raise NoveltynetsError(f"novelty: objective must be 'unseen' or 'seen', got {self.objective!r}")
        if self.subspace < 0:
            raise NoveltynetsError(f"novelty: subspace must be >= 0, got {self.subspace}")
        if self.trajectory_points < 0:
            raise NoveltynetsError(f"novelty: trajectory_points must be >= 0, got {self.trajectory_points}")
        if self.normalize not in ("batch", "sample", "none"):
            raise NoveltynetsError(f"novelty: normalize must be 'batch', 'sample' or 'none', got {self.normalize!r}")

    def log_prob(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        """log p of being *novel*: log P(unseen) (or −log P(seen)) − batch_weight · log(in-batch similarity)."""
        emb = self.embedder(x0_hat)
        logp = torch.zeros(len(emb), device=emb.device)
        if self._knows():
            logit = self.memory.logit(emb).to(emb.device)
            logp = F.logsigmoid(-logit) if self.objective == "unseen" else -F.logsigmoid(logit)
        if self.batch_weight and len(emb) > 1:
            logp = logp - self.batch_weight * batch_log_seen(emb)
        return logp

    def _basis(self) -> torch.Tensor:
        """(dim, k): the top-``subspace`` principal directions of the memory's reference embeddings (cached)."""
        ref = self.memory.negatives
        key = (id(ref), len(ref), self.subspace)
        if getattr(self, "_basis_key", None) != key:
            if len(ref) < 2:
                raise NoveltynetsError("novelty: subspace needs a memory with reference embeddings")
            centred = (ref - ref.mean(0)).float()
            self._basis_cache = torch.linalg.svd(centred, full_matrices=False).Vh[: self.subspace].T.contiguous()
            self._basis_key = key
        return self._basis_cache

    def _knows(self) -> bool:
        """A memory that has observed nothing knows nothing: its untrained logit would only add noise."""
        return self.memory is not None and self.memory.n_seen > 0

    def renoises(self, progress: float) -> bool:
        return self.renoise_rho > 0 and self.memory is not None and self.start <= progress < self.renoise_stop

    def active_steps(self, num_steps: int) -> list[int]:
        """The steps at which this term pushes or may re-noise: where a trajectory memory's reference pool needs x̂0 too."""
        return [i for i in range(num_steps) if self.active(i / num_steps)
                or (self.renoise_rho > 0 and self.start <= i / num_steps < self.renoise_stop)]

    def observed_steps(self, num_steps: int) -> list[int]:
        """The steps whose x̂0 a trajectory memory observes (and its reference pool must hold)."""
        steps = self.active_steps(num_steps)
        k = self.trajectory_points
        if k <= 0 or len(steps) <= k:
            return steps
        return [steps[round(j * (len(steps) - 1) / (k - 1))] for j in range(k)] if k > 1 else steps[:1]

    def reset(self) -> None:
        self._trajectory = []

    def _observes_trajectory(self) -> bool:
        return self.trajectory and self.memory is not None and self.memory.config.trajectory

    def _unit(self, g: torch.Tensor) -> torch.Tensor:
        """Divide by the batch's largest per-sample RMS ("batch") or by each sample's own ("sample")."""
        if self.normalize == "none":
            return g
        rms = g.flatten(1).pow(2).mean(1).sqrt().view(-1, *[1] * (g.dim() - 1))
        return g / (rms.max() if self.normalize == "batch" else rms).clamp_min(1e-12)

    def grad(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        """∇ log p, each part normalised on its own: the memory part keeps its factor P(seen)
        (or 1 − P), so the normalisation only fixes the units of ∇logit and never inflates the
        push of a sample the memory has not seen (that made an unrelated memory work as well)."""
        with torch.enable_grad():
            x = x0_hat.detach().requires_grad_(True)
            emb = self.embedder(x)
            if not self.renoises(info.get("i", 0) / max(info.get("num_steps", 1), 1)):
                self._record(x0_hat, emb.detach(), info)  # else renoise() records, at x̂0 after this push
            total = torch.zeros_like(x)
            use_batch = bool(self.batch_weight) and len(emb) > 1
            if self._knows():
                logit = self.memory.logit(emb).to(emb.device)
                if self.subspace:  # ∇_e logit projected onto the reference's principal directions, then through the embedder
                    basis = self._basis().to(emb.device)
                    g_e = torch.autograd.grad(logit.sum(), emb, retain_graph=True)[0]
                    dlogit = torch.autograd.grad(emb, x, grad_outputs=g_e @ basis @ basis.T, retain_graph=use_batch)[0]
                else:
                    dlogit = torch.autograd.grad(logit.sum(), x, retain_graph=use_batch)[0]
                p = torch.sigmoid(logit.detach())
                weight = -(p if self.objective == "unseen" else 1 - p)  # d log P(unseen)/d logit, or −d log P(seen)/d logit
                total = total + weight.view(-1, *[1] * (x.dim() - 1)) * self._unit(dlogit)
            if use_batch:
                total = total + self.batch_weight * self._unit(torch.autograd.grad(-batch_log_seen(emb).sum(), x)[0])
        a = info.get("alpha_bar")
        return total * (a.sqrt() if a is not None and self.normalize != "none" else 1.0)

    def _record(self, x0_hat: torch.Tensor, emb: torch.Tensor | None, info: dict) -> torch.Tensor | None:
        """At an observed step of a trajectory memory, keep the embedding of the clipped x̂0 (as the
        reference pool's); returns it (computed if ``emb`` is None), or ``emb`` elsewhere."""
        if not (self._observes_trajectory() and info.get("i") in self.observed_steps(info.get("num_steps", 0))):
            return emb
        with torch.no_grad():  # an embedder that clips its own input already gave that value: no second pass
            if emb is None or not getattr(self.embedder, "clamps_input", False):
                emb = self.embedder(x0_hat.clamp(-1, 1))
        self._trajectory.append(emb.detach())
        return emb

    @torch.no_grad()
    def renoise(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        """ρ where P(seen | x̂0) > ``renoise_threshold``, else 0. Re-drawing the noise of a sample
        heading for history changes its course at no cost in quality: x̂0 is kept, so the
        trajectory stays one the model could have taken (unlike a gradient push, which can leave
        the data manifold). A wrong "seen" costs nothing but a different, equally plausible sample."""
        emb = self._record(x0_hat, None, info)
        if not self._knows():
            return torch.zeros(len(x0_hat), device=x0_hat.device, dtype=x0_hat.dtype)
        emb = self.embedder(x0_hat) if emb is None else emb
        p = torch.sigmoid(self.memory.logit(emb).to(x0_hat.device))
        return (p > self.renoise_threshold).to(x0_hat.dtype) * self.renoise_rho

    def on_samples_end(self, x0: torch.Tensor, info: dict) -> None:
        if self.memory is None:
            return
        with torch.no_grad():
            emb = self.embedder(x0)
        trajectory = torch.cat(self._trajectory) if self._trajectory else None
        self._trajectory = []
        if self.observer is not None:  # e.g. the store: observes under its lock and persists
            self.observer(emb, {**info, "trajectory": trajectory})
        else:
            self.memory.observe(emb, trajectory=trajectory)
