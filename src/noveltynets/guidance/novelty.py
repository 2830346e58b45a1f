"""Novelty anti-guidance: move x̂0 away from what a memory has seen, and batch-mates away from each other.

Both parts say where each sample's embedding e = E(x̂0) should move (Δe, in embedding units);
:func:`~noveltynets.guidance.base.embedding_step` turns Δe into the x̂0 change that moves it
there, as particle guidance and SPELL do, so that x̂0 moves by ``scale`` times that change:

    Δe_i = memory_weight · ℓ · P(seen | e_i) · (−∇logit / ‖∇logit‖)          (memory)
         + batch_weight · mean_{j≠i} k(e_i, e_j) (e_i − e_j)                   (batch)

The memory part follows ∇ log P(unseen) = −P(seen)·∇logit in direction, with length
``memory_weight`` · ℓ · P(seen): ℓ is the median nearest-neighbour distance of the memory's
reference samples (its units), and the factor P(seen) means that a sample far from history is
not pushed (measured: normalising every push to full size made an unrelated memory work as well
as the real one, so the push was a perturbation). With the default proximity memory,
P(seen) ≈ exp(−d²/2r²) (d: distance to the nearest remembered embedding, in ℓ), so the push fades
with distance from history. ``objective="seen"`` uses 1 − P(seen) instead.
The batch part is particle guidance's RBF repulsion (median bandwidth, see
:func:`~noveltynets.guidance.particle.rbf_repulsion`), so 16 samples of one batch are not
near-copies of each other either: the memory knows earlier batches, the batch part the batch.

Measured (docs/benchmarks/novelty): on full-resolution pixels (``pooled-pixels:32``, the default
embedder for 32×32 images) a push of this form costs far less precision than the earlier one (an
eps correction normalised per batch and stopped at half the run); 8×8 pooling gave blocky pushes
and missed most near-duplicates, 16×16 cost class 1 more precision for the same cut.

After each batch the memory observes the finished samples (``on_samples_end``) and, with
``trajectory=True`` (default) and a memory whose reference pool holds unguided x̂0 at the
same steps, the batch's x̂0 at the observed guided steps: a memory of finished samples only did
not know, during the guided window, which trajectories were heading for history (measured:
early-warning AUC ~0.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch

from ..errors import NoveltynetsError
from ..spec import in_range
from .base import GuidanceTerm, embedding_step
from .particle import rbf_repulsion


@dataclass
class NoveltyGuidance(GuidanceTerm):
    name = "novelty"
    scale: float = 1.0
    stop: float = 0.95  # as particle guidance: late pushes are what separates near-duplicates (stopping at 0.5 lost most of the cut)
    memory_weight: float = 2.0  # push away from history, in units of the reference's nearest-neighbour distance, times P(seen)
    # (keep protocol, docs/benchmarks/keep: 0.2 on full pixels left the memory inert across runs; 2 in a 32-d projection,
    # acting to memory_stop, is what makes a continued memory beat a fresh and an unrelated one)
    memory_start: float = 0.0  # the memory part acts from this fraction of the run ...
    memory_stop: float = 0.95  # the memory part acts until this fraction of the run (and never after ``stop``): pushed to
    # the end, the memory's own history counts (keep protocol: stopping at 0.5 cut as much as a memory of plain samples)
    repair: float = 0.05  # with the memory part acting into the run's last tenth, the sampler then re-runs the steps below
    # repair·T without guidance (sampling.clean_up; its own clean > 0 overrides): the model repairs the detail the late
    # push left off the data, and gives back most of the precision it cost (docs/benchmarks/keep, ninth part); 0 = off
    batch_weight: float = 5.5  # in-batch RBF repulsion (particle guidance's); 0 = off
    objective: str = "unseen"  # "unseen": weight P(seen) (strong near history only); "seen": weight 1 − P(seen)
    renoise_rho: float = 0.0  # share of the noise re-drawn where the memory says "seen"; 0 = off (default: measured
    # worse than the push alone on the 50-step protocol, see docs/benchmarks/novelty)
    renoise_threshold: float = 0.5  # ... i.e. where P(seen | x̂0) is above this
    renoise_stop: float = 0.8  # ... until this fraction of the run (from ``start``)
    trajectory: bool = True  # the memory also observes x̂0 at the guided steps (if its reference pool has them)
    trajectory_points: int = 8  # ... at this many of them, evenly spaced (0 = all): with 50 steps, all 47 guided x̂0 per
    # sample would outnumber the finished samples 47:1 in the memory's replay and its reference pool
    memory: Any = field(default=None, repr=False, compare=False, metadata={"config": False})
    embedder: Any = field(default=None, repr=False, compare=False, metadata={"config": False})
    observer: Callable | None = field(default=None, repr=False, compare=False, metadata={"config": False})
    history_kind: ClassVar[str] = "novelty"  # the history it keeps: a NoveltyMemory (see memory.store.KINDS)

    def __post_init__(self):
        super().__post_init__()
        self._trajectory: list[torch.Tensor] = []
        if not 0 <= self.renoise_rho <= 1 or not 0 <= self.renoise_threshold <= 1:
            raise NoveltynetsError(f"novelty: renoise_rho and renoise_threshold must be in [0, 1], got "
                                   f"{self.renoise_rho} and {self.renoise_threshold}")
        if not self.start <= self.renoise_stop <= 1:
            raise NoveltynetsError(f"novelty: need start <= renoise_stop <= 1, got renoise_stop={self.renoise_stop}")
        in_range("novelty: repair", self.repair, 0, 1)
        if self.objective not in ("unseen", "seen"):
            raise NoveltynetsError(f"novelty: objective must be 'unseen' or 'seen', got {self.objective!r}")
        if self.trajectory_points < 0:
            raise NoveltynetsError(f"novelty: trajectory_points must be >= 0, got {self.trajectory_points}")
        if not 0 <= self.memory_start <= self.memory_stop <= 1:
            raise NoveltynetsError(f"novelty: need 0 <= memory_start <= memory_stop <= 1, got {self.memory_start} and {self.memory_stop}")
        if self.memory_weight < 0 or self.batch_weight < 0:
            raise NoveltynetsError(f"novelty: memory_weight and batch_weight must be >= 0, got {self.memory_weight} and {self.batch_weight}")

    def attach(self, memory, observer: Callable | None = None, embedder=None) -> None:
        """Guide with ``memory`` (embedding with ``embedder``, the memory's own) and let ``observer`` teach it after each batch."""
        self.memory, self.observer, self.embedder = memory, observer, embedder if embedder is not None else self.embedder

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

    def _memory_acts(self, progress: float) -> bool:
        return self.memory_start <= progress < self.memory_stop

    def clean_up(self) -> float:
        """``repair`` after a memory push into the run's last tenth (a late push leaves detail the model would not make)."""
        return self.repair if self.scale and self.memory_weight and min(self.memory_stop, self.stop) > 0.9 else 0.0

    def memory_step(self, emb: torch.Tensor) -> torch.Tensor:
        """Δe of the memory part (B, dim): ℓ · P(seen) · (−∇logit/‖∇logit‖) (``objective="seen"``: 1 − P(seen))."""
        with torch.enable_grad():
            e = emb.detach().to(self.memory.device).requires_grad_(True)
            logit = self.memory.logit(e)
            g = torch.autograd.grad(logit.sum(), e)[0]
        p = torch.sigmoid(logit.detach())
        weight = p if self.objective == "unseen" else 1 - p
        unit = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (-self.memory.neighbour_distance() * weight[:, None] * unit).to(emb.device, emb.dtype)

    def grad(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        """The x̂0 change (scaled for the sampler, see :func:`embedding_step`) that moves each embedding by Δe."""
        with torch.enable_grad():  # one embedder pass serves Δe, the trajectory record and the Gauss–Newton map
            x = x0_hat.detach().requires_grad_(True)
            graph = (x, self.embedder(x))
        emb = graph[1].detach()
        if not self.renoises(info.get("i", 0) / max(info.get("num_steps", 1), 1)):
            self._record(x0_hat, emb, info)  # else renoise() records, at x̂0 after this push
        delta = torch.zeros_like(emb)
        if self._knows() and self.memory_weight and self._memory_acts(info.get("i", 0) / max(info.get("num_steps", 1), 1)):
            delta = delta + self.memory_weight * self.memory_step(emb)
        if self.batch_weight and len(emb) > 1:
            delta = delta + self.batch_weight * rbf_repulsion(emb.double()).to(emb.dtype)
        return embedding_step(self.embedder, x0_hat, delta, info.get("alpha_bar"), graph)

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
