"""What the heads are trained towards at each rehearsal step: labelled batches for classification (and the
recall head), and for proximity targets the queries around history with their exact soft proximity.

These are functions of a memory's state: its replay, reference rows (``mem.negatives``), normalisation,
unit of length ℓ (``mem.neighbour_distance()``) and its own generator ``mem.gen``, drawn from in a fixed
order, so that a memory's training depends on its seed and what it observed alone.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from .replay import draw

if TYPE_CHECKING:
    from .core import NoveltyMemory

Batch = tuple[torch.Tensor, torch.Tensor]  # (inputs, targets): labels 1/0, or soft proximities


def noise(mem: NoveltyMemory, x: torch.Tensor, level: float) -> torch.Tensor:
    """Gaussian noise of ``level`` × per-dimension std; with ``jitter_spread`` each row's level is uniform in [0, level]."""
    n = torch.randn(x.shape, generator=mem.gen)
    if mem.config.jitter_spread:
        n = n * torch.rand(len(x), 1, generator=mem.gen)
    return level * mem.std * n.to(mem.device)


def jittered(mem: NoveltyMemory, neg: torch.Tensor) -> torch.Tensor:
    """Reference rows with fresh ``negative_jitter`` noise."""
    return neg + noise(mem, neg, mem.config.negative_jitter) if mem.config.negative_jitter else neg


def labelled(pos: torch.Tensor, neg: torch.Tensor) -> Batch:
    return torch.cat([pos, neg]), torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).to(pos.device)


def classify_batch(mem: NoveltyMemory, new: torch.Tensor) -> Batch:
    """The smooth head's classification batch: positives (the new batch always, topped up from replay)
    against as many reference rows, or jittered positives with ``negatives="jitter"``."""
    c, half = mem.config, mem.config.batch_size
    pos = torch.cat([new[:half], draw(mem.replay, max(0, half - len(new)), mem.gen)])
    if c.positive_jitter:
        pos = pos + noise(mem, pos, c.positive_jitter)
    neg = pos + noise(mem, pos, c.jitter_sigma) if c.negatives == "jitter" else jittered(mem, draw(mem.negatives, half, mem.gen))
    return labelled(pos, neg)


def recall_batch(mem: NoveltyMemory, new: torch.Tensor, n_final: int) -> Batch:
    """The recall head's batch: finished samples only (``new[:n_final]``, topped up from ``replay_final``)
    against the reference's finished samples (or jittered positives)."""
    c, half = mem.config, mem.config.batch_size
    pos = torch.cat([new[:min(n_final, half)], draw(mem.replay_final, max(0, half - n_final), mem.gen)])
    if c.negatives == "jitter":
        return labelled(pos, pos + noise(mem, pos, c.jitter_sigma))
    return labelled(pos, jittered(mem, draw(mem.negatives[: mem.n_ref_final], half, mem.gen)))


def proximity_batches(mem: NoveltyMemory, new: torch.Tensor, n: int) -> list[Batch]:
    """``n`` training batches for the proximity head, (query features, exact targets): each has positives
    (the new batch, topped up from replay) and as many reference rows, jittered by :func:`queries`.
    Targets are distances to the new batch, (a draw of) replay and the batches' own positives, all
    ``n`` batches in one distance computation (the update's main cost: rehearse cycles through these
    batches rather than drawing fresh queries at every step)."""
    c, half = mem.config, mem.config.batch_size
    rows = mem.replay if len(mem.replay) <= c.target_rows else draw(mem.replay, c.target_rows, mem.gen)
    pos = [torch.cat([new[:half], draw(mem.replay, max(0, half - len(new)), mem.gen)]) for _ in range(n)]
    q = torch.cat([queries(mem, torch.cat([p, draw(mem.negatives, half, mem.gen)])) for p in pos])
    extra = torch.cat([p[len(new[:half]):] for p in pos])  # the drawn positives, which a target must see too
    targets = proximity(mem, q, torch.cat([new, rows, extra]))
    return list(zip(mem._smooth_features(q).chunk(n), targets.chunk(n)))  # features once, not at every step


def queries(mem: NoveltyMemory, x: torch.Tensor) -> torch.Tensor:
    """``x`` plus Gaussian noise whose norm is about uniform in [0, query_jitter] × ℓ, row by row."""
    level = torch.rand(len(x), 1, generator=mem.gen) * mem.config.query_jitter / math.sqrt(x.shape[1])
    return x + (mem.neighbour_distance() * level * torch.randn(x.shape, generator=mem.gen)).to(mem.device)


def proximity(mem: NoveltyMemory, q: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """exp(−d²/2r²): d = distance from each query to its nearest row, in units of ℓ."""
    d = torch.cdist(q, rows).min(1).values / mem.neighbour_distance()
    return torch.exp(-d.pow(2) / (2 * mem.config.proximity_radius ** 2))
