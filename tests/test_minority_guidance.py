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


def mixture_eps(x: torch.Tensor, t: torch.Tensor, extra: dict, weights=(1, 1, 1)) -> torch.Tensor:
    """The exact eps of the data distribution of :func:`three_kinds` (a mixture of N(level, SPREAD²·I), equal
    unless ``weights`` are given)."""
    a = ABAR[t].view(-1, 1, 1, 1, 1)  # (B, kind, C, H, W)
    v = a * SPREAD ** 2 + 1 - a  # per-pixel variance of x_t given the kind
    levels = LEVELS.view(1, 3, 1, 1, 1)
    diff = x.unsqueeze(1) - a.sqrt() * levels
    log_w = torch.tensor(weights, dtype=x.dtype).log().view(1, 3)
    resp = torch.softmax(log_w - diff.pow(2).flatten(2).sum(2) / (2 * v.view(-1, 1)), dim=1)  # p(kind | x_t)
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


def kind_shares(spec: str | None, scheduler_factory, n: int = 45, eps=mixture_eps, grad_mode: str = "x0") -> torch.Tensor:
    """The share of each kind among ``n`` samples (10 DDIM steps) of ``eps`` guided by ``spec``."""
    terms = [parse_guide(spec)] if spec else []
    model = GuidedModel(eps, terms, ABAR, grad_mode) if terms else eps
    run = generate(model, scheduler_factory("ddim", 10), list(range(n)), [10] * n, (1, 8, 8), batch_size=n)
    return (run.images.mean((1, 2, 3)).view(-1, 1) - LEVELS).abs().argmin(1).bincount(minlength=3) / n


def test_guidance_moves_samples_to_the_chosen_class_and_more_with_scale(brightness_classifier, scheduler_factory):
    kinds = lambda spec: kind_shares(spec, scheduler_factory)
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
    samplers = ["minority:scale=4", "minority-mix:strength=2", "minority-self:scale=0.5,grad=exact"]  # all three
    cfg = BenchConfig(methods=["plain", *samplers], classes=["uncond", 7], n=8, steps=4, batch_size=8)
    result = run_bench(cfg, load_model())
    rows = result["rows"]
    assert [(r["class"], r["setting"]) for r in rows] == [(c, m) for c in ("uncond", 7) for m in ["plain", *samplers]]
    assert "adherence" not in rows[0] and "adherence" in rows[4]  # no class to adhere to when unconditional
    assert "adherence" not in result["means"][0] and result["means"][0]["n_classes"] == 2
    for c in ("uncond", 7):
        for m in samplers:
            assert not torch.equal(result["images"]["plain"][c], result["images"][m][c]), (c, m)
    with pytest.raises(NoveltynetsError, match="'uncond'"):
        BenchConfig(classes=["all"]).validate()
    from noveltynets.bench.methods import Context, parse_method
    assert parse_method("minority-self:grad=exact").config(Context(None), 7).grad_mode == "exact"
    with pytest.raises(NoveltynetsError, match="grad must be x0 .cheap. or exact"):
        parse_method("minority-self:grad=fast")


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


# -- minority-mix: the mixed-score sampler (Appendix C.4) ------------------------------------------------------------
R = [1.0, 2.0, 4.0]  # r_l: the dark, grey and bright kinds' levels (bright = the "rarest")


