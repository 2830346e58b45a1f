"""NoveltyMemory, embedders and the novelty guidance term."""

import pytest
import torch

from noveltynets.errors import NoveltynetsError
from noveltynets.guidance import NoveltyGuidance
from noveltynets.session import parse_guide
from noveltynets.guidance.particle import ParticleGuidance
from noveltynets.embed import CallableEmbedder, DenoiserFeatures, MultiScalePooled, PooledPixels, embedder_from_spec
from noveltynets.memory import MemoryConfig, NoveltyMemory
from noveltynets.models import build_scheduler
from noveltynets.sampling import GuidedModel, SamplingConfig, generate


def auc(pos, neg):
    return (pos[:, None] > neg[None, :]).float().mean().item()


def cfg(**kw):
    base = dict(dim=8, embedder_id="test", hidden=64, steps_per_observe=30, batch_size=64, fourier=64)
    return MemoryConfig(**{**base, **kw})


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 200, 8, generator=g)  # history, fresh, reference: one distribution


FIRST8 = CallableEmbedder(lambda x: x.flatten(1)[:, :8], "first8", 8)


@pytest.fixture
def trained(data):
    """A memory that has observed the first 16 history points five times."""
    history, _, ref = data
    mem = NoveltyMemory(cfg())
    mem.set_reference(ref)
    for _ in range(5):
        mem.observe(history[:16])
    return mem


@pytest.mark.parametrize("embedder, dim", [(PooledPixels(8), 64), (PooledPixels(4), 16), (MultiScalePooled((2, 4)), 20)])
def test_embedders_are_differentiable_with_ids(embedder, dim):
    x = (torch.rand(3, 1, 32, 32) * 1.8 - 0.9).requires_grad_(True)
    e = embedder(x)
    assert e.shape == (3, dim) == (3, embedder.dim) and embedder.id
    e.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_denoiser_features_and_callable_embedder(tiny_unet):
    emb = DenoiserFeatures(tiny_unet, "tiny@0", t=20)
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    assert emb(x).shape == (2, emb.dim) and "tiny@0" in emb.id
    torch.autograd.grad(emb(x).sum(), x)
    assert CallableEmbedder(lambda x: x.flatten(1), "flat", 64).id == "callable:flat"
    assert embedder_from_spec("multiscale-pooled:2,4").dim == 20
    with pytest.raises(NoveltynetsError):
        embedder_from_spec("clip")


@pytest.mark.parametrize("target, sigma_min, least", [("classify", 0.0, 0.9), ("classify", 0.1, 0.7), ("proximity", 0.1, 0.75)])
def test_memory_tells_observed_from_fresh(data, target, sigma_min, least):
    """Classify: all Fourier scales at σ = 1 memorise points sharply; spreading them down to 0.1
    is smoother and memorises these random points less sharply. Proximity (default): observed
    points are at distance 0 from history, fresh ones about one reference spacing away."""
    history, fresh, ref = data
    mem = NoveltyMemory(cfg(target=target, fourier_sigma_min=sigma_min))
    mem.set_reference(ref)
    for chunk in history.split(16):
        mem.observe(chunk)
    with torch.no_grad():
        assert auc(mem.logit(history), mem.logit(fresh)) > least
    assert mem.n_seen == 200


def test_proximity_head_learns_the_distance_field_around_history(data):
    """sigmoid(logit) follows exp(−d²/2r²) (d: distance to the nearest observed point in units of the
    reference spacing ℓ), and −∇logit points away from the nearest observed point."""
    history, fresh, ref = data
    mem = NoveltyMemory(cfg(steps_per_observe=150))
    mem.set_reference(ref)
    seen = history[:48]
    for chunk in seen.split(16):
        mem.observe(chunk)
    ell = mem.neighbour_distance()
    d = torch.cdist(ref, ref).fill_diagonal_(float("inf")).min(1).values
    assert ell == pytest.approx(float(d.median()), rel=1e-5)
    g = torch.Generator().manual_seed(1)
    near = seen + 0.5 * ell * torch.randn(seen.shape, generator=g) / 8 ** 0.5  # half a spacing off history
    queries = torch.cat([near, fresh])
    exact = torch.exp(-(torch.cdist(queries, seen).min(1).values / ell) ** 2 / (2 * 0.7 ** 2))
    x = queries.clone().requires_grad_(True)
    logit = mem.logit(x)
    p = torch.sigmoid(logit.detach())
    assert torch.corrcoef(torch.stack([p, exact]))[0, 1] > 0.8  # measured 0.88
    away = near - seen
    push = -torch.autograd.grad(logit.sum(), x)[0][: len(near)]
    assert torch.nn.functional.cosine_similarity(push, away, dim=1).median() > 0.5  # measured 0.73
    with pytest.raises(NoveltynetsError, match="needs reference negatives"):
        MemoryConfig(dim=8, embedder_id="t", negatives="jitter")
    with pytest.raises(NoveltynetsError, match="target must be"):
        MemoryConfig(dim=8, embedder_id="t", target="regress")
    for bad in ({"query_rows": 0}, {"target_rows": -1}, {"proximity_radius": 0.0}):
        with pytest.raises(NoveltynetsError, match="must be positive"):
            MemoryConfig(dim=8, embedder_id="t", **bad)


