"""Pure metric functions over feature arrays (numpy in, floats out); see BENCHMARK.md.

Neighbours are exact (torch.cdist in blocks), which is fine up to tens of thousands of points.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import NoveltynetsError


def _check(*arrays: np.ndarray) -> list[torch.Tensor]:
    out = []
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2:
            raise NoveltynetsError(f"features must be 2-D (N, D), got shape {a.shape}")
        if not np.isfinite(a).all():
            raise NoveltynetsError("features contain NaN or Inf")
        out.append(torch.from_numpy(a))
    if len({t.shape[1] for t in out}) > 1:
        raise NoveltynetsError(f"feature dimensions differ: {[t.shape[1] for t in out]}")
    return out


def _knn_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point."""
    if len(x) <= k:
        raise NoveltynetsError(f"need more than k={k} points, got {len(x)}")
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def nearest_earlier_distance(samples: np.ndarray) -> np.ndarray:
    """For each sample i > 0, the distance to its nearest earlier sample j < i (first is inf)."""
    (x,) = _check(samples)
    d = torch.cdist(x, x)
    d = d.masked_fill(~torch.ones_like(d, dtype=torch.bool).tril(-1), float("inf"))
    return d.min(dim=1).values.numpy()


def near_dup_threshold(real: np.ndarray, q: float = 10.0) -> float:
    """τ: the q-th percentile of real nearest-neighbour distances."""
    (x,) = _check(real)
    return float(np.percentile(_knn_radius(x, 1).numpy(), q))


def near_dup_rate(samples: np.ndarray, tau: float) -> float:
    """Share of samples (after the first) closer than ``tau`` to some earlier sample."""
    d = nearest_earlier_distance(samples)[1:]
    return float((d < tau).mean()) if len(d) else 0.0


def history_novelty(samples: np.ndarray) -> float:
    """Mean distance from each sample (after the first) to its nearest earlier sample."""
    d = nearest_earlier_distance(samples)[1:]
    return float(d.mean()) if len(d) else 0.0


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls."""
    r, f = _check(real, fake)
    rr, fr = _knn_radius(r, k), _knn_radius(f, k)
    d = torch.cdist(f, r)  # (F, R)
    precision = (d <= rr[None, :]).any(dim=1).double().mean().item()
    recall = (d.T <= fr[None, :]).any(dim=1).double().mean().item()
    return precision, recall


def _two_nearest(samples: np.ndarray, train: np.ndarray, block: int = 1024) -> torch.Tensor:
    """(N, 2): distances from each sample to its nearest and second-nearest training point."""
    s, t = _check(samples, train)
    if len(t) < 2:
        raise NoveltynetsError(f"need at least 2 training points, got {len(t)}")
    return torch.cat([torch.cdist(b, t).topk(2, dim=1, largest=False).values for b in s.split(block)])


def memorization_rate(samples: np.ndarray, train: np.ndarray, ratio: float = 1 / 3) -> float:
    """Share of samples whose nearest training point is < ``ratio`` × as far as the second nearest
    (pixel L2 on flattened images in BENCHMARK.md; Yoon et al. 2023's criterion)."""
    d = _two_nearest(samples, train)
    return float((d[:, 0] < ratio * d[:, 1]).double().mean())


def nearest_train_distance(samples: np.ndarray, train: np.ndarray) -> float:
    """Mean distance from each sample to its nearest training point."""
    return float(_two_nearest(samples, train)[:, 0].mean())


def nearest_train_similarity(samples: np.ndarray, train: np.ndarray) -> float:
    """Mean cosine similarity between each sample and its nearest training point (by cosine)."""
    s, t = _check(samples, train)
    s, t = torch.nn.functional.normalize(s, dim=1), torch.nn.functional.normalize(t, dim=1)
    return float(torch.cat([(b @ t.T).max(dim=1).values for b in s.split(1024)]).mean())
