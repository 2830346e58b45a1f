"""Pure metric functions over feature arrays (numpy or torch in, floats or numpy arrays out); see BENCHMARK.md.

Neighbours are exact: Euclidean distances in float64, computed in blocks of ``BLOCK`` query rows, so
memory stays O(BLOCK × N) and 100k × 100k needs no N × N matrix (the work is still O(N²)). Exact
float64 distances keep ties and radii identical to the reference implementations the tests compare
with (faiss' float32 inner-product distances are not exactly 0 for a point and itself). Every
function checks its input and raises
``NoveltynetsError`` for arrays that are not 2-D, hold NaN/Inf, differ in dimension, or are too
few for the requested k.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch

from .errors import NoveltynetsError

BLOCK = 1024


def _check(*arrays, min_rows: int = 1) -> list[torch.Tensor]:
    out = []
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2:
            raise NoveltynetsError(f"features must be 2-D (N, D), got shape {a.shape}")
        if len(a) < min_rows:
            raise NoveltynetsError(f"need at least {min_rows} feature rows, got {len(a)}")
        if not np.isfinite(a).all():
            raise NoveltynetsError("features contain NaN or Inf")
        out.append(torch.from_numpy(a))
    if len({t.shape[1] for t in out}) > 1:
        raise NoveltynetsError(f"feature dimensions differ: {[t.shape[1] for t in out]}")
    return out


def _need(x: torch.Tensor, k: int, what: str = "points") -> None:
    if k < 1:
        raise NoveltynetsError(f"k must be at least 1, got {k}")
    if len(x) <= k:
        raise NoveltynetsError(f"need more than k={k} {what}, got {len(x)}")


def _blocks(q: torch.Tensor, base: torch.Tensor):
    """Yield (start, distances of q[start:start+BLOCK] to every row of base)."""
    for a in range(0, len(q), BLOCK):
        yield a, torch.cdist(q[a:a + BLOCK], base)


def _knn(q: torch.Tensor, base: torch.Tensor, k: int, exclude_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, indices) of the k nearest rows of ``base`` for each row of ``q``, nearest first.
    ``exclude_self``: q is base, and each point is not its own neighbour."""
    ds, ix = [], []
    for a, d in _blocks(q, base):
        if exclude_self:
            r = torch.arange(len(d))
            d[r, a + r] = math.inf
        v, i = d.topk(k, dim=1, largest=False)
        ds.append(v)
        ix.append(i)
    return torch.cat(ds), torch.cat(ix)