def test_memory_is_deterministic_and_round_trips(data):
    history, fresh, ref = data
    a, b = NoveltyMemory(cfg()), NoveltyMemory(cfg())
    for m in (a, b):
        m.set_reference(ref)
        m.observe(history[:32])
    assert torch.equal(a.logit(fresh), b.logit(fresh))
    c = NoveltyMemory.from_bytes(a.to_bytes())
    assert torch.equal(a.logit(fresh), c.logit(fresh)) and c.n_seen == 32
    a.observe(history[32:64])
    c.observe(history[32:64])  # optimiser, replay and RNG state came along: training continues identically
    assert torch.equal(a.logit(fresh), c.logit(fresh))


def test_reservoir_replay_keeps_memory_size_constant(data):
    history, _, ref = data
    mem = NoveltyMemory(cfg(replay_size=50, steps_per_observe=1))
    mem.set_reference(ref)
    mem.observe(history[:60])
    size = len(mem.to_bytes())
    mem.observe(history[60:])
    assert len(mem.replay) == 50 and mem.n_seen == 200 and len(mem.to_bytes()) == size
    full = NoveltyMemory(cfg(replay="full", steps_per_observe=1))
    full.set_reference(ref)
    full.observe(history)
    assert len(full.replay) == 200


def test_memory_bad_input(data):
    history, _, ref = data
    mem = NoveltyMemory(cfg())
    with pytest.raises(NoveltynetsError, match="no reference negatives"):
        mem.observe(history[:4])
    mem.set_reference(ref)
    with pytest.raises(NoveltynetsError, match="embeddings must be"):
        mem.observe(torch.randn(4, 3))
    with pytest.raises(NoveltynetsError, match="non-finite"):
        mem.observe(torch.full((2, 8), float("nan")))
    with pytest.raises(NoveltynetsError, match="corrupt"):
        NoveltyMemory.from_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage")
    with pytest.raises(NoveltynetsError):
        MemoryConfig(dim=8, embedder_id="x", negatives="maybe")
    jitter = NoveltyMemory(cfg(negatives="jitter", target="classify"))
    jitter.observe(history[:16])  # jitter negatives need no reference
    assert jitter.n_seen == 16


def test_reset_forgets_history_but_keeps_reference(data):
    history, fresh, ref = data
    mem = NoveltyMemory(cfg())
    mem.set_reference(ref)
    mem.observe(history[:32])
    mem.reset()
    assert mem.n_seen == 0 and len(mem.replay) == 0 and len(mem.negatives) == 200
    with pytest.raises(NoveltynetsError, match="nothing to rehearse"):
        mem.rehearse()


def _on(points: torch.Tensor) -> torch.Tensor:
    """Images (B, 1, 4, 4) whose FIRST8 embeddings are ``points`` (B, 8)."""
    x0 = torch.zeros(len(points), 1, 4, 4)
    x0.view(len(points), -1)[:, :8] = points
    return x0


def test_batch_part_is_particle_guidance_repulsion(data):
    """Without a memory the term is particle guidance's RBF repulsion, times batch_weight, in the same embedding."""
    x0 = _on(data[0][:6])
    particle = ParticleGuidance(scale=1.0)
    particle._embed = FIRST8
    info = {"alpha_bar": torch.tensor(0.3)}
    g = NoveltyGuidance(batch_weight=2.5, embedder=FIRST8).grad(x0, info)
    assert torch.allclose(g, 2.5 * particle.grad(x0, info), atol=1e-5)
    step = NoveltyGuidance(batch_weight=1.0, embedder=FIRST8).grad(x0, {})  # no alpha_bar: the x̂0 change itself
    assert torch.pdist(FIRST8(x0 + step)).mean() > torch.pdist(FIRST8(x0)).mean()  # members move apart


