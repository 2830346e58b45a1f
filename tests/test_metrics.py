"""Metric functions against brute force / scikit-learn on small data."""

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from noveltynets import metrics
from noveltynets.errors import NoveltynetsError

rng = np.random.default_rng(0)


def test_nearest_earlier_distance_matches_brute_force():
    x = rng.normal(size=(40, 5))
    d = metrics.nearest_earlier_distance(x)
    assert np.isinf(d[0])
    for i in range(1, len(x)):
        assert d[i] == pytest.approx(np.linalg.norm(x[:i] - x[i], axis=1).min())


def test_near_dup_rate_and_threshold():
    real = rng.normal(size=(200, 4))
    nn = NearestNeighbors(n_neighbors=2).fit(real)
    tau = metrics.near_dup_threshold(real)
    assert tau == pytest.approx(np.percentile(nn.kneighbors(real)[0][:, 1], 10))
    x = rng.normal(size=(10, 4))
    copies = np.concatenate([x, x + 1e-6])  # the second half duplicates the first
    assert metrics.near_dup_rate(copies, tau) >= 0.5 - 1e-9
    assert metrics.near_dup_rate(x * 100, tau) == 0.0


def test_memorization_rate_counts_copies_of_training_points():
    train = rng.normal(size=(100, 16))
    copies = train[:10] + 0.01 * rng.normal(size=(10, 16))
    fresh = rng.normal(size=(30, 16))
    assert metrics.memorization_rate(copies, train) == 1.0
    assert metrics.memorization_rate(fresh, train) == 0.0
    assert metrics.memorization_rate(np.concatenate([copies, fresh]), train) == pytest.approx(10 / 40)
    d, _ = NearestNeighbors(n_neighbors=2).fit(train).kneighbors(fresh)
    assert metrics.memorization_rate(fresh, train, ratio=0.99) == pytest.approx(np.mean(d[:, 0] < 0.99 * d[:, 1]))


def test_nearest_train_distance():
    train = rng.normal(size=(50, 8))
    x = rng.normal(size=(7, 8))
    d, _ = NearestNeighbors(n_neighbors=1).fit(train).kneighbors(x)
    assert metrics.nearest_train_distance(x, train) == pytest.approx(d.mean())
    assert metrics.nearest_train_distance(train, train) == pytest.approx(0.0, abs=1e-6)


def test_nearest_train_similarity():
    train = rng.normal(size=(50, 8))
    assert metrics.nearest_train_similarity(train[:5] * 3, train) == pytest.approx(1.0)
    x = rng.normal(size=(7, 8))
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (train / np.linalg.norm(train, axis=1, keepdims=True)).T
    assert metrics.nearest_train_similarity(x, train) == pytest.approx(cos.max(1).mean())


def test_precision_recall_of_identical_sets_and_of_far_samples():
    real = rng.normal(size=(100, 3))
    assert metrics.precision_recall(real, real.copy()) == (1.0, 1.0)
    p, r = metrics.precision_recall(real, real + 100)
    assert p == 0.0 and r == 0.0


def test_bad_features_raise():
    with pytest.raises(NoveltynetsError, match="2-D"):
        metrics.memorization_rate(np.zeros(3), np.zeros((3, 3)))
    with pytest.raises(NoveltynetsError, match="NaN"):
        metrics.nearest_earlier_distance(np.full((3, 2), np.nan))
    with pytest.raises(NoveltynetsError, match="dimensions differ"):
        metrics.memorization_rate(np.zeros((3, 2)), np.zeros((3, 3)))
