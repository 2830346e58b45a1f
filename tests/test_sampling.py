"""The sampling core on a tiny UNet: seeds, CFG, clipping, guidance arithmetic and windows."""

import json
import warnings

import pytest
import torch

from noveltynets.errors import NoveltynetsError
from noveltynets.guidance import GuidanceTerm, PointGuidance
from noveltynets.session import parse_guide
from noveltynets.models import NULL_CLASS, build_scheduler
from noveltynets.sampling import SCHEDULERS, CFGDenoiser, GuidedModel, generate, make_scheduler, parse_seeds, sample_batch

SHAPE = (1, 8, 8)
ALPHAS = build_scheduler().alphas_cumprod


def run(model, factory, seeds, batch_size, cls=3, **kw):
    return generate(model, factory, seeds, [cls] * len(seeds), SHAPE, batch_size, **kw).images


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_same_seed_same_image_whatever_the_batch(tiny_cfg, scheduler_factory, scheduler):
    make = scheduler_factory(scheduler, steps=5)
    seeds = [11, 5, 42, 7, 9]
    a = run(tiny_cfg, make, seeds, batch_size=5, eta=1.0)
    b = run(tiny_cfg, make, seeds, batch_size=2, eta=1.0)
    c = run(tiny_cfg, make, [42], batch_size=1, eta=1.0)
    assert torch.isfinite(a).all()  # DDIM with eta = 1 once rounded sqrt(1 − ᾱ_prev − σ²) to NaN
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a[2], c[0], atol=1e-5)
    assert not torch.allclose(a[0], a[1])  # different seeds, different images


def test_ddpm_uses_per_sample_step_noise(tiny_cfg, scheduler_factory):
    """DDPM draws fresh noise every step: a seed's image must still not depend on its batch-mates."""
    make = scheduler_factory("ddpm", steps=5)
    a = run(tiny_cfg, make, [1, 2], batch_size=2)
    b = run(tiny_cfg, make, [1, 3], batch_size=2)
    assert torch.allclose(a[0], b[0], atol=1e-5) and not torch.allclose(a[1], b[1])


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_samples_in_range(tiny_cfg, scheduler_factory, name):
    """The sampler clamps its result, so checking the result's range proves nothing: what its last
    scheduler step made, before that clamp, must already lie in [-1, 1] (the x̂0 clipping keeps it there)."""
    from functools import wraps

    def recording(clip):
        raw = []

        def make():
            s = scheduler_factory(name, steps=4)()
            step = s.step

            @wraps(step)  # keeps step's signature: the sampler still passes its generators and eta
            def recorded(*a, **kw):
                out = step(*a, **kw)
                raw.append(out.prev_sample.clone())
                return out
            s.step = recorded
            return s
        x = run(tiny_cfg, make, [0, 1], batch_size=2, clip=clip)
        return x, raw[-1]

    x, last = recording(clip=True)
    assert torch.isfinite(last).all() and last.min() >= -1 - 1e-5 and last.max() <= 1 + 1e-5
    assert torch.allclose(x, last, atol=1e-5)  # the final clamp only trims rounding
    assert x.std() > 0.1  # not a blank image
    _, unclipped = recording(clip=False)  # without the x̂0 clipping this (random) tiny model leaves the range
    assert unclipped.abs().max() > 1.5


def test_cfg_batches_both_passes_and_matches_separate_passes(tiny_unet):
    x, t, y = torch.randn(3, *SHAPE), torch.tensor([900, 500, 10]), torch.tensor([1, 2, 3])
    calls = []
    hook = tiny_unet.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        eps = CFGDenoiser(tiny_unet, 3.0)(x, t, {"classes": y})
    finally:
        hook.remove()
    assert calls == [6]  # one forward pass of 2B
    eps_c = tiny_unet(x, t, class_labels=y).sample
    eps_u = tiny_unet(x, t, class_labels=torch.full_like(y, NULL_CLASS)).sample
    assert torch.allclose(eps, eps_u + 3.0 * (eps_c - eps_u), atol=1e-5)