@pytest.fixture(scope="module")
def leveled_classifier(brightness_classifier, tmp_path_factory):
    """The brightness classifier with threshold levels, as 'noveltynets minority train' writes them."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("leveled") / "clf"
    shutil.copytree(brightness_classifier, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "level_scores": R, "thresholds": [1.5, 3.0]}))
    return folder


def test_the_mixed_score_adds_the_gradient_of_the_classifiers_expected_level_in_both_forms(leveled_classifier):
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([900, 600, 300, 50])
    extra = {"classes": torch.full((4,), 10), "i": 1, "num_steps": 10, "seeds": [0, 1, 2, 3]}
    a = ABAR[t].view(-1, 1, 1, 1)
    clf = parse_guide(f"minority-mix:classifier={leveled_classifier}").load("cpu")
    r = torch.tensor(R)

    def expected(lam: float, form: str) -> torch.Tensor:
        with torch.enable_grad():
            xr = x.clone().requires_grad_(True)
            p = torch.softmax(clf(xr, t), 1)
            f = lam * (p * r).sum(1).log() if form == "linear" else (p * r ** lam).sum(1).log()
            grad = torch.autograd.grad(f.sum(), xr)[0]
        return mixture_eps(x, t, extra) - (1 - a).sqrt() * grad

    got = {}
    for lam in (0.0, 1.0, 2.0):
        for form in ("linear", "power"):
            term = parse_guide(f"minority-mix:classifier={leveled_classifier},strength={lam},form={form}")
            assert term.space == "xt" and term.active(0.5) == (lam > 0)
            for mode in ("x0", "exact"):
                got[lam, form, mode] = GuidedModel(mixture_eps, [term], ABAR, grad_mode=mode)(x, t, dict(extra))
                assert torch.allclose(got[lam, form, mode], expected(lam, form), atol=1e-5), (lam, form, mode)
    assert torch.equal(got[0.0, "linear", "x0"], mixture_eps(x, t, extra))  # λ = 0: the plain sampler, bit for bit
    assert torch.allclose(got[1.0, "linear", "x0"], got[1.0, "power", "x0"], atol=1e-6)  # the forms agree at λ = 1 ...
    assert not torch.allclose(got[2.0, "linear", "x0"], got[2.0, "power", "x0"], atol=1e-4)  # ... and differ beyond


def test_the_mixed_score_sampler_favours_high_levels_more_with_strength(leveled_classifier, scheduler_factory):
    def mean_level(spec: str | None) -> float:
        return float(kind_shares(spec, scheduler_factory) @ torch.tensor(R))

    plain = mean_level(None)
    clf = str(leveled_classifier)
    linear = [mean_level(f"minority-mix:classifier={clf},strength={lam}") for lam in (0.25, 1, 4)]
    power = [mean_level(f"minority-mix:classifier={clf},strength={lam},form=power") for lam in (0.25, 1, 4)]
    # measured: plain 2.13; linear 3.42, 3.47, 3.73; power 3.42, 3.47, 3.64 (the forms agree at λ = 1)
    assert plain + 0.2 < linear[0] < linear[1] < linear[2] and plain + 0.2 < power[0] < power[1] < power[2]


def test_mixed_score_bad_settings_are_one_line_errors(brightness_classifier, leveled_classifier, tmp_path):
    from typer.testing import CliRunner

    from noveltynets.cli import app

    shipped = parse_guide("minority-mix")  # the shipped classifier carries its levels
    assert shipped.num_classes == 10 and torch.all(shipped.log_levels("cpu").diff() > 0)
    for spec, msg in ((f"minority-mix:classifier={brightness_classifier}", "has no threshold levels"),
                      (f"minority-mix:classifier={leveled_classifier},strength=-1", r"strength \(λ\) must be >= 0"),
                      (f"minority-mix:classifier={leveled_classifier},form=cube", "form must be one of linear, power"),
                      (f"minority-mix:classifier={tmp_path / 'none'}", "no classifier at")):
        with pytest.raises(NoveltynetsError, match=msg):
            parse_guide(spec)
        run = CliRunner().invoke(app, ["sample", "--n", "1", "--steps", "2", "--guide", spec, "--out", str(tmp_path / "s")])
        assert run.exit_code == 2 and "Traceback" not in run.output and len(run.output.strip().splitlines()) == 1, run.output
    term = parse_guide(f"minority-mix:classifier={leveled_classifier},strength=0.5,form=power")
    assert GuidanceTerm.from_dict(term.to_dict()) == term
    import json
    folder = tmp_path / "other"
    import shutil
    shutil.copytree(leveled_classifier, folder)
    (folder / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()), "model_id": "x@1"}))
    run = CliRunner().invoke(app, ["sample", "--n", "1", "--steps", "2", "--guide", f"minority-mix:classifier={folder}",
                                   "--out", str(tmp_path / "s")])
    assert run.exit_code == 2 and "trained for model x@1" in run.output
    mine = parse_guide(f"minority-mix:classifier={folder}")
    (folder / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()), "level_scores": [1, 1, 8]}))
    assert torch.allclose(mine.log_levels("cpu"), torch.tensor([1.0, 1.0, 8.0]).log())  # a rewritten folder's levels


# -- minority-self: classifier-free, self-guided -----------------------------------------------------------------------
def counting(eps):
    """``eps`` that counts its calls (and the samples they carry) and the timesteps it was asked at."""
    def model(x, t, extra):
        model.calls.append((len(x), int(t[0])))
        return eps(x, t, extra)
    model.calls = []
    return model


def test_self_guidance_ascends_the_samples_own_reconstruction_loss(scheduler_factory):
    from noveltynets.minority import MinoritySelf

    term = parse_guide("minority-self:scale=0.5,perturb=0.6,weight=fixed")
    assert isinstance(term, MinoritySelf) and term.space == "x0" and term.needs_denoiser
    x0 = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 0.5
    t = torch.full((3,), 500)
    a = ABAR[t].view(-1, 1, 1, 1)
    den = counting(mixture_eps)
    info = {"classes": torch.full((3,), 10), "i": 4, "num_steps": 10, "seeds": [5, 6, 7], "alpha_bar": a,
            "denoiser": den, "alphas_cumprod": ABAR}
    recon = term.reconstruction(x0, info)
    assert den.calls == [(3, 599)]  # one pass, at t_p = 0.6T
    grad = term.grad(x0, info)
    diff = x0 - recon
    assert torch.allclose(grad, diff / diff.flatten(1).abs().amax(1).view(-1, 1, 1, 1) * a / (1 - a))
    var = parse_guide("minority-self:scale=0.5,perturb=0.6").grad(x0, info)  # the default weight: (1 − ᾱ_t) of that
    assert torch.allclose(var, grad * (1 - a), atol=1e-6)
    # the perturbation noise is each sample's own (seed, step): the same in another batch
    assert torch.allclose(term.reconstruction(x0[1:2], {**info, "seeds": [6]}), recon[1:2], atol=1e-6)
    assert not torch.allclose(term.reconstruction(x0, {**info, "i": 5}), recon)
    # the cheap mode moves x̂0 by scale · the normalised direction: the reconstruction loss grows
    moved = x0 + (1 - a) / a * term.scale * grad
    loss = lambda z: (z - recon).flatten(1).norm(dim=1)
    assert (loss(moved) > loss(x0) + 0.1).all()
    with pytest.raises(NoveltynetsError, match="needs the denoiser"):
        term.grad(x0, {k: v for k, v in info.items() if k != "denoiser"})
    for bad, msg in (("scale=-1", "scale must be >= 0"), ("perturb=0", "perturb must be"), ("perturb=1.5", "perturb must be"),
                     ("weight=cosine", "weight must be var or fixed")):
        with pytest.raises(NoveltynetsError, match=msg):
            parse_guide(f"minority-self:{bad}")


def test_self_guidance_makes_rare_kinds_more_likely_at_the_cost_of_one_pass_per_guided_step(scheduler_factory):
    weights = (8, 3, 1)  # dark common, bright rare
    eps = lambda x, t, extra: mixture_eps(x, t, extra, weights)
    shares = {None: kind_shares(None, scheduler_factory, 60, eps)}
    for w in (0.5, 2):
        shares[w] = kind_shares(f"minority-self:scale={w}", scheduler_factory, 60, eps)
    # measured (dark / grey / bright): plain 0.70 / 0.25 / 0.05; scale 0.5: 0.50 / 0.40 / 0.10; scale 2: 0.22 / 0.12 / 0.67
    assert shares[None][0] > 0.5
    assert shares[2][0] < shares[0.5][0] < shares[None][0] - 0.05 and shares[2][2] > shares[None][2] + 0.05
    assert torch.equal(kind_shares("minority-self:scale=0", scheduler_factory, 60, eps), shares[None])
    for mode in ("x0", "exact"):  # every step of 10 is guided (progress 0.9 < stop 0.95); exact adds a backward pass
        den = counting(eps)
        kind_shares("minority-self:scale=0.5,perturb=0.75", scheduler_factory, 4, den, grad_mode=mode)
        assert len(den.calls) == 20 and [t for n, t in den.calls[1::2]] == [749] * 10, (mode, den.calls)  # one more pass at t_p