def test_memory_part_moves_each_embedding_by_its_p_seen_in_units_of_the_reference(data, trained):
    """Δe = memory_weight · ℓ · P(seen) · (−∇logit/‖∇logit‖): each push's length is P(seen) in the memory's
    unit of length, so a sample the memory has not seen is not pushed, and the push lowers P(seen)."""
    emb, mem = FIRST8, trained
    x0 = _on(data[0][:16])  # observed points
    term = NoveltyGuidance(memory_weight=0.5, batch_weight=0.0, memory=mem, embedder=emb)
    step = term.grad(x0, {})  # no alpha_bar: the x̂0 change itself
    with torch.no_grad():
        p = torch.sigmoid(mem.logit(emb(x0)))
        moved = emb(x0 + step) - emb(x0)
        assert torch.allclose(moved.norm(dim=1), 0.5 * mem.neighbour_distance() * p, atol=1e-4)
        assert (mem.logit(emb(x0 + 0.1 * step)) < mem.logit(emb(x0))).float().mean() > 0.9
    ref = data[2].double()
    d = torch.cdist(ref, ref).fill_diagonal_(float("inf"))
    assert mem.neighbour_distance() == pytest.approx(float(d.min(1).values.median()))
    info = {"alpha_bar": torch.tensor(0.25)}  # the sampler's scaling: x̂0 moves by (1 − ᾱ)/ᾱ · grad
    assert torch.allclose(term.grad(x0, info), step * 0.25 / 0.75, atol=1e-6)


def test_unseen_objective_pushes_only_near_history(data, trained):
    """Pushes are strong where P(seen) is high (history) and weak far from it (fresh samples)."""
    emb, mem, (history, fresh, _) = FIRST8, trained, data
    term = NoveltyGuidance(batch_weight=0.0, memory=mem, embedder=emb)
    x = _on(torch.cat([history[:16], fresh[:16]]))
    with torch.no_grad():
        p = torch.sigmoid(mem.logit(emb(x)))
    norms = term.grad(x, {}).flatten(1).norm(dim=1)
    assert p[:16].mean() > p[16:].mean() and norms[:16].mean() > 2 * norms[16:].mean()
    assert torch.corrcoef(torch.stack([p, norms]))[0, 1] > 0.9
    seen = NoveltyGuidance(batch_weight=0.0, objective="seen", memory=mem, embedder=emb).grad(x, {}).flatten(1).norm(dim=1)
    assert torch.allclose(norms + seen, torch.full_like(norms, mem.neighbour_distance() * term.memory_weight), atol=1e-4)  # P + (1 − P) = 1


def test_the_memory_part_acts_only_in_its_window_of_the_run(data, trained):
    """memory_start ≤ progress < memory_stop: outside that window a memory that knows the samples does not push them."""
    x0 = _on(data[0][:16])
    term = NoveltyGuidance(memory_weight=0.5, batch_weight=0.0, memory_start=0.5, memory_stop=0.9, memory=trained, embedder=FIRST8)
    norms = {i: float(term.grad(x0, {"i": i, "num_steps": 10}).norm()) for i in range(10)}
    assert all(norms[i] == 0 for i in (0, 4, 9)) and all(norms[i] > 0 for i in (5, 8))
    with pytest.raises(NoveltynetsError, match="memory_start"):
        parse_guide("novelty:memory_start=0.6,memory_stop=0.5")


def test_novelty_term_config_and_parse():
    term = parse_guide("novelty:scale=0.2,batch_weight=0,memory_weight=1")
    assert term.to_dict() == {"name": "novelty", "scale": 0.2, "start": 0.0, "stop": 0.95, "memory_weight": 1.0,
                              "memory_start": 0.0, "memory_stop": 0.95, "repair": 0.05, "batch_weight": 0.0, "objective": "unseen", "renoise_rho": 0.0, "renoise_threshold": 0.5,
                              "renoise_stop": 0.8, "trajectory": True, "trajectory_points": 8}
    assert NoveltyGuidance.from_dict(term.to_dict()) == term
    assert parse_guide("novelty:trajectory=false").trajectory is False
    with pytest.raises(NoveltynetsError, match="objective"):
        parse_guide("novelty:objective=maybe")
    with pytest.raises(NoveltynetsError, match="batch_weight"):
        parse_guide("novelty:batch_weight=-1")


def test_novelty_guided_sampling_observes_every_batch(tiny_cfg, scheduler_factory):
    emb = PooledPixels(4)
    mem = NoveltyMemory(MemoryConfig(dim=16, embedder_id=emb.id, hidden=32, steps_per_observe=2, fourier=16))
    mem.set_reference(torch.randn(32, 16))
    term = NoveltyGuidance(scale=0.5, memory=mem, embedder=emb)
    alphas = build_scheduler().alphas_cumprod
    plain = generate(tiny_cfg, scheduler_factory("ddim", 4), [0, 1, 2, 3, 4], [1] * 5, (1, 8, 8), 2).images
    guided = generate(GuidedModel(tiny_cfg, [term], alphas), scheduler_factory("ddim", 4), [0, 1, 2, 3, 4], [1] * 5, (1, 8, 8), 2).images
    assert mem.n_seen == 5 and len(mem.replay) == 5
    assert not torch.allclose(plain, guided) and torch.isfinite(guided).all()