def test_clipped_x0_and_callback(tiny_cfg, scheduler_factory):
    seen = []
    sample_batch(CFGDenoiser(tiny_cfg.unet, 20.0), scheduler_factory("ddim", 6)(), [0, 1], torch.tensor([1, 2]), SHAPE,
                 callback=lambda d: seen.append(d))
    assert [d["i"] for d in seen] == list(range(6))
    assert set(seen[0]) == {"x", "i", "t", "eps", "x0_hat"}
    assert all(d["x0_hat"].abs().max() <= 1 for d in seen)
    # eps was recomputed from the clipped x̂0: x = sqrt(ā)·x̂0 + sqrt(1−ā)·eps holds exactly
    d = seen[2]
    a = ALPHAS[d["t"]]
    assert torch.allclose(d["x"], a.sqrt() * d["x0_hat"] + (1 - a).sqrt() * d["eps"], atol=1e-5)


def test_scale_zero_term_reproduces_unguided_run(tiny_cfg, scheduler_factory):
    make = scheduler_factory("ddim", 5)
    plain = run(tiny_cfg, make, [3, 4], 2)
    term = PointGuidance(scale=0.0, target=1.0)
    guided = run(GuidedModel(tiny_cfg, [term], ALPHAS), make, [3, 4], 2)
    assert torch.equal(plain, guided)


def test_term_outside_its_window_is_inert(tiny_cfg, scheduler_factory):
    make = scheduler_factory("ddim", 5)
    plain = run(tiny_cfg, make, [3], 1)
    term = PointGuidance(scale=5.0, target=1.0, start=0.0, stop=0.0)
    assert torch.equal(plain, run(GuidedModel(tiny_cfg, [term], ALPHAS), make, [3], 1))
    active = []
    late = PointGuidance(scale=5.0, start=0.4, stop=0.8)
    for i in range(5):
        active.append(late.active(i / 5))
    assert active == [False, False, True, True, False]


class ConstantEps:
    """An eps-model that ignores x: then ∂x̂0/∂x_t = I/sqrt(ā) exactly, so both gradient modes must agree."""

    def __init__(self, value):
        self.value = value

    def __call__(self, x, t, extra):
        return self.value.expand_as(x) + 0 * x


def test_exact_and_x0_gradient_modes_agree_on_a_toy_denoiser():
    torch.manual_seed(0)
    x, t = torch.randn(2, *SHAPE), torch.tensor([700, 700])
    toy = ConstantEps(torch.randn(1, *SHAPE))
    term = PointGuidance(scale=0.3, target=0.5, sigma=0.7)
    extra = {"classes": torch.tensor([0, 0]), "i": 0, "num_steps": 10}
    e_x0 = GuidedModel(toy, [term], ALPHAS, "x0")(x, t, extra)
    e_exact = GuidedModel(toy, [term], ALPHAS, "exact")(x, t, extra)
    assert torch.allclose(e_x0, e_exact, atol=1e-5)
    # and the eps correction moves x̂0 by (1 − ā)/ā · scale · ∇_{x̂0} log p, the x̂0-form of the same step
    a = ALPHAS[700]
    eps = toy(x, t, extra)
    x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
    x0_guided = (x - (1 - a).sqrt() * e_x0) / a.sqrt()
    assert torch.allclose(x0_guided, x0 + (1 - a) / a * 0.3 * term.grad(x0, extra), atol=1e-4)


def test_exact_mode_differs_from_x0_mode_on_a_real_denoiser(tiny_cfg):
    x, t = torch.randn(2, *SHAPE), torch.tensor([500, 500])
    term, extra = PointGuidance(scale=1.0, target=1.0), {"classes": torch.tensor([1, 2]), "i": 0, "num_steps": 10}
    e_x0 = GuidedModel(tiny_cfg, [term], ALPHAS, "x0")(x, t, extra)
    e_exact = GuidedModel(tiny_cfg, [term], ALPHAS, "exact")(x, t, extra)
    assert not torch.allclose(e_x0, e_exact)
    assert torch.nn.functional.cosine_similarity(e_x0.flatten(), e_exact.flatten(), dim=0) > 0.5


