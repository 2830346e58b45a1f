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


# --- against the reference packages (vendi-score, prdc, scikit-learn) on small random data -------

def test_vendi_matches_vendi_score_package_for_each_order():
    from sklearn.preprocessing import normalize
    from vendi_score import vendi
    x = rng.normal(size=(60, 8))
    k = normalize(x) @ normalize(x).T
    for q in (0.5, 1.0, 2.0, np.inf):
        ref = vendi.score_K(k, q="inf" if np.isinf(q) else q)  # score_X would ignore q
        assert metrics.vendi_score(x, q=q) == pytest.approx(ref, rel=1e-6)
    # n > d takes the dual form; n < d the primal: both agree with the n × n kernel
    assert metrics.vendi_score(x[:5]) == pytest.approx(vendi.score_K(k[:5, :5]), rel=1e-6)


def test_vendi_rbf_and_extremes():
    from vendi_score import vendi
    x = rng.normal(size=(30, 4))
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    assert metrics.vendi_score(x, kernel="rbf", bandwidth=1.5) == pytest.approx(vendi.score_K(np.exp(-d2 / (2 * 1.5**2))), rel=1e-6)
    assert metrics.vendi_score(np.tile(x[:1], (20, 1))) == pytest.approx(1.0)  # all the same: one effective sample
    assert metrics.vendi_score(np.eye(7)) == pytest.approx(7.0)  # orthogonal: all distinct


def test_precision_recall_density_coverage_match_prdc():
    from prdc import compute_prdc
    real, fake = rng.normal(size=(150, 6)), rng.normal(0.3, 1.2, size=(120, 6))
    ref = compute_prdc(real, fake, nearest_k=5)
    p, r = metrics.precision_recall(real, fake, k=5)
    d, c = metrics.density_coverage(real, fake, k=5)
    assert (p, r, d, c) == pytest.approx((ref["precision"], ref["recall"], ref["density"], ref["coverage"]))


def test_blocked_neighbours_equal_unblocked(monkeypatch):
    real, fake = rng.normal(size=(90, 5)), rng.normal(size=(70, 5))
    full = (metrics.precision_recall(real, fake), metrics.density_coverage(real, fake), metrics.nearest_earlier_distance(fake),
            metrics.lof(real, fake, k=10))
    monkeypatch.setattr(metrics, "BLOCK", 16)
    blocked = (metrics.precision_recall(real, fake), metrics.density_coverage(real, fake), metrics.nearest_earlier_distance(fake),
               metrics.lof(real, fake, k=10))
    assert blocked[:2] == full[:2]
    np.testing.assert_allclose(blocked[2], full[2])
    np.testing.assert_allclose(blocked[3], full[3])


def test_avg_knn_and_lof_match_scikit_learn():
    from sklearn.neighbors import LocalOutlierFactor
    real, x = rng.normal(size=(200, 5)), rng.normal(0, 1.5, size=(40, 5))
    d, _ = NearestNeighbors(n_neighbors=5).fit(real).kneighbors(x)
    np.testing.assert_allclose(metrics.avg_knn(real, x, k=5), d.mean(1))
    ref = -LocalOutlierFactor(n_neighbors=20, novelty=True).fit(real).score_samples(x)
    np.testing.assert_allclose(metrics.lof(real, x, k=20), ref, rtol=1e-9)
    assert metrics.lof(real, real[:1] + 50, k=20)[0] > 5  # far outside the data


def test_fid_against_the_closed_form_and_kid_against_a_direct_mmd():
    from sklearn.metrics.pairwise import polynomial_kernel
    a, b = rng.normal(size=(300, 4)), rng.normal(0.5, 2.0, size=(250, 4))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    r1 = scipy_sqrtm_psd(s1)  # tr sqrt(S1 S2) = tr sqrt(S1^½ S2 S1^½), the symmetric form
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2) - 2 * np.trace(scipy_sqrtm_psd(r1 @ s2 @ r1))
    assert metrics.fid(a, b) == pytest.approx(ref, rel=1e-6)
    assert metrics.fid(a, a) == pytest.approx(0.0, abs=1e-6)
    x, y = a[:100], b[:100]
    kxx, kyy, kxy = (polynomial_kernel(p, q, degree=3, gamma=1 / 4, coef0=1) for p, q in ((x, x), (y, y), (x, y)))
    m = 100
    ref = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    mean, std = metrics.kid(x, y, subsets=3, subset_size=1000)  # one subset = the whole sets
    assert mean == pytest.approx(ref) and std == pytest.approx(0.0, abs=1e-9)
    assert abs(metrics.kid(a[:150], a[150:], subsets=20, subset_size=100)[0]) < 0.1 * metrics.kid(a, b, subsets=20, subset_size=100)[0]


def scipy_sqrtm_psd(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_adherence():
    assert metrics.adherence([7, 7, 3, 7], 7) == 0.75
    assert metrics.adherence(np.array([1, 2]), [1, 3]) == 0.5
    with pytest.raises(NoveltynetsError, match="predictions"):
        metrics.adherence([1, 2, 3], [1, 2])


def test_metric_input_errors():
    x = rng.normal(size=(4, 3))
    with pytest.raises(NoveltynetsError, match="more than k=5"):
        metrics.precision_recall(x, x)
    with pytest.raises(NoveltynetsError, match="more than k=20"):
        metrics.lof(x, x)
    with pytest.raises(NoveltynetsError, match="dimensions differ"):
        metrics.density_coverage(rng.normal(size=(10, 3)), rng.normal(size=(10, 4)), k=2)
    with pytest.raises(NoveltynetsError, match="NaN"):
        metrics.vendi_score(np.array([[1.0, np.nan]]))
    with pytest.raises(NoveltynetsError, match="kernel"):
        metrics.vendi_score(x, kernel="cos")
    with pytest.raises(NoveltynetsError, match="all zero"):
        metrics.vendi_score(np.zeros((3, 2)))
    with pytest.raises(NoveltynetsError, match="at least 2"):
        metrics.fid(x[:1], x)


def test_greedy_cover_counts_modes_in_order():
    x = np.array([[0.0], [0.5], [2.0], [2.1], [5.0], [1.2]])
    assert metrics.greedy_cover(x, 1.0).tolist() == [1, 1, 2, 2, 3, 3]  # 1.2 lies within 1 of the centre 2.0
    rng = np.random.default_rng(0)
    y = rng.normal(size=(60, 3))
    centres, expected = [], []
    for row in y:  # the definition, written out
        if not centres or min(np.linalg.norm(row - c) for c in centres) >= 1.5:
            centres.append(row)
        expected.append(len(centres))
    assert metrics.greedy_cover(y, 1.5).tolist() == expected
    with pytest.raises(NoveltynetsError):
        metrics.greedy_cover(y, 0)