def test_pretrain_teaches_a_fixed_set_and_reports_progress(data):
    from noveltynets.memory.pretrain import pretrain

    history, fresh, ref = data
    history = history[:64]
    mem = NoveltyMemory(cfg(steps_per_observe=5, fourier_sigma_min=0.0, target="classify"))  # sharp: the mechanics, on random points
    mem.set_reference(ref)
    calls, seen_idx = [], []

    def observe(m, e, idx):
        seen_idx.append(idx)
        m.observe(e)
        return m

    mem = pretrain(mem, history, epochs=30, observe=observe, advance=lambda **kw: calls.append(kw), chunk=16)
    assert sorted(torch.cat(seen_idx).tolist()) == list(range(len(history)))  # each point observed exactly once
    assert len(calls) == 4 + 30 and all("loss" in c for c in calls[4:])
    assert mem.n_seen == len(history)
    assert auc(mem.logit(history).detach(), mem.logit(fresh).detach()) > 0.9


def test_pushes_of_unseen_samples_stay_small(data, trained):
    """A batch of fresh samples gets far smaller pushes than a batch of seen ones (nothing rescales them to full size)."""
    emb, mem, (history, fresh, _) = FIRST8, trained, data
    term = NoveltyGuidance(batch_weight=0.0, memory=mem, embedder=emb)
    info = {"alpha_bar": torch.tensor(0.5)}
    far = term.grad(_on(fresh[:16]), info).flatten(1).norm(dim=1)
    near = term.grad(_on(history[:16]), info).flatten(1).norm(dim=1)
    assert far.mean() < 0.2 * near.mean()


@pytest.mark.parametrize("scaling", ["isotropic", "per-dim"])
def test_isotropic_scaling_ignores_near_constant_dims(data, scaling):
    """Pooled pixels have near-constant dims (the border): a 0.05 change there is nothing in the
    image, but per-dim scaling makes it 50 units and the memory no longer knows the sample."""
    history, fresh, ref = (d.clone() for d in data)
    for d in (history, fresh, ref):
        d[:, 0] = 0.001 * torch.randn(len(d), generator=torch.Generator().manual_seed(1))
    mem = NoveltyMemory(cfg(scaling=scaling, fourier_sigma_min=0.0, target="classify"))  # sharp, so that the scaling alone decides
    mem.set_reference(ref)
    for chunk in history[:64].split(16):
        mem.observe(chunk)
    moved = history[:64].clone()
    moved[:, 0] += 0.05
    with torch.no_grad():
        a = auc(mem.logit(moved), mem.logit(fresh))
    assert (a > 0.9) if scaling == "isotropic" else (a < 0.8)


def test_jitter_spread_draws_one_level_per_row(data):
    _, _, ref = data
    fixed, spread = NoveltyMemory(cfg()), NoveltyMemory(cfg(jitter_spread=True))
    for m in (fixed, spread):
        m.set_reference(ref)
    x = torch.zeros(400, 8)
    nf, ns = fixed._noise(x, 0.5).norm(dim=1), spread._noise(x, 0.5).norm(dim=1)
    scale = 0.5 * float(fixed.std[0]) * 8 ** 0.5  # expected row norm at the full level
    assert abs(nf.mean() / scale - 1) < 0.15 and nf.min() > 0.3 * scale
    assert ns.min() < 0.05 * scale and ns.max() < 1.8 * scale and 0.35 < ns.mean() / scale < 0.65


def test_trajectory_embeddings_are_learnt_as_seen_but_not_counted_as_samples(data):
    history, fresh, ref = data
    mem = NoveltyMemory(cfg(trajectory=True))
    mem.set_reference(ref)
    early = history[16:48]  # stands for the 16 samples' x̂0 at two earlier steps
    for _ in range(5):
        mem.observe(history[:16], trajectory=early)
    assert mem.n_seen == 80 and len(mem.replay) == 48 * 5
    assert auc(mem.logit(early).detach(), mem.logit(fresh[:32]).detach()) > 0.9
    with pytest.raises(NoveltynetsError, match="trajectory"):
        mem.observe(history[:4], trajectory=torch.randn(8, 3))
    back = NoveltyMemory.from_bytes(mem.to_bytes())
    assert (back.n_seen, back.n_offered) == (mem.n_seen, mem.n_offered)
    # a memory whose reference holds no trajectories refuses them (it would learn "blurry = seen")
    plain = NoveltyMemory(cfg())
    plain.set_reference(ref)
    with pytest.raises(NoveltynetsError, match="no trajectories"):
        plain.observe(history[:16], trajectory=early)