@pytest.mark.parametrize("mode", ["x0", "exact"])
def test_pull_toward_a_point_moves_samples_toward_it(tiny_cfg, scheduler_factory, mode):
    make, seeds = scheduler_factory("ddim", 6), list(range(4))
    plain = run(tiny_cfg, make, seeds, 4)
    dist = lambda imgs, target: (imgs - target).pow(2).mean().item()  # noqa: E731
    d = []
    for scale in (0.5, 2.0):
        term = PointGuidance(scale=scale, target=1.0)
        d.append(dist(run(GuidedModel(tiny_cfg, [term], ALPHAS, mode), make, seeds, 4), 1.0))
    assert dist(plain, 1.0) > d[0] > d[1]
    term = PointGuidance(scale=2.0, target=-1.0)
    assert dist(run(GuidedModel(tiny_cfg, [term], ALPHAS, mode), make, seeds, 4), -1.0) < dist(plain, -1.0)


class NaNTerm(GuidanceTerm):
    name = "test-nan"

    def grad(self, x0_hat, info):
        return torch.full_like(x0_hat, float("nan"))


def test_non_finite_gradient_skips_the_term_with_a_warning(tiny_cfg, scheduler_factory):
    make = scheduler_factory("ddim", 4)
    plain = run(tiny_cfg, make, [1, 2], 2)
    with pytest.warns(RuntimeWarning, match="non-finite gradient"):
        guided = run(GuidedModel(tiny_cfg, [NaNTerm(scale=1.0)], ALPHAS), make, [1, 2], 2)
    assert torch.equal(plain, guided)


class Recorder(GuidanceTerm):
    name = "test-recorder"

    def __post_init__(self):
        super().__post_init__()
        self.events = []

    def reset(self):
        self.events.append("reset")

    def grad(self, x0_hat, info):
        return torch.zeros_like(x0_hat)

    def on_samples_end(self, x0, info):
        self.events.append(("end", list(info["seeds"]), x0.shape[0]))


def test_terms_are_reset_before_and_told_after_each_batch(tiny_cfg, scheduler_factory):
    rec = Recorder(scale=1.0)
    run(GuidedModel(tiny_cfg, [rec], ALPHAS), scheduler_factory("ddim", 3), [5, 6, 7], 2)
    assert rec.events == ["reset", ("end", [5, 6], 2), "reset", ("end", [7], 1)]


def test_guidance_config_round_trips_through_json():
    term = parse_guide("point:scale=2.5,target=1,stop=0.8")
    assert term == PointGuidance(scale=2.5, target=1.0, stop=0.8)
    d = json.loads(json.dumps(term.to_dict()))
    assert d["name"] == "point" and GuidanceTerm.from_dict(d) == term


@pytest.mark.parametrize("spec, message", [
    ("nope", "unknown guidance"), ("point:scale", "expected key=value"), ("point:size=3", "no setting 'size'"),
    ("point:scale=abc", "not a valid float"), ("point:start=0.9,stop=0.1", "start <= stop"),
])
def test_bad_guidance_specs_are_clear_errors(spec, message):
    with pytest.raises(NoveltynetsError, match=message):
        parse_guide(spec)


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5,1,9-10") == [5, 1, 9, 10]
    for bad in ("3-1", "a-b", "", "-1", "1,1", "0-99999999999"):
        with pytest.raises(NoveltynetsError):
            parse_seeds(bad)


def test_make_scheduler_rejects_unknown_names_and_bad_steps(train_config):
    with pytest.raises(NoveltynetsError, match="unknown scheduler"):
        make_scheduler("euler-ancestral-xl", train_config, 10)
    with pytest.raises(NoveltynetsError, match="steps"):
        make_scheduler("ddim", train_config, 0)


class RenoiseOne:
    """Wraps an eps-model and asks the sampler to re-draw sample ``j``'s noise at every step in ``steps``."""

    def __init__(self, model, j, steps, rho=1.0):
        self.model, self.j, self.steps, self.rho = model, j, steps, rho

    def __call__(self, x, t, extra):
        eps = self.model(x, t, extra)
        if extra["i"] not in self.steps:
            return eps
        rho = torch.zeros(len(x))
        rho[self.j] = self.rho
        return eps, rho  # a re-noise request is returned beside eps


