"""The peers of novelty nets: particle guidance, CADS, the initial-noise temperature, the outer-loop filters."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from noveltynets.bench.methods import FilterMethod, GuidanceMethod, parse_method
from noveltynets.cli import app
from noveltynets.errors import NoveltynetsError
from noveltynets.filters import KnnFilter, LshFilter, Oversample, candidate_seed, farthest_point, k_medoids, parse_filter
from noveltynets.guidance import CADSGuidance, ParticleGuidance
from noveltynets.session import parse_guide
from noveltynets.guidance.cads import cads_gamma, cads_noise
from noveltynets.guidance.particle import rbf_repulsion
from noveltynets.embed.lsh import LSHBloom, stable_hash
from noveltynets.models import build_scheduler
from noveltynets.sampling import CFGDenoiser, GuidedModel, generate

SHAPE = (1, 8, 8)


# ---- particle guidance -------------------------------------------------------------------------

def test_rbf_repulsion_is_the_scaled_negative_gradient_of_the_kernel_potential():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(6, 3, generator=g, dtype=torch.float64)
    d = rbf_repulsion(e)
    d2 = torch.cdist(e, e).pow(2)
    h = d2[~torch.eye(6, dtype=torch.bool)].median() / torch.log(torch.tensor(6.0, dtype=torch.float64))
    x = e.clone().requires_grad_(True)
    phi = (torch.exp(-torch.cdist(x, x).pow(2) / h) * (1 - torch.eye(6, dtype=torch.float64))).sum()
    grad = torch.autograd.grad(phi, x)[0]
    assert torch.allclose(d, -grad * h / (4 * 5), atol=1e-10)  # Δe = −∇Φ · h / (4 (B − 1))
    assert torch.allclose(d.sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)  # symmetric: no net drift
    pair = rbf_repulsion(torch.tensor([[0.0, 0.0], [0.1, 0.0]], dtype=torch.float64))
    assert pair[0, 0] < 0 < pair[1, 0]  # two particles split apart


def test_particle_guidance_spreads_a_batch_of_near_copies(tiny_cfg, scheduler_factory):
    term = ParticleGuidance(scale=2.0, embedder="pooled-pixels:4")
    x0 = torch.zeros(4, 1, 8, 8) + 0.01 * torch.arange(4.0).view(4, 1, 1, 1)
    a = torch.tensor(0.5)
    moved = x0 + (1 - a) / a * term.scale * term.grad(x0, {"alpha_bar": a})
    spread = lambda x: torch.pdist(term._embed(x)).min()
    assert spread(moved) > spread(x0)
    assert torch.equal(term.grad(x0[:1], {"alpha_bar": a}), torch.zeros_like(x0[:1]))  # one particle: nothing to do
    model = GuidedModel(tiny_cfg, [term], build_scheduler().alphas_cumprod)
    make = scheduler_factory("ddim", 6)
    plain = generate(tiny_cfg, make, [1, 2, 3, 4], [1] * 4, SHAPE, 4).images
    guided = generate(model, make, [1, 2, 3, 4], [1] * 4, SHAPE, 4).images
    assert torch.pdist(term._embed(guided)).mean() > torch.pdist(term._embed(plain)).mean()


# ---- CADS --------------------------------------------------------------------------------------

def test_cads_schedule_and_rescaled_noise():
    assert [cads_gamma(t, 0.6, 0.9) for t in (0.1, 0.6, 0.75, 0.9, 1.0)] == pytest.approx([1, 1, 0.5, 0, 0])
    g = torch.Generator().manual_seed(0)
    y, n = torch.randn(3, 64, generator=g) * 2 + 1, torch.randn(3, 64, generator=g)
    assert torch.equal(cads_noise(y, n, 1.0, 0.25, 0.0), y)  # γ = 1: the clean condition
    out = cads_noise(y, n, 0.0, 0.25, 1.0)  # γ = 0, ψ = 1: pure noise, rescaled to y's statistics
    assert torch.allclose(out.mean(1), y.mean(1), atol=1e-5) and torch.allclose(out.std(1), y.std(1), atol=1e-5)
    assert torch.allclose(cads_noise(y, n, 0.0, 0.25, 0.0), 0.25 * n)


def test_cads_noises_only_the_conditional_pass_early_and_is_seed_stable(tiny_unet, scheduler_factory):
    cfg = CFGDenoiser(tiny_unet, 2.0)
    seen = []
    hook = tiny_unet.class_embedding.register_forward_hook(lambda m, i, y: seen.append((i[0].clone(), y.clone())))
    term = CADSGuidance()
    model = GuidedModel(cfg, [term], build_scheduler().alphas_cumprod)
    x, t = torch.randn(2, *SHAPE), torch.full((2,), 900)
    try:
        model(x, t, {"classes": torch.tensor([1, 2]), "i": 0, "num_steps": 10, "seeds": [5, 6]})  # t = 1: pure noise
    finally:
        hook.remove()
    # the hook added by CADS runs after ours, so compare the model's own output with a clean pass instead
    table = tiny_unet.class_embedding.weight
    labels, clean = seen[0]
    assert labels.tolist() == [1, 2, 10, 10] and torch.equal(clean, table[labels])
    assert tiny_unet.class_embedding._forward_hooks == {}  # the hook is removed after every call
    make = scheduler_factory("ddim", 10)
    plain = generate(cfg, make, [5, 6], [1, 1], SHAPE, 2).images
    a = generate(model, make, [5, 6], [1, 1], SHAPE, 2).images
    b = generate(model, make, [6], [1], SHAPE, 1).images
    assert not torch.allclose(a, plain) and torch.allclose(a[1], b[0], atol=1e-5)  # seed 6 alone: same image
    late = CADSGuidance(start=0.5)  # active only where t <= 0.5 < τ1: the condition is never noised
    c = generate(GuidedModel(cfg, [late], build_scheduler().alphas_cumprod), make, [5, 6], [1, 1], SHAPE, 2).images
    assert torch.equal(c, plain)


def test_cads_config_errors_and_models_without_a_class_table():
    assert parse_guide("cads:noise_scale=0.1,tau1=0.5").to_dict()["noise_scale"] == 0.1
    for bad, msg in [("cads:tau1=0.9,tau2=0.5", "tau1 < tau2"), ("cads:psi=2", "psi"), ("cads:noise_scale=-1", "noise_scale")]:
        with pytest.raises(NoveltynetsError, match=msg):
            parse_guide(bad)
    term = CADSGuidance()
    with pytest.raises(NoveltynetsError, match="class-conditional"):
        with term.conditioning(lambda x, t, e: x, {"i": 0, "num_steps": 10, "seeds": [0]}):
            pass


# ---- temperature -------------------------------------------------------------------------------

def test_temperature_scales_the_initial_noise_only(tiny_cfg, scheduler_factory):
    make = scheduler_factory("ddim", 1)
    seen = []
    generate(tiny_cfg, make, [3], [1], SHAPE, 1, temperature=0.5, callback=lambda s: seen.append(s["x"].clone()))
    generate(tiny_cfg, make, [3], [1], SHAPE, 1, callback=lambda s: seen.append(s["x"].clone()))
    assert torch.allclose(seen[0], 0.5 * seen[1])
    assert parse_method("plain:temp=0.9").temp == 0.9
    with pytest.raises(NoveltynetsError, match="temp positive"):
        parse_method("plain:temp=0")


# ---- filters -----------------------------------------------------------------------------------

def test_farthest_point_and_k_medoids():
    c = torch.tensor([[0.0], [0.1], [5.0], [5.1], [10.0]], dtype=torch.float64)
    assert farthest_point(c, 3) == [0, 4, 2]
    assert farthest_point(c, 2, history=torch.tensor([[10.0]], dtype=torch.float64)) == [0, 2]
    two = torch.tensor([[0.0], [0.2], [0.4], [9.0], [9.2], [9.4]], dtype=torch.float64)
    assert sorted(k_medoids(two, 2)) == [1, 4]  # each cluster's middle point
    from sklearn.metrics import pairwise_distances
    d = pairwise_distances(two.numpy())
    cost = lambda med: d[:, med].min(1).sum()
    assert cost(k_medoids(two, 2)) <= min(cost([i, j]) for i in range(6) for j in range(6) if i != j) + 1e-12


def fake_generate(calls, layouts=None):
    """Images that depend only on the seed: one of 5 layouts (``layouts[seed]``, else seed mod 4 for seeds below 1000
    and 0 for the derived candidate seeds); equal layouts are near-copies."""
    def gen(seeds):
        calls.append(list(seeds))
        out = torch.full((len(seeds), 1, 8, 8), -1.0)
        for i, s in enumerate(seeds):
            out[i, 0, : (layouts or {}).get(s, s % 4 if s < 1000 else 0) + 1, :] = 1.0
            out[i, 0, 7, 7] = -1.0 + 1e-3 * (s % 97)
        return out
    return gen


def test_knn_filter_rejects_near_copies_and_pays_for_it():
    calls = []
    f = KnnFilter(radius=0.3, embedder="pooled-pixels:4", max_ratio=3)
    layouts = {candidate_seed(4, 1): 4}  # slot 4's first retry is new; slot 5's retries all repeat a layout
    run = f.run(fake_generate(calls, layouts), list(range(6)), batch_size=6)
    assert run.seeds[:5] == [0, 1, 2, 3, candidate_seed(4, 1)]
    assert run.seeds[5] in [5, candidate_seed(5, 1), candidate_seed(5, 2)]  # out of tries: the least close is kept
    assert calls[1:] == [[candidate_seed(4, 1), candidate_seed(5, 1)], [candidate_seed(5, 2)]] and run.generated == 9
    assert run.images.shape == (6, 1, 8, 8)
    again = f.run(fake_generate([], layouts), list(range(6)), batch_size=6)
    assert again.seeds == run.seeds  # a new run forgets the old history


def test_oversample_keeps_the_farthest_and_lsh_flags_only_near_duplicates():
    calls = []
    layouts = {candidate_seed(0, 1): 1, candidate_seed(4, 2): 2, candidate_seed(8, 3): 3}  # 3 of 12 extra candidates differ
    run = Oversample(k=4, embedder="pooled-pixels:4").run(fake_generate(calls, layouts), [0, 4, 8, 12], batch_size=4)
    assert run.generated == 16 and len(calls[0]) == 16
    assert sorted(run.seeds) == sorted([0, *layouts])  # all four layouts, from four requests of the same one
    lsh = LSHBloom(16, bits=12, bands=4)
    g = torch.Generator().manual_seed(0)
    e = torch.randn(50, 16, generator=g, dtype=torch.float64)
    lsh.add(e)
    assert lsh.seen(e + 1e-6).all()
    assert lsh.seen(torch.randn(200, 16, generator=g, dtype=torch.float64)).float().mean() < 0.2
    assert stable_hash(b"abc") == stable_hash(b"abc") and -(2 ** 127) <= stable_hash(b"x") < 2 ** 127
    kept = LshFilter(bits=12, bands=4, embedder="pooled-pixels:4", max_ratio=2).run(fake_generate([]), [0, 4, 1], batch_size=3)
    assert kept.generated == 4  # seed 4 repeats seed 0's layout: it is retried once


def test_filter_specs_and_bad_input():
    f = parse_filter("oversample:k=2,select=kmedoids")
    assert (f.k, f.select) == (2, "kmedoids") and f.to_dict()["name"] == "oversample"
    for bad, msg in [("nope", "unknown filter"), ("oversample:k=0", "k >= 1"), ("oversample:select=x", "select"),
                     ("knn-filter:radius=-1", "positive"), ("lsh-filter:bits=99", "bits"), ("lsh-filter:bits=x", "valid int"),
                     ("knn-filter:max_ratio=0", "max_ratio"), ("knn-filter:wat=1", "no setting")]:
        with pytest.raises(NoveltynetsError, match=msg):
            parse_filter(bad)
    with pytest.raises(NoveltynetsError, match="0..4294967295"):
        KnnFilter().run(fake_generate([]), [2 ** 32])
    assert isinstance(parse_method("knn-filter:radius=0.4"), FilterMethod)
    assert isinstance(parse_method("particle:scale=2"), GuidanceMethod)


def test_cli_sample_with_a_filter_records_the_kept_seeds(tmp_path):
    out = tmp_path / "f"
    r = CliRunner().invoke(app, ["sample", "--class", "7", "--n", "4", "--steps", "2", "--filter", "oversample:k=2",
                                 "--temperature", "0.9", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["settings"]["filter"]["generated"] == 8 and m["settings"]["temperature"] == 0.9
    kept = m["settings"]["filter"]["kept_seeds"]
    assert np.load(out / "samples.npz")["seeds"].tolist() == kept and len(set(kept)) == 4
    assert set(kept) <= {*range(4), *(candidate_seed(s, 1) for s in range(4))}
    bad = CliRunner().invoke(app, ["sample", "--class", "7", "--n", "4", "--filter", "oversample:k=0", "--out", str(tmp_path / "g")])
    assert bad.exit_code == 2 and "k >= 1" in bad.output and not (tmp_path / "g").exists()
    bad = CliRunner().invoke(app, ["sample", "--class", "7", "--n", "4", "--temperature", "0", "--out", str(tmp_path / "g")])
    assert bad.exit_code == 2 and "temperature" in bad.output


def test_candidate_seeds_make_new_images_and_seeds_keep_to_32_bits(tiny_cfg, scheduler_factory):
    from noveltynets.sampling import MAX_SEED, derived_seed, parse_seeds
    make = scheduler_factory("ddim", 2)
    seeds = [7, candidate_seed(7, 1), candidate_seed(7, 2)]
    assert len(set(seeds)) == 3 and all(0 <= s <= MAX_SEED for s in seeds)
    imgs = generate(tiny_cfg, make, seeds, [1] * 3, SHAPE, 3).images
    assert not torch.allclose(imgs[0], imgs[1]) and not torch.allclose(imgs[1], imgs[2])
    # torch's CPU generator keeps only 32 bits of a seed: larger seeds would silently repeat smaller ones
    assert torch.equal(torch.randn(3, generator=torch.Generator().manual_seed(2 ** 32 + 5)),
                       torch.randn(3, generator=torch.Generator().manual_seed(5)))
    with pytest.raises(NoveltynetsError, match="0..4294967295"):
        parse_seeds(str(2 ** 32))
    assert derived_seed(1, 2) == derived_seed(1, 2) != derived_seed(2, 1)