@pytest.mark.parametrize("term_flag, memory_flag, rho", [(True, True, 1.0), (True, True, 0.0), (False, True, 1.0), (True, False, 1.0)])
def test_trajectory_term_observes_x0_hat_at_its_active_steps(tiny_cfg, scheduler_factory, term_flag, memory_flag, rho):
    """Recorded by the push (renoise_rho 0) or by the re-noising check (which sees x̂0 after the push)."""
    emb = PooledPixels(4)
    mem = NoveltyMemory(MemoryConfig(dim=16, embedder_id=emb.id, hidden=32, steps_per_observe=2, fourier=16, trajectory=memory_flag))
    mem.set_reference(torch.randn(32, 16))
    term = NoveltyGuidance(scale=0.5, stop=0.5, renoise_stop=0.5, renoise_rho=rho, trajectory=term_flag, memory=mem, embedder=emb)
    assert term.active_steps(6) == [0, 1, 2]
    seen = []
    term.observer = lambda e, info: seen.append((e, info["trajectory"]))
    alphas = build_scheduler().alphas_cumprod
    generate(GuidedModel(tiny_cfg, [term], alphas), scheduler_factory("ddim", 6), [0, 1, 2], [1] * 3, (1, 8, 8), 2)
    assert [len(e) for e, _ in seen] == [2, 1]
    if term_flag and memory_flag:  # 3 active steps per batch, one x̂0 embedding per sample and step, each clipped like the sampler's
        assert [len(t) for _, t in seen] == [6, 3] and all(t.abs().max() <= 1 for _, t in seen)
    else:  # switched off, or the memory's reference has no trajectories
        assert all(t is None for _, t in seen)


def test_trajectory_points_spread_the_observed_steps_over_the_guided_window(tiny_cfg, scheduler_factory):
    term = NoveltyGuidance(stop=0.5, renoise_rho=0)
    assert term.observed_steps(15) == term.active_steps(15) == list(range(8))  # 8 guided steps: all observed
    assert term.observed_steps(50) == [0, 3, 7, 10, 14, 17, 21, 24]  # 25 guided steps: 8 of them, first and last included
    assert NoveltyGuidance(stop=0.5, renoise_rho=0, trajectory_points=0).observed_steps(50) == list(range(25))
    # re-noising (until 0.8 of the run by default) widens the window the memory must know
    assert NoveltyGuidance(stop=0.5, renoise_rho=1).active_steps(50) == list(range(40))
    assert NoveltyGuidance(stop=0.5, renoise_rho=1).observed_steps(50) == [0, 6, 11, 17, 22, 28, 33, 39]
    assert NoveltyGuidance().observed_steps(50) == [0, 7, 13, 20, 27, 34, 40, 47]  # the default window: 48 guided steps
    with pytest.raises(NoveltynetsError, match="trajectory_points"):
        NoveltyGuidance(trajectory_points=-1)
    emb = PooledPixels(4)
    mem = NoveltyMemory(MemoryConfig(dim=16, embedder_id=emb.id, hidden=32, steps_per_observe=2, fourier=16, trajectory=True))
    mem.set_reference(torch.randn(32, 16))
    term = NoveltyGuidance(scale=0.5, stop=1.0, trajectory_points=3, memory=mem, embedder=emb)
    seen = []
    term.observer = lambda e, info: seen.append(info["trajectory"])
    generate(GuidedModel(tiny_cfg, [term], build_scheduler().alphas_cumprod), scheduler_factory("ddim", 10), [0, 1], [1] * 2,
             (1, 8, 8), 2)
    assert term.observed_steps(10) == [0, 4, 9] and len(seen[0]) == 3 * 2  # 3 steps × 2 samples, not 10 × 2


def test_trajectory_reference_pool_holds_the_pool_x0_hat_at_those_steps(tiny_unet, tmp_path):
    from noveltynets.session import reference_pool
    from noveltynets.memory.store import MemoryStore
    from noveltynets.models.unet import DiffusionModel

    model = DiffusionModel(tiny_unet, dict(build_scheduler().config), "tiny@0", tmp_path)
    store = MemoryStore(tmp_path / "s.db")
    emb = PooledPixels(4)
    config = SamplingConfig(klass=1, cfg=2.0, steps=4)
    finals = reference_pool(store, model, emb, config, 3)
    both = reference_pool(store, model, emb, config, 3, trajectory_steps=[0, 1])
    assert finals.shape == (3, 16) and both.shape == (9, 16)
    assert torch.allclose(both[:3], finals, atol=1e-6)  # the same unguided samples first, then their x̂0 at steps 0 and 1
    assert not torch.allclose(both[3:6], both[6:9])
    # step-major whatever the batching: (1 + K, N, dim)
    from noveltynets.session import pool_run
    batched = pool_run(model, emb, range(10**12, 10**12 + 3), config.replace(batch_size=2), [0, 1])
    assert torch.allclose(batched, both, atol=1e-5)
    assert torch.equal(reference_pool(store, model, emb, config, 3, trajectory_steps=[0, 1]), both)  # cached


