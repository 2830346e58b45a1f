"""Minority score (Um & Ye 2024): Tweedie reconstruction, distances, quantile classes, CLI."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from noveltynets.cli import app
from noveltynets.errors import NoveltynetsError
from noveltynets.minority import FeatureDistance, default_levels, minority_score, quantile_classes, timestep_at
from noveltynets.models import build_scheduler
from noveltynets.models.embedder import load_eval_embedder

ABAR = build_scheduler().alphas_cumprod


class RestoreTo:
    """A fake eps-model whose one-shot Tweedie estimate is ``target(x_t)`` exactly:
    eps = (x_t − sqrt(ᾱ)·target) / sqrt(1 − ᾱ)."""

    def __init__(self, target):
        self.target = target
        self.image_shape = (1, 8, 8)
        self.alphas_cumprod = ABAR

    def unet(self, xt, t, class_labels=None):
        a = ABAR[int(t[0])]
        return SimpleNamespace(sample=(xt - a.sqrt() * self.target(xt)) / (1 - a).sqrt())


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(40, 1, 8, 8, generator=g) * 2 - 1).clamp(-1, 1)


def test_a_perfect_reconstruction_scores_zero_and_a_mean_reconstruction_ranks_atypical_images_high(images):
    oracle = RestoreTo(lambda xt: images)  # knows which x0 each x_t came from (one batch of all images)
    assert minority_score(oracle, images, distance="l2", batch_size=len(images)).abs().max() < 1e-8
    mean = images.mean(0, keepdim=True)
    scores = minority_score(RestoreTo(lambda xt: mean.expand_as(xt)), images, distance="l2")
    far = (images - mean).pow(2).flatten(1).mean(1)
    assert torch.allclose(scores, far, atol=1e-5)  # the score is the distance to what the model restores to
    assert scores.argsort().tolist() == far.argsort().tolist()


def test_scores_do_not_depend_on_batch_size_and_average_draws(images):
    m = RestoreTo(lambda xt: torch.zeros_like(xt))  # restores to a blank: x̂0 = 0 whatever the noise
    a = minority_score(m, images, distance="l1", batch_size=7)
    b = minority_score(m, images, distance="l1", batch_size=40)
    assert torch.allclose(a, b) and torch.allclose(a, images.abs().flatten(1).mean(1))
    noisy = RestoreTo(lambda xt: xt.clamp(-1, 1))  # keeps the noise: scores depend on the draws
    one, other = minority_score(noisy, images, distance="l2", seed=0), minority_score(noisy, images, distance="l2", seed=1)
    assert not torch.allclose(one, other)
    assert torch.allclose(minority_score(noisy, images, distance="l2", batch_size=5, seed=0), one)
    three = minority_score(noisy, images, distance="l2", draws=3)
    singles = [minority_score(noisy, images, distance="l2", seed=k * len(images)) for k in range(3)]
    assert torch.allclose(three, torch.stack(singles).mean(0), atol=1e-6)


def test_bad_inputs_are_clear_errors(images):
    m = RestoreTo(lambda xt: xt)
    with pytest.raises(NoveltynetsError, match="images must be"):
        minority_score(m, images[:, :, :4])
    with pytest.raises(NoveltynetsError, match="one class per image"):
        minority_score(m, images, classes=torch.zeros(3))
    with pytest.raises(NoveltynetsError, match="fraction"):
        minority_score(m, images, t=0.0)
    with pytest.raises(NoveltynetsError, match="unknown distance"):
        minority_score(m, images, distance="clip")
    assert timestep_at(0.9, 1000) == 899 and timestep_at(1.0, 1000) == 999


def test_feature_distance_is_lpips_like():
    dist = FeatureDistance(load_eval_embedder().body)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(4, 1, 32, 32, generator=g) * 2 - 1, torch.rand(4, 1, 32, 32, generator=g) * 2 - 1
    assert dist(x, x).abs().max() < 1e-6
    d = dist(x, y)
    assert d.shape == (4,) and (d > 0).all() and torch.allclose(d, dist(y, x))
    assert (dist(x, x + 0.05 * (y - x)) < d).all()  # a small step toward y is closer than y


def test_quantile_classes_are_balanced_and_ordered():
    scores = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    labels, thresholds = quantile_classes(scores, 4)
    assert labels.bincount().tolist() == [250, 250, 250, 250] and len(thresholds) == 3
    order = scores.argsort()
    assert (labels[order].diff() >= 0).all()  # higher score, higher (rarer) class
    with pytest.raises(NoveltynetsError, match="levels"):
        quantile_classes(scores, 1)
    assert default_levels(4500) == 10 and default_levels(100) == 2


def test_conditional_scores_with_a_real_unet(tiny_unet):
    m = SimpleNamespace(unet=tiny_unet, image_shape=(1, 8, 8), alphas_cumprod=ABAR)
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    s = minority_score(m, x, classes=torch.tensor([0, 1, 2, 0, 1, 2]), distance="l2", batch_size=4)
    assert s.shape == (6,) and torch.isfinite(s).all() and (s > 0).all()


def test_cli_minority_score_writes_scores_and_classes(tmp_path):
    out = tmp_path / "scores.npz"
    run = CliRunner().invoke(app, ["minority", "score", "--class", "7", "--levels", "3", "--out", str(out), "--no-progress"])
    assert run.exit_code == 0, run.output
    z = np.load(out)
    assert len(z["scores"]) == 450 and (z["digits"] == 7).all() and sorted(np.bincount(z["classes"])) == [150, 150, 150]
    hi, lo = z["scores"][z["classes"] == 2], z["scores"][z["classes"] == 0]
    assert hi.min() >= lo.max() and str(z["distance"]) == "perceptual"
    again = CliRunner().invoke(app, ["minority", "score", "--class", "7", "--out", str(out)])
    assert again.exit_code == 2 and "exists" in again.output
    for args, msg in ((["--split", "test"], "unknown split"), (["--levels", "1"], "--levels"), (["--out", str(tmp_path / "x.csv")], ".npz")):
        bad = CliRunner().invoke(app, ["minority", "score", "--class", "7", "--out", str(tmp_path / "y.npz"), *args])
        assert bad.exit_code == 2 and msg in bad.output, bad.output