def test_renoising_changes_only_the_asked_sample_and_stays_deterministic(tiny_cfg, scheduler_factory):
    make = scheduler_factory("ddim", 6)
    plain = run(tiny_cfg, make, [3, 4, 5], 3)
    a = run(RenoiseOne(tiny_cfg, 1, {1, 2}), make, [3, 4, 5], 3)
    assert torch.equal(a[0], plain[0]) and torch.equal(a[2], plain[2])  # untouched: exactly their plain trajectories
    assert not torch.allclose(a[1], plain[1], atol=1e-3) and a.abs().max() <= 1
    assert torch.equal(a, run(RenoiseOne(tiny_cfg, 1, {1, 2}), make, [3, 4, 5], 3))  # the extra noise comes from the seed
    assert torch.equal(run(RenoiseOne(tiny_cfg, 0, {1, 2}, rho=0.0), make, [3, 4, 5], 3), plain)  # ρ = 0: nothing happens


def test_renoise_keeps_x0_hat_and_the_noise_level():
    from noveltynets.sampling.loop import renoise
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(4, 1, 8, 8, generator=g)
    a = torch.tensor(0.3)
    x = a.sqrt() * x0 + (1 - a).sqrt() * eps
    rho = torch.tensor([0.0, 0.5, 1.0, 1.0])
    x2, eps2 = renoise(x, eps, x0, a, rho, [torch.Generator().manual_seed(s) for s in range(4)])
    assert torch.allclose((x2 - (1 - a).sqrt() * eps2) / a.sqrt(), x0, atol=1e-5)  # same x̂0
    assert torch.equal(x2[0], x[0]) and torch.equal(eps2[0], eps[0])
    fresh = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(eps2[2], fresh)  # ρ = 1: the noise is the sample's own fresh draw
    corr = torch.nn.functional.cosine_similarity(eps2[1].flatten(), eps[1].flatten(), dim=0)
    assert 0.7 < corr < 0.95  # ρ = 0.5 keeps sqrt(0.75) ≈ 0.87 of the old noise


class TailSpy:
    """An eps-model recording the timesteps it is asked at; ``point`` set: it knows the data is that one point."""

    def __init__(self, model, point=None):
        self.model, self.point, self.ts = model, point, []

    def __call__(self, x, t, extra):
        self.ts.append(int(t[0]))
        if self.point is None:
            return self.model(x, t, extra)
        a = ALPHAS[t].view(-1, 1, 1, 1)
        return (x - a.sqrt() * self.point) / (1 - a).sqrt()


def test_clean_up_reruns_the_last_timesteps_unguided_from_the_seed_and_terms_see_its_result(tiny_cfg, scheduler_factory):
    """``clean``: after the run, each sample is re-noised to the first timestep below clean·T (noise from its seed) and
    denoised along the run's timesteps below by the model that the guided model wraps, never by the guidance; the terms
    learn the cleaned batch, which is also what is returned."""
    make = scheduler_factory("ddim", 6)  # timesteps 999, 832, 666, 499, 332, 166
    spy, rec = TailSpy(tiny_cfg), Recorder(scale=1.0, stop=1.0)
    seen = []
    rec.on_samples_end = lambda x0, info: seen.append(x0.clone())
    calls = []
    rec.grad = lambda x0_hat, info: calls.append(info["i"]) or torch.zeros_like(x0_hat)
    cleaned = run(GuidedModel(spy, [rec], ALPHAS), make, [3, 4, 5], 3, clean=0.4)
    assert spy.ts == [999, 832, 666, 499, 332, 166, 332, 166]  # the run, then the tail below 0.4·T from 332
    assert calls == [0, 1, 2, 3, 4, 5]  # the guidance acts in the run only
    assert len(seen) == 1 and torch.equal(seen[0], cleaned)
    plain = run(tiny_cfg, make, [3, 4, 5], 3)
    assert not torch.allclose(cleaned, plain, atol=1e-3) and cleaned.abs().max() <= 1
    assert torch.equal(cleaned, run(tiny_cfg, make, [3, 4, 5], 3, clean=0.4))  # the same with no guidance at all
    assert torch.allclose(cleaned[1:2], run(tiny_cfg, make, [4], 1, clean=0.4), atol=1e-5)  # a seed's clean-up, whatever its batch
    assert torch.equal(run(tiny_cfg, make, [3, 4, 5], 3, clean=0.0), plain)  # 0: off