def test_denoiser_features_keep_no_outputs_of_other_unet_calls(tiny_unet):
    emb = DenoiserFeatures(tiny_unet, "tiny@0", t=20)
    x = torch.randn(2, 1, 8, 8)
    first = emb(x)
    for _ in range(3):  # sampling calls the same UNet; the hook must not pile their outputs up
        tiny_unet(torch.randn(4, 1, 8, 8), torch.full((4,), 500), class_labels=torch.zeros(4, dtype=torch.long))
    assert emb._last is not None and len(emb._last) == 4
    assert torch.allclose(emb(x), first) and emb._last is None


@pytest.mark.parametrize("rho", [0.0, 1.0])
def test_trajectory_embedding_of_a_clipping_embedder_is_the_clipped_one_without_a_second_pass(rho):
    calls = []

    class Counting(PooledPixels):
        def __call__(self, x0):
            calls.append(1)
            return super().__call__(x0)

    emb = Counting(4)
    mem = NoveltyMemory(MemoryConfig(dim=16, embedder_id=emb.id, hidden=32, fourier=16, trajectory=True))
    mem.set_reference(torch.randn(32, 16))
    mem.observe(torch.randn(3, 16))
    term = NoveltyGuidance(memory=mem, embedder=emb, renoise_rho=rho)
    x0_hat = 1.5 * torch.randn(3, 1, 8, 8)  # partly out of range, as early x̂0 are
    # recorded by the push, or (re-noising on) by the re-noising check, which also scores the same embedding
    (term.renoise if rho else term.grad)(x0_hat, {"i": 0, "num_steps": 10})
    assert len(calls) == 1 and torch.allclose(term._trajectory[0], PooledPixels(4)(x0_hat.clamp(-1, 1)))


def test_recall_head_answers_for_finished_samples_and_the_smooth_head_for_trajectories(data):
    """seen_probability comes from the sharp recall head, trained on finished samples only (against
    the reference's finished samples); guidance's logit() also learns the trajectories."""
    history, fresh, ref = data
    early, early_ref = history[64:128], fresh[100:164]  # stand for x̂0 along the seen samples' and the pool's trajectories
    mem = NoveltyMemory(cfg(trajectory=True))
    mem.set_reference(torch.cat([ref, early_ref]), n_final=len(ref))
    for chunk, traj in zip(history[:64].split(16), early.split(16)):
        for _ in range(3):
            mem.observe(chunk, trajectory=traj)
    with torch.no_grad():
        recall = auc(mem.recall_logit(history[:64]), mem.recall_logit(fresh[:64]))
        assert recall > 0.95 and recall > auc(mem.logit(history[:64]), mem.logit(fresh[:64])) + 0.05  # sharp recalls better (0.99 vs 0.91)
        assert torch.equal(mem.seen_probability(history[:8]), torch.sigmoid(mem.recall_logit(history[:8])))
        assert auc(mem.logit(early), mem.logit(fresh[:64])) > 0.7  # the smooth head knows the trajectories ...
        assert auc(mem.recall_logit(early), mem.recall_logit(fresh[:64])) < 0.6  # ... the recall head does not
    assert len(mem.replay_final) == 64 * 3 and len(mem.replay) == 64 * 3 * 2
    back = NoveltyMemory.from_bytes(mem.to_bytes())
    assert back.n_ref_final == len(ref) and torch.equal(back.recall_logit(fresh), mem.recall_logit(fresh))
    with pytest.raises(NoveltynetsError, match="n_final"):
        mem.set_reference(ref, n_final=1)