def _knn_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point."""
    _need(x, k)
    return _knn(x, x, k, exclude_self=True)[0][:, -1]


def _ball_counts(q: torch.Tensor, base: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """For each row of q, how many rows j of base have it inside their ball: d(q, base_j) <= radii_j."""
    return torch.cat([(d <= radii[None, :]).sum(dim=1) for _, d in _blocks(q, base)])


# --- near-duplicates and novelty against history -------------------------------------------------

def nearest_earlier_distance(samples) -> np.ndarray:
    """For each sample i > 0, the distance to its nearest earlier sample j < i (the first is inf)."""
    (x,) = _check(samples)
    out = []
    for a, d in _blocks(x, x):
        i = torch.arange(len(d))[:, None] + a
        d = d.masked_fill(torch.arange(len(x))[None, :] >= i, math.inf)
        out.append(d.min(dim=1).values)
    return torch.cat(out).numpy()


def near_dup_threshold(real, q: float = 10.0) -> float:
    """τ: the q-th percentile of real nearest-neighbour distances."""
    (x,) = _check(real)
    return float(np.percentile(_knn_radius(x, 1).numpy(), q))


def near_dup_rate(samples, tau: float) -> float:
    """Share of samples (after the first) closer than ``tau`` to some earlier sample."""
    d = nearest_earlier_distance(samples)[1:]
    return float((d < tau).mean()) if len(d) else 0.0


def history_novelty(samples) -> float:
    """Mean distance from each sample (after the first) to its nearest earlier sample."""
    d = nearest_earlier_distance(samples)[1:]
    return float(d.mean()) if len(d) else 0.0


def greedy_cover(samples, radius: float) -> np.ndarray:
    """Distinct modes found as samples arrive: sample i opens a new mode when it is at least ``radius``
    from the centre of every mode opened before it (a greedy cover, in sampling order). Returns the
    cumulative count (N,): entry i is the number of modes among samples 0..i."""
    (x,) = _check(samples)
    if not radius > 0:
        raise NoveltynetsError(f"cover radius must be positive, got {radius}")
    centres = torch.empty(0, x.shape[1], dtype=x.dtype)
    counts = np.zeros(len(x), dtype=np.int64)
    for i, row in enumerate(x):
        if len(centres) == 0 or torch.cdist(row[None], centres).min() >= radius:
            centres = torch.cat([centres, row[None]])
        counts[i] = len(centres)
    return counts


# --- diversity -----------------------------------------------------------------------------------

def _entropy_q(p: np.ndarray, q: float) -> float:
    p = p[p > 1e-12]
    p = p / p.sum()
    if q == 1:
        return float(-(p * np.log(p)).sum())
    if math.isinf(q):
        return float(-np.log(p.max()))
    return float(np.log((p ** q).sum()) / (1 - q))


def vendi_score(features, q: float = 1.0, kernel: str = "cosine", bandwidth: float | None = None) -> float:
    """Vendi score (Friedman & Dieng 2023): exp of the order-q entropy of the eigenvalues of K/n.

    ``kernel="cosine"``: K = normalised features' Gram matrix; when n > d the eigenvalues come
    from the d × d matrix XᵀX/n (the dual form), so n can be 10⁶. ``kernel="rbf"``:
    K = exp(−‖x−y‖² / 2σ²), σ = ``bandwidth`` (default: the median pairwise distance); needs the
    n × n matrix. Order q ≥ 0 (1 = Shannon, ``math.inf`` = −log of the largest eigenvalue)."""
    (x,) = _check(features, min_rows=1)
    if q < 0:
        raise NoveltynetsError(f"Vendi order q must be >= 0, got {q}")
    n = len(x)
    if kernel == "cosine":
        norms = x.norm(dim=1, keepdim=True)
        if (norms == 0).any():
            raise NoveltynetsError("cosine Vendi score: some feature rows are all zero")
        x = x / norms
        m = x.T @ x if n > x.shape[1] else x @ x.T
    elif kernel == "rbf":
        d2 = torch.cdist(x, x).square()
        if bandwidth is None:
            off = d2[~torch.eye(n, dtype=torch.bool)]
            bandwidth = float(off.sqrt().median()) if len(off) else 1.0
        if bandwidth <= 0:
            raise NoveltynetsError(f"RBF bandwidth must be positive, got {bandwidth}")
        m = torch.exp(-d2 / (2 * bandwidth**2))
    else:
        raise NoveltynetsError(f"unknown Vendi kernel {kernel!r}; use cosine or rbf")
    w = np.linalg.eigvalsh((m / n).numpy())
    return math.exp(_entropy_q(np.clip(w, 0, None), q))


# --- fidelity and coverage (real = reference set) ----------------------------------------------

def inside_real_manifold(real, fake, k: int = 5) -> np.ndarray:
    """Per generated point: whether it lies in some real point's k-NN ball (improved precision is the mean of this)."""
    r, f = _check(real, fake)
    _need(r, k, "real points")
    return (_ball_counts(f, r, _knn_radius(r, k)) > 0).numpy()


def precision_recall(real, fake, k: int = 5) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls."""
    r, f = _check(real, fake)
    _need(r, k, "real points")
    _need(f, k, "generated points")
    rr, fr = _knn_radius(r, k), _knn_radius(f, k)
    precision = (_ball_counts(f, r, rr) > 0).double().mean().item()
    recall = (_ball_counts(r, f, fr) > 0).double().mean().item()
    return precision, recall


def density_coverage(real, fake, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) with the real points' k-NN balls."""
    r, f = _check(real, fake)
    _need(r, k, "real points")
    rr = _knn_radius(r, k)
    density = _ball_counts(f, r, rr).double().mean().item() / k
    nearest_fake = _knn(r, f, 1)[0][:, 0]
    coverage = (nearest_fake < rr).double().mean().item()
    return density, coverage


