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


def test_the_denoiser_distance_is_lpips_like_on_the_models_own_features_and_the_judge_is_refused(tiny_unet):
    from noveltynets.minority import DenoiserDistance, get_distance

    dist = get_distance("denoiser", model=type("M", (), {"unet": tiny_unet})())
    assert isinstance(dist, DenoiserDistance)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1, torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    d = dist(x, y)
    assert dist(x, x).abs().max() < 1e-6 and d.shape == (3,) and (d > 0).all() and torch.allclose(d, dist(y, x))
    assert (dist(x, x + 0.05 * (y - x)) < d).all()
    with pytest.raises(NoveltynetsError, match="judge must not label"):
        get_distance("perceptual")


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
    """Each image is reconstructed under its own class: its score is the one it gets when every image
    has that class (whatever its batch), the class changes the score, and no class means the null class."""
    from noveltynets.models import NULL_CLASS

    m = SimpleNamespace(unet=tiny_unet, image_shape=(1, 8, 8), alphas_cumprod=ABAR)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1
    classes = torch.tensor([0, 1, 2, 0, 1, 2])
    s = minority_score(m, x, classes=classes, distance="l2", batch_size=4)  # batches of 4 and 2: classes must follow
    assert s.shape == (6,) and torch.isfinite(s).all() and (s > 0).all()
    each = {k: minority_score(m, x, classes=torch.full((6,), k), distance="l2", batch_size=6) for k in (0, 1, 2, NULL_CLASS)}
    assert torch.allclose(s, torch.stack([each[int(c)][i] for i, c in enumerate(classes)]), atol=1e-6)
    for a, b in ((0, 1), (1, 2), (0, NULL_CLASS)):
        assert (each[a] - each[b]).abs().min() > 1e-6  # the class reaches the denoiser: every image's score moves
    assert torch.allclose(minority_score(m, x, distance="l2"), each[NULL_CLASS])


def test_cli_minority_score_writes_scores_and_classes(tmp_path):
    out = tmp_path / "scores.npz"
    run = CliRunner().invoke(app, ["minority", "score", "--class", "7", "--levels", "3", "--out", str(out), "--no-progress",
                                   "--grids", str(tmp_path / "grids")])
    assert run.exit_code == 0, run.output
    from PIL import Image
    for name in ("highest", "lowest"):
        assert Image.open(tmp_path / "grids" / f"{name}.png").size == (8 * 34 + 2, 8 * 34 + 2)  # 8×8 images of 32 px, 2 px gaps
    z = np.load(out)
    assert len(z["scores"]) == 450 and (z["digits"] == 7).all() and sorted(np.bincount(z["classes"])) == [150, 150, 150]
    hi, lo = z["scores"][z["classes"] == 2], z["scores"][z["classes"] == 0]
    assert hi.min() >= lo.max() and str(z["distance"]) == "l2"
    again = CliRunner().invoke(app, ["minority", "score", "--class", "7", "--out", str(out)])
    assert again.exit_code == 2 and "exists" in again.output
    trained = CliRunner().invoke(app, ["minority", "train", "--scores", str(out), "--out", str(tmp_path / "clf"), "--steps", "3",
                                       "--batch-size", "8", "--no-progress"])
    assert trained.exit_code == 0, trained.output
    from noveltynets.minority import load_classifier
    clf = load_classifier(tmp_path / "clf")
    assert clf.num_classes == 3 and clf.config["model_id"].startswith("mnist5k-unet@")
    lower_median = lambda v: float(np.sort(v)[(len(v) - 1) // 2])  # torch.median's: the lower middle value of an even count
    medians = [lower_median(z["scores"][z["classes"] == lv]) for lv in range(3)]  # r_l of minority-mix
    assert np.allclose(clf.config["level_scores"], medians) and np.allclose(clf.config["thresholds"], z["thresholds"])
    assert clf.config["level_scores"] == sorted(clf.config["level_scores"])
    missing = CliRunner().invoke(app, ["minority", "train", "--scores", str(tmp_path / "none.npz"), "--out", str(tmp_path / "c2")])
    assert missing.exit_code == 2 and "cannot read minority scores" in missing.output
    for args, msg in ((["--split", "test"], "unknown split"), (["--levels", "1"], "--levels"), (["--out", str(tmp_path / "x.csv")], ".npz")):
        bad = CliRunner().invoke(app, ["minority", "score", "--class", "7", "--out", str(tmp_path / "y.npz"), *args])
        assert bad.exit_code == 2 and msg in bad.output, bad.output


def test_noise_classifier_learns_a_visible_class_and_round_trips(tmp_path):
    """Class = brightness of the image (3 levels): easy at low noise, chance at t ≈ T."""
    from noveltynets.minority import load_classifier, train_classifier

    g = torch.Generator().manual_seed(3)
    labels = torch.arange(300) % 3
    images = (labels.view(-1, 1, 1, 1).float() - 1) * 0.8 + 0.1 * torch.randn(300, 1, 8, 8, generator=g)
    model, log = train_classifier(images, labels, ABAR, steps=150, batch_size=32, block_out_channels=(8, 16), norm_num_groups=4)
    assert model.num_classes == 3 and log[-1]["acc_t0.1"] > 0.9 and log[-1]["acc_t0.9"] < log[-1]["acc_t0.1"]
    model.save(tmp_path / "clf", log)
    back = load_classifier(tmp_path / "clf")
    x, t = torch.randn(5, 1, 8, 8), torch.tensor([0, 10, 100, 500, 999])
    assert torch.allclose(back(x, t), model(x, t), atol=1e-6)
    (tmp_path / "clf" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(NoveltynetsError, match="cannot load minority classifier"):
        load_classifier(tmp_path / "clf")
    with pytest.raises(NoveltynetsError, match="N labels"):
        train_classifier(images, labels[:10], ABAR)


def test_a_class_conditional_classifier_uses_the_class_and_drops_it_for_no_class(tmp_path):
    """Label = bright XOR c: unreadable from the image alone, easy given the class c."""
    from noveltynets.minority import load_classifier, train_classifier

    g = torch.Generator().manual_seed(4)
    bright, cond = torch.arange(400) % 2, (torch.arange(400) // 2) % 2
    images = (bright.view(-1, 1, 1, 1).float() * 1.6 - 0.8) + 0.1 * torch.randn(400, 1, 8, 8, generator=g)
    labels = bright ^ cond
    model, log = train_classifier(images, labels, ABAR, steps=200, batch_size=32, conditions=cond, num_conditions=2,
                                  block_out_channels=(8, 16), norm_num_groups=4)
    assert model.num_conditions == 2 and log[-1]["acc_t0.1"] > 0.9
    assert 0.3 < log[-1]["acc_nocond_t0.5"] < 0.7  # without the class the label is a coin flip
    model.save(tmp_path / "clf", log)
    back = load_classifier(tmp_path / "clf")
    x, t, c = torch.randn(4, 1, 8, 8), torch.tensor([5, 50, 500, 900]), torch.tensor([0, 1, 2, 1])  # 2 = no class
    assert torch.allclose(back(x, t, c), model(x, t, c), atol=1e-6)
    assert torch.allclose(back(x, t), back(x, t, torch.full((4,), 2)), atol=1e-6)
    with pytest.raises(NoveltynetsError, match="conditions in"):
        train_classifier(images, labels, ABAR, conditions=cond + 5, num_conditions=2)