def test_memory_saved_before_the_recall_head_loads_without_one(data):
    import json
    from dataclasses import asdict

    from safetensors.torch import save as st_save

    history, fresh, ref = data
    mem = NoveltyMemory(cfg(recall=False))
    mem.set_reference(ref)
    mem.observe(history[:16])
    config = {k: v for k, v in asdict(mem.config).items() if k not in ("recall", "recall_hidden")}
    tensors = {k: v for k, v in mem.state_tensors().items() if k != "replay_final"}
    tensors = {("opt." + k[len("net_opt."):] if k.startswith("net_opt.") else k): v for k, v in tensors.items()}
    tensors["counters"] = tensors["counters"][:3]
    old = NoveltyMemory.from_bytes(st_save(tensors, metadata={"config": json.dumps(config)}))
    assert old.recall_net is None and old.config.recall is False and old.n_ref_final == len(ref)
    assert torch.equal(old.logit(fresh), mem.logit(fresh))
    assert torch.equal(old.seen_probability(fresh), torch.sigmoid(old.logit(fresh)))
    old.observe(history[16:32])  # and it keeps learning (optimiser state restored)
    assert old.n_seen == 32


def test_renoise_asks_only_for_samples_the_memory_has_seen(data, trained):
    emb, mem, (history, fresh, _) = FIRST8, trained, data
    x = torch.zeros(32, 1, 4, 4)
    x.view(32, -1)[:16, :8], x.view(32, -1)[16:, :8] = history[:16], fresh[:16]
    term = NoveltyGuidance(scale=0.0, renoise_rho=0.7, renoise_threshold=0.5, memory=mem, embedder=emb)
    with torch.no_grad():
        p = torch.sigmoid(mem.logit(emb(x)))
    rho = term.renoise(x, {"i": 0, "num_steps": 10})
    assert torch.equal(rho, (p > 0.5).float() * 0.7)
    assert rho[:16].mean() > 0.6 and rho[16:].mean() < 0.2  # observed points re-noised, fresh ones left alone
    assert term.active(0.0) is False and term.renoises(0.0) and term.renoises(0.7) and not term.renoises(0.8)
    assert not NoveltyGuidance(memory=mem, embedder=emb).renoises(0.0)  # off by default
    assert not NoveltyGuidance(renoise_rho=1.0, embedder=emb).renoises(0.0)  # no memory, nothing to recognise
    for bad in ("renoise_rho=1.5", "renoise_threshold=-0.1", "stop=0.5,start=0.4,renoise_stop=0.3"):
        with pytest.raises(NoveltynetsError, match="renoise"):
            parse_guide("novelty:" + bad)


def test_renoising_memory_sends_a_seen_seed_elsewhere(tiny_cfg, scheduler_factory):
    """A memory that has seen seed 3's sample (and its trajectory) re-noises seed 3 on a second run;
    with re-noising only (scale 0), a seed it does not flag follows exactly its plain trajectory."""
    emb = PooledPixels(4)
    alphas = build_scheduler().alphas_cumprod
    make = scheduler_factory("ddim", 10)
    mem = NoveltyMemory(MemoryConfig(dim=16, embedder_id=emb.id, hidden=64, steps_per_observe=200, fourier=64, trajectory=True))
    pool = generate(tiny_cfg, make, list(range(100, 164)), [1] * 64, (1, 8, 8), 64)
    mem.set_reference(emb(pool.images))
    term = NoveltyGuidance(scale=0.0, renoise_rho=1.0, renoise_stop=1.0, trajectory_points=0, memory=mem, embedder=emb)
    guided = GuidedModel(tiny_cfg, [term], alphas)
    first = generate(guided, make, [3], [1], (1, 8, 8), 1).images  # memory empty: the plain sample
    assert torch.equal(first, generate(tiny_cfg, make, [3], [1], (1, 8, 8), 1).images)
    assert mem.n_seen == 1 and len(mem.replay) == 1 + 10  # the sample and its x̂0 at all 10 steps
    flagged = []
    term.renoise = (lambda f: lambda x0, info: flagged.append(f(x0, info)) or flagged[-1])(term.renoise)
    again = generate(guided, make, [3], [1], (1, 8, 8), 1).images
    assert torch.cat(flagged).sum() > 0 and not torch.allclose(again, first, atol=1e-3)