def avg_knn(real, samples, k: int = 5) -> np.ndarray:
    """Per sample: mean distance to its k nearest real points (AvgkNN, as in Um & Ye 2024)."""
    r, s = _check(real, samples)
    if len(r) < k:
        raise NoveltynetsError(f"need at least k={k} real points, got {len(r)}")
    return _knn(s, r, k)[0].mean(dim=1).numpy()


def lof(real, samples, k: int = 20) -> np.ndarray:
    """Per sample: local outlier factor (Breunig et al. 2000) w.r.t. the real points, k neighbours
    (~1 inside the data, larger outside); scikit-learn's ``-LocalOutlierFactor(novelty=True).score_samples``."""
    r, s = _check(real, samples)
    _need(r, k, "real points")
    rd, ri = _knn(r, r, k, exclude_self=True)
    k_dist = rd[:, -1]

    def lrd(d, i):  # local reachability density from neighbour distances d and indices i
        return 1.0 / (torch.maximum(d, k_dist[i]).mean(dim=1) + 1e-10)

    lrd_real = lrd(rd, ri)
    sd, si = _knn(s, r, k)
    return (lrd_real[si].mean(dim=1) / lrd(sd, si)).numpy()


def _stats(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = x.numpy()
    return x.mean(axis=0), np.cov(x, rowvar=False)


def fid(real, fake) -> float:
    """Fréchet distance between Gaussians fitted to the two feature sets (Heusel et al. 2017)."""
    r, f = _check(real, fake, min_rows=2)
    (m1, s1), (m2, s2) = _stats(r), _stats(f)
    covmean = scipy.linalg.sqrtm(np.atleast_2d(s1) @ np.atleast_2d(s2))
    if not np.isfinite(covmean).all():  # singular product: regularise as pytorch-fid does
        eps = np.eye(len(m1)) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def kid(real, fake, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance (Bińkowski et al. 2018): unbiased MMD² with the kernel
    (x·y/d + 1)³, mean and std over ``subsets`` random subsets of ``subset_size`` (capped by the
    smaller set)."""
    r, f = _check(real, fake, min_rows=2)
    m = min(subset_size, len(r), len(f))
    d = r.shape[1]
    g = np.random.default_rng(seed)
    vals = []
    for _ in range(subsets):
        x, y = r[g.choice(len(r), m, replace=False)], f[g.choice(len(f), m, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off = ~torch.eye(m, dtype=torch.bool)
        vals.append((kxx[off].mean() + kyy[off].mean() - 2 * kxy.mean()).item())
    return float(np.mean(vals)), float(np.std(vals))


def adherence(predicted, requested) -> float:
    """Share of samples whose predicted class equals the requested one."""
    p, q = np.asarray(predicted).reshape(-1), np.asarray(requested).reshape(-1)
    if q.size == 1:
        q = np.full_like(p, q.item())
    if p.shape != q.shape or p.size == 0:
        raise NoveltynetsError(f"adherence: {p.size} predictions for {q.size} requested classes")
    return float((p == q).mean())


# --- memorization of the training set ------------------------------------------------------------

def _two_nearest(samples, train) -> torch.Tensor:
    """(N, 2): distances from each sample to its nearest and second-nearest training point."""
    s, t = _check(samples, train)
    if len(t) < 2:
        raise NoveltynetsError(f"need at least 2 training points, got {len(t)}")
    return _knn(s, t, 2)[0]


def memorization_rate(samples, train, ratio: float = 1 / 3) -> float:
    """Share of samples whose nearest training point is < ``ratio`` × as far as the second nearest
    (pixel L2 on flattened images in BENCHMARK.md; Yoon et al. 2023's criterion)."""
    d = _two_nearest(samples, train)
    return float((d[:, 0] < ratio * d[:, 1]).double().mean())


def nearest_train_distance(samples, train) -> float:
    """Mean distance from each sample to its nearest training point."""
    return float(_two_nearest(samples, train)[:, 0].mean())


def nearest_train_similarity(samples, train) -> float:
    """Mean cosine similarity between each sample and its nearest training point (by cosine)."""
    s, t = _check(samples, train)
    s, t = torch.nn.functional.normalize(s, dim=1), torch.nn.functional.normalize(t, dim=1)
    return float(torch.cat([(b @ t.T).max(dim=1).values for b in s.split(BLOCK)]).mean())
