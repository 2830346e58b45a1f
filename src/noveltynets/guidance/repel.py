"""Sparse repellency (SPELL; Kirchhof et al., "Shielded Diffusion", ICML 2025): keep x̂0 out of balls around references.

At every guided step, for each sample whose x̂0 embedding e lies within radius r of reference
embeddings z_k, the correction

    Δe = λ · Σ_{k: ‖e − z_k‖ < r} (r − ‖e − z_k‖) / ‖e − z_k‖ · (e − z_k)

moves it to the edge of each ball it is in, times the over-compensation λ (1.6 by default,
the paper's choice, so that the denoiser's pull back does not land it inside again). It is
zero for samples in no ball: the intervention is sparse. References are a protected set
(``protect=train``: the training images, or a file of images), the finished samples of earlier batches (``history``, dynamic: an
:class:`~noveltynets.embed.history.ExactHistory`, kept in the store under a name with ``--memory NAME``, so it spans runs) and
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
from typing import Any, ClassVar

import torch

from ..errors import NoveltynetsError
from .base import GuidanceTerm, embedding_step


def load_images(spec: str) -> torch.Tensor:
    """``train`` (the shipped training split) or a .npy / .npz (key ``images``) of uint8 or [-1, 1] images, as (N, 1, H, W) in [-1, 1]."""
    if spec == "train":
        from ..data import load_split

        return load_split("train").images
    try:
        import numpy as np

        arr = np.load(spec)
        arr = arr["images"] if hasattr(arr, "files") else arr
    except (OSError, ValueError, KeyError) as err:
        raise NoveltynetsError(f"repel: cannot read protected images from {spec!r} (use 'train', a .npy or a samples.npz): {err}") from None
    x = torch.as_tensor(arr).float()
    if arr.dtype == np.uint8:
        x = x / 127.5 - 1
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or not torch.isfinite(x).all():
        raise NoveltynetsError(f"repel: protected images must be (N, H, W) or (N, C, H, W), got {tuple(x.shape)}")
    return x


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
    stop: float = 1.0  # to the last step, as in SPELL: the final sample is then outside every ball (at 0.95, 3/64 were not)
    history: bool = True  # earlier batches' finished samples are references
    in_batch: bool = True  # batch-mates earlier in the batch are references for the later ones
    embedder: str = "pooled-pixels:8"
    protect: str = ""  # a protected set: "train" (the shipped training split, 4,500 images) or a samples.npz / .npy of images
    references: Any = field(default=None, repr=False, compare=False, metadata={"config": False})  # protected set (N, dim)
    memory: Any = field(default=None, repr=False, compare=False, metadata={"config": False})  # the history (ExactHistory)
    observer: Any = field(default=None, repr=False, compare=False, metadata={"config": False})  # e.g. the store's, after each batch
    history_kind: ClassVar[str] = "exact"

    def __post_init__(self):
        super().__post_init__()
        if self.radius <= 0 or self.overcompensation <= 0:
            raise NoveltynetsError(f"repel: radius and overcompensation must be positive, got {self.radius} and {self.overcompensation}")
        from ..embed.embedders import embedder_from_spec

        self._embed = embedder_from_spec(self.embedder)  # needs no model: pooled pixels and the like
        from ..embed.history import KnnHistory

        self._protected = KnnHistory(self._embed.dim)
        if self.memory is None:
            self.memory = self.new_history(self._embed)
        if self.references is not None:
            self.add(torch.as_tensor(self.references))
        if self.protect:
            with torch.no_grad():
                self.add(self._embed(load_images(self.protect)))
        self.interventions = 0  # samples moved, summed over steps (how sparse it is)

    def new_history(self, embedder, model_id: str = ""):
        """An empty history of this term's kind for ``embedder`` (its own: ``history_embedder``)."""
        from ..embed.history import ExactHistory, HistoryConfig

        return ExactHistory(HistoryConfig(embedder.dim, embedder.id, model_id))

    def history_embedder(self, model=None):
        return self._embed

    def attach(self, memory, observer=None, embedder=None) -> None:
        """Repel from ``memory`` (an exact history made with this term's embedder) and let ``observer`` extend it."""
        if memory.config.embedder_id != self._embed.id:
            raise NoveltynetsError(f"repel: its history was made with embedder {memory.config.embedder_id!r}, not {self._embed.id!r}")
        self.memory, self.observer = memory, observer

    def add(self, embeddings: torch.Tensor) -> None:
        """Add protected reference embeddings (N, dim) to the index."""
        try:
            self._protected.add(embeddings)
        except NoveltynetsError as err:
            raise NoveltynetsError(f"repel: references: {err}") from None

    @property
    def n_references(self) -> int:
        return len(self._protected) + self.memory.n_seen

    def grad(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        with torch.no_grad():
            e = self._embed(x0_hat)
        refs = [torch.cat([p, h]) for p, h in zip(self._protected.within(e, self.radius), self.memory.within(e, self.radius))]
        if self.in_batch:  # batch-mates j < i join i's references
            refs = [torch.cat([r, e[:i]]) for i, r in enumerate(refs)]
        delta = self.overcompensation * ball_correction(e, refs, self.radius)
        self.interventions += int((delta.norm(dim=1) > 0).sum())
        return embedding_step(self._embed, x0_hat, delta, info.get("alpha_bar"))

    def on_samples_end(self, x0: torch.Tensor, info: dict) -> None:
        if self.history:
            with torch.no_grad():
                e = self._embed(x0)
            if self.observer is not None:  # the store: observes under its lock and persists
                self.observer(e, info)
            else:
                self.memory.observe(e)