def test_a_projected_memory_lives_in_its_reference_principal_directions(data):
    history, fresh, _ = data
    g = torch.Generator().manual_seed(5)
    ref = torch.randn(100, 8, generator=g) * torch.tensor([3.0, 2.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.1])  # 3 directions matter
    mem = NoveltyMemory(cfg(projection=3))
    mem.set_reference(ref)
    assert mem.basis.shape == (8, 3) and torch.allclose(mem.basis.T @ mem.basis, torch.eye(3), atol=1e-5)
    assert mem.basis[3:].abs().max() < 0.2  # the low-variance dimensions are left out
    assert mem.negatives.shape == (100, 3)
    mem.observe(ref[:16])
    assert mem.replay.shape[1] == 3
    e = ref[:4].clone().requires_grad_(True)
    grad = torch.autograd.grad(mem.logit(e).sum(), e)[0]
    assert torch.allclose(grad, grad @ mem.basis @ mem.basis.T, atol=1e-5)  # it can only point along the basis
    again = NoveltyMemory.from_bytes(mem.to_bytes())
    assert torch.equal(again.basis, mem.basis) and torch.equal(again.logit(ref[:4]), mem.logit(ref[:4]))
    mem.reset()
    assert mem.n_seen == 0 and torch.equal(mem.basis, again.basis) and mem.negatives.shape == (100, 3)
    small = NoveltyMemory(cfg(projection=3))
    small.set_reference(ref[:3])  # 3 samples span 2 directions: the third column stays zero
    assert small.basis[:, 2].abs().max() == 0 and small.basis[:, :2].norm(dim=0).allclose(torch.ones(2))
    assert cfg(projection=3, negatives="jitter", target="classify").projection == 0  # no reference to find directions in
    assert cfg(projection=8).projection == 0 and cfg(projection=8).space_dim == 8


def _weights(mem):
    return [v for net in (mem.net, mem.recall_net) for v in net.state_dict().values()] + [mem.freqs, mem.recall_freqs]


def test_memory_leaves_the_global_rng_alone_and_its_seed_fixes_its_weights(data):
    history, fresh, ref = data
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = NoveltyMemory(cfg(seed=3))
    start = [w.clone() for w in _weights(a)]
    a.set_reference(ref)
    a.observe(history[:16])
    back = NoveltyMemory.from_bytes(a.to_bytes())
    a.reset()
    assert torch.equal(torch.get_rng_state(), before)  # create, observe, load and reset: no reseeding, no draws
    b = NoveltyMemory(cfg(seed=3))
    assert all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(_weights(b), start, _weights(a)))
    assert not torch.equal(back.net[0].weight, start[0])  # it learnt, and loading kept that
    assert not torch.equal(NoveltyMemory(cfg(seed=4)).net[0].weight, b.net[0].weight)


def test_memory_format_version_and_the_states_written_before_it(trained, data):
    import json

    from safetensors.torch import save as st_save

    from noveltynets.memory.novelty import FORMAT_VERSION

    fresh = data[1]
    blob = trained.to_bytes()
    meta = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])["__metadata__"]
    assert meta["format_version"] == str(FORMAT_VERSION) == "4"
    unversioned = st_save(trained.state_tensors(), metadata={"config": meta["config"]})  # as stores hold them today
    again = NoveltyMemory.from_bytes(unversioned)
    assert torch.equal(again.logit(fresh), trained.logit(fresh)) and again.n_seen == trained.n_seen
    newer = st_save(trained.state_tensors(), metadata={**meta, "format_version": str(FORMAT_VERSION + 1)})
    with pytest.raises(NoveltynetsError, match="newer noveltynets"):
        NoveltyMemory.from_bytes(newer)


def test_config_sections_are_a_view_of_the_flat_fields():
    from dataclasses import fields

    from noveltynets.memory.novelty import SECTIONS

    names = [n for section in SECTIONS.values() for n in section]
    assert sorted(names) == sorted(f.name for f in fields(MemoryConfig)) and len(names) == len(set(names))
    c = cfg(proximity_radius=0.5, replay_size=10)
    assert c.sections["targets"]["proximity_radius"] == 0.5 and c.sections["replay"]["replay_size"] == 10
    assert MemoryConfig.from_dict({**vars(c), "unknown": 1}) == c


def test_unit_of_length_follows_a_new_reference_of_the_same_size():
    mem = NoveltyMemory(MemoryConfig(dim=4, embedder_id="e", projection=0))
    mem.set_reference(torch.randn(32, 4, generator=torch.Generator().manual_seed(0)))
    first = mem.neighbour_distance()
    mem.set_reference(10 * torch.randn(32, 4, generator=torch.Generator().manual_seed(1)))  # same size, ten times the spacing
    assert mem.neighbour_distance() > 5 * first
    again = NoveltyMemory.from_bytes(mem.to_bytes())
    assert again.neighbour_distance() == mem.neighbour_distance()


def test_a_memory_learns_under_no_grad():
    mem = NoveltyMemory(MemoryConfig(dim=4, embedder_id="e", projection=0, steps_per_observe=3))
    mem.set_reference(torch.randn(32, 4, generator=torch.Generator().manual_seed(0)))
    before = [p.clone() for p in mem.net.parameters()]
    with torch.no_grad():  # diffusers pipelines run their whole call so
        mem.observe(torch.randn(8, 4, generator=torch.Generator().manual_seed(1)))
    assert any(not torch.equal(a, b) for a, b in zip(before, mem.net.parameters())) and mem.n_seen == 8
