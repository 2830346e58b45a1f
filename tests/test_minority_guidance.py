"""Minority guidance: classifier guidance on x_t toward a quantile class (Um & Ye 2024, §3.3)."""

import pytest
import torch

from noveltynets.errors import NoveltynetsError
from noveltynets.guidance import GuidanceTerm
from noveltynets.session import parse_guide
from noveltynets.minority import train_classifier
from noveltynets.minority.guidance import MinorityGuidance
from noveltynets.models import build_scheduler
from noveltynets.sampling import GuidedModel, generate

ABAR = build_scheduler().alphas_cumprod
LEVELS = torch.tensor([-0.8, 0.0, 0.8])  # three kinds of image: dark, grey, bright (class = index)
SPREAD = 0.1


def three_kinds(n: int, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(n) % 3
    noise = SPREAD * torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    return LEVELS[labels].view(-1, 1, 1, 1) + noise, labels


@pytest.fixture(scope="module")
def brightness_classifier(tmp_path_factory):
    """A noise-conditioned classifier of the three kinds, saved as 'noveltynets minority train' saves one."""
    images, labels = three_kinds(300)
    model, log = train_classifier(images, labels, ABAR, steps=150, batch_size=32, block_out_channels=(8, 16), norm_num_groups=4)
    assert log[-1]["acc_t0.1"] > 0.9
    path = tmp_path_factory.mktemp("clf")
    model.save(path, log)
    return path


def mixture_eps(x: torch.Tensor, t: torch.Tensor, extra: dict) -> torch.Tensor:
    """The exact eps of the data distribution of :func:`three_kinds` (equal mixture of N(level, SPREAD²·I))."""
    a = ABAR[t].view(-1, 1, 1, 1, 1)  # (B, kind, C, H, W)
    v = a * SPREAD ** 2 + 1 - a  # per-pixel variance of x_t given the kind
    levels = LEVELS.view(1, 3, 1, 1, 1)
    diff = x.unsqueeze(1) - a.sqrt() * levels
    resp = torch.softmax(-diff.pow(2).flatten(2).sum(2) / (2 * v.view(-1, 1)), dim=1)  # p(kind | x_t)
    x0 = (resp.view(-1, 3, 1, 1, 1) * (levels + a.sqrt() * SPREAD ** 2 / v * diff)).sum(1)  # E[x0 | x_t]
    a = a.squeeze(1)
    return (x - a.sqrt() * x0) / (1 - a).sqrt()


def test_guidance_is_classifier_guidance_on_x_t_in_both_gradient_modes(brightness_classifier):
    term = parse_guide(f"minority:classifier={brightness_classifier},level=-1,scale=3")
    assert isinstance(term, MinorityGuidance) and term.target == 2 and term.space == "xt"
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([900, 600, 300, 50])
    extra = {"classes": torch.full((4,), 10), "i": 1, "num_steps": 10, "seeds": [0, 1, 2, 3]}
    with torch.enable_grad():
        xr = x.clone().requires_grad_(True)
        logp = torch.log_softmax(term.load("cpu")(xr, t), 1)[:, 2]
        grad = torch.autograd.grad(logp.sum(), xr)[0]
    a = ABAR[t].view(-1, 1, 1, 1)
    expected = mixture_eps(x, t, extra) - (1 - a).sqrt() * 3 * grad  # ADM: eps − sqrt(1 − ᾱ)·w·∇_{x_t} log p(l̃ | x_t)
    for mode in ("x0", "exact"):
        got = GuidedModel(mixture_eps, [term], ABAR, grad_mode=mode)(x, t, dict(extra))
        assert torch.allclose(got, expected, atol=1e-5), mode
    assert grad.abs().sum() > 0


def test_guidance_moves_samples_to_the_chosen_class_and_more_with_scale(brightness_classifier, scheduler_factory):
    seeds = list(range(45))

    def kinds(spec: str | None) -> torch.Tensor:
        terms = [parse_guide(spec)] if spec else []
        model = GuidedModel(mixture_eps, terms, ABAR) if terms else mixture_eps
        run = generate(model, scheduler_factory("ddim", 10), seeds, [10] * len(seeds), (1, 8, 8), batch_size=45)
        return (run.images.mean((1, 2, 3)).view(-1, 1) - LEVELS).abs().argmin(1).bincount(minlength=3) / len(seeds)

    plain = kinds(None)
    assert (plain > 0.15).all()  # the sampler itself reaches all three kinds
    clf = str(brightness_classifier)
    bright = [kinds(f"minority:classifier={clf},level=2,scale={w}")[2] for w in (0.5, 2, 8)]
    # measured: plain 0.20 bright; guided 0.67, 0.82, 0.84 (the rest had settled at the first steps, where
    # the classifier is near chance)
    assert plain[2] + 0.3 < bright[0] <= bright[1] <= bright[2] and bright[2] > 0.75
    assert kinds(f"minority:classifier={clf},level=0,scale=8")[0] > 0.8  # and toward the other end (measured 0.91)


def test_settings_round_trip_and_bad_settings_are_clear_errors(brightness_classifier, tmp_path):
    term = parse_guide(f"minority:classifier={brightness_classifier},level=1,scale=0.5,stop=0.9")
    assert GuidanceTerm.from_dict(term.to_dict()) == term and term.to_dict()["level"] == 1
    with pytest.raises(NoveltynetsError, match=r"level must be in \[-3, 2\]"):
        parse_guide(f"minority:classifier={brightness_classifier},level=3")
    with pytest.raises(NoveltynetsError, match="no classifier at"):
        parse_guide(f"minority:classifier={tmp_path / 'none'}")
    with pytest.raises(NoveltynetsError, match="not a valid int"):
        parse_guide("minority:level=rare")


def test_shipped_classifier_guides_the_default_model_in_the_cli_and_the_benchmark(tmp_path):
    from typer.testing import CliRunner

    from noveltynets.bench.runner import BenchConfig, run_bench
    from noveltynets.cli import app
    from noveltynets.models import load_model

    term = parse_guide("minority")  # the shipped classifier, its rarest class
    assert term.num_classes == 10 and term.target == 9
    run = CliRunner().invoke(app, ["sample", "--n", "2", "--guide", "minority:scale=4", "--out", str(tmp_path / "s"),
                                   "--steps", "3", "--no-progress"])
    assert run.exit_code == 0, run.output
    bad = CliRunner().invoke(app, ["sample", "--n", "2", "--guide", "minority:level=10", "--out", str(tmp_path / "t")])
    assert bad.exit_code == 2 and "level must be in [-10, 9]" in bad.output
    cfg = BenchConfig(methods=["plain", "minority:scale=4"], classes=["uncond", 7], n=8, steps=4, batch_size=8)
    result = run_bench(cfg, load_model())
    rows = result["rows"]
    assert [(r["class"], r["setting"]) for r in rows] == [("uncond", "plain"), ("uncond", "minority:scale=4"),
                                                          (7, "plain"), (7, "minority:scale=4")]
    assert "adherence" not in rows[0] and "adherence" in rows[2]  # no class to adhere to when unconditional
    assert "adherence" not in result["means"][0] and result["means"][0]["n_classes"] == 2
    for c in ("uncond", 7):
        assert not torch.equal(result["images"]["plain"][c], result["images"]["minority:scale=4"][c])
    with pytest.raises(NoveltynetsError, match="'uncond'"):
        BenchConfig(classes=["all"]).validate()


def test_a_class_conditional_classifier_is_given_the_sampled_class(tmp_path):
    from noveltynets.minority import NoiseClassifier

    torch.manual_seed(0)
    NoiseClassifier(4, sample_size=8, block_out_channels=(8, 16), norm_num_groups=4, num_conditions=10).save(tmp_path / "c")
    term = parse_guide(f"minority:classifier={tmp_path / 'c'},scale=2")
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([800, 400, 100])
    classes = torch.tensor([7, 10, 2])  # 10: unconditional sampling's null class
    clf = term.load("cpu")
    with torch.enable_grad():
        xr = x.clone().requires_grad_(True)
        grad = torch.autograd.grad(torch.log_softmax(clf(xr, t, classes), 1)[:, 3].sum(), xr)[0]
    extra = {"classes": classes, "i": 0, "num_steps": 10, "seeds": [0, 1, 2]}
    a = ABAR[t].view(-1, 1, 1, 1)
    got = GuidedModel(mixture_eps, [term], ABAR)(x, t, extra)
    assert torch.allclose(got, mixture_eps(x, t, extra) - (1 - a).sqrt() * 2 * grad, atol=1e-5)
    assert not torch.allclose(clf(x, t, torch.tensor([7, 7, 7])), clf(x, t, torch.tensor([2, 2, 2])))


def test_a_classifier_for_another_model_is_refused_and_a_rewritten_folder_is_reloaded(brightness_classifier, tmp_path):
    import json
    import shutil

    from noveltynets.session import open_session

    folder = tmp_path / "clf"
    shutil.copytree(brightness_classifier, folder)
    term = parse_guide(f"minority:classifier={folder}")
    model = type("Model", (), {"model_id": "some-model@1234"})()
    term.check_model(model)  # a classifier that records no model serves any
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_id": "other-model@9999"}))
    assert term.load("cpu").config["model_id"] == "other-model@9999"  # the folder changed: loaded again
    with pytest.raises(NoveltynetsError, match="trained for model other-model@9999, not some-model@1234"):
        open_session(model, guide=[term])
    before = term.load("cpu").state_dict()["out.weight"].clone()
    retrained, _ = train_classifier(*three_kinds(60, seed=9), ABAR, steps=5, batch_size=16, block_out_channels=(8, 16), norm_num_groups=4)
    retrained.save(folder)
    after = term.load("cpu")
    assert after.config.get("model_id") is None  # the new folder's config and weights, not the cached ones
    assert not torch.equal(before, after.state_dict()["out.weight"])