def test_a_term_may_ask_for_the_clean_up_and_the_samplers_own_wins():
    """``clean`` 0: the largest clean-up a term asks for (novelty: ``repair`` after a memory push into the run's last
    tenth), none where no timestep lies below it; ``clean`` > 0 wins (and is checked)."""
    from noveltynets.guidance import NoveltyGuidance
    from noveltynets.sampling.loop import clean_of

    fifty, ten = (make_scheduler("ddim", dict(build_scheduler().config), n) for n in (50, 10))  # last timesteps 19 and 99
    late = NoveltyGuidance()
    assert late.memory_stop == 0.95 and late.clean_up() == 0.05 and clean_of(0.0, [late], fifty) == 0.05
    for off in (NoveltyGuidance(memory_stop=0.5), NoveltyGuidance(repair=0), NoveltyGuidance(memory_weight=0),
                NoveltyGuidance(stop=0.5), NoveltyGuidance(scale=0)):
        assert off.clean_up() == 0.0 and clean_of(0.0, [off], fifty) == 0.0, off
    assert clean_of(0.0, [NoveltyGuidance(repair=0.2), late], fifty) == 0.2  # the largest asked
    assert clean_of(0.0, [late], ten) == 0.0  # no timestep below 0.05·T: none, not an error
    assert clean_of(0.3, [late], fifty) == 0.3 and clean_of(0.3, [], fifty) == 0.3
    with pytest.raises(NoveltynetsError, match="below the run's last timestep"):
        clean_of(0.05, [late], ten)
    with pytest.raises(NoveltynetsError, match=r"repair must be a number in \[0, 1\]"):
        NoveltyGuidance(repair=1.5)


def test_sample_gives_a_term_the_clean_up_it_asks_for(tiny_unet, tmp_path):
    """What a term asks for is what ``SamplingConfig.clean`` gives; the guidance itself is inert here (scale 0)."""
    from noveltynets.models import DiffusionModel
    from noveltynets.sampling import SamplingConfig, sample

    tiny_model = DiffusionModel(tiny_unet, dict(build_scheduler().config), "tiny@0", tmp_path)

    class AsksForIt(Recorder):
        name = "test-asks-for-clean-up"

        def clean_up(self):
            return 0.4

    config = SamplingConfig(klass=3, steps=6)
    asked = sample(tiny_model, [3, 4], config, [AsksForIt(scale=0.0)]).images
    assert torch.equal(asked, sample(tiny_model, [3, 4], config.replace(clean=0.4)).images)
    assert not torch.allclose(asked, sample(tiny_model, [3, 4], config).images, atol=1e-3)
    assert torch.equal(sample(tiny_model, [3, 4], config.replace(clean=0.7), [AsksForIt(scale=0.0)]).images,
                       sample(tiny_model, [3, 4], config.replace(clean=0.7)).images)  # the sampler's own wins


def test_clean_up_is_ddim_from_the_renoised_sample():
    """A denoiser that knows the data is one point z brings any re-noised sample to z exactly: the tail's DDIM steps
    (to ᾱ = 1 at the end) are consistent with the noise level it re-noised to."""
    from noveltynets.sampling.loop import clean_up
    z = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    spy = TailSpy(None, point=z)
    x0 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    out = clean_up(spy, x0, [7, 8], {"classes": torch.tensor([3, 3])}, ALPHAS, [999, 499, 250, 120, 40], 0.3, 1000)
    assert spy.ts == [250, 120, 40]
    assert torch.allclose(out, z.expand_as(out), atol=1e-4)
    assert torch.equal(clean_up(spy, x0, [7, 8], {}, ALPHAS, [999, 499], 0.3, 1000), x0)  # no timestep below: untouched


def test_clean_is_checked_before_any_work():
    from noveltynets.sampling import SamplingConfig
    from noveltynets.sampling.loop import check_clean
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(NoveltynetsError, match=r"^clean must be a number in \[0, 1\]"):
            SamplingConfig(clean=bad)
    check_clean(0.05, make_scheduler("ddim", dict(build_scheduler().config), 50))  # last timestep 19: fine
    with pytest.raises(NoveltynetsError, match=r"clean 0.05 is below the run's last timestep \(99 of 1000\): give at least 0.1"):
        check_clean(0.05, make_scheduler("ddim", dict(build_scheduler().config), 10))
    assert "clean=0.05" in SamplingConfig(clean=0.05).key() and "clean" not in SamplingConfig().key()
