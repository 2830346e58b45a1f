"""Sparse repellency (SPELL): the ball correction, its mapping to x̂0, references from history and the batch."""

import numpy as np
import pytest
import torch

from noveltynets.errors import NoveltynetsError
from noveltynets.guidance import RepelGuidance
from noveltynets.session import parse_guide
from noveltynets.guidance.repel import ball_correction
from noveltynets.models import build_scheduler
from noveltynets.sampling import GuidedModel, generate


def test_ball_correction_moves_to_the_edge_and_ignores_points_outside():
    z = torch.zeros(1, 3)
    e = torch.tensor([[0.3, 0.0, 0.0], [2.0, 0.0, 0.0]])
    delta = ball_correction(e, [z, z], radius=1.0)
    assert torch.allclose(e[0] + delta[0], torch.tensor([1.0, 0.0, 0.0]))  # exactly onto the sphere
    assert torch.equal(delta[1], torch.zeros(3))  # outside every ball: no intervention
    two = ball_correction(torch.tensor([[0.0, 0.5, 0.0]]), [torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])], radius=1.0)
    assert torch.allclose(two, torch.zeros(1, 3), atol=1e-6)  # symmetric references cancel


def test_grad_moves_x0_hat_so_its_embedding_lands_on_the_ball_edge():
    term = RepelGuidance(radius=0.5, overcompensation=1.0, in_batch=False)
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 1, 32, 32, generator=g) - 0.5  # inside [-1, 1] after the move too (the embedder clips)
    term.add(term._embed(ref))
    x0 = (ref + 0.05 * torch.randn(ref.shape, generator=g)).clamp(-1, 1)
    a = torch.tensor(0.2)
    grad = term.grad(x0, {"alpha_bar": a})
    moved = x0 + (1 - a) / a * grad  # what the cheap gradient mode does to x̂0 (guidance.base)
    dist = (term._embed(moved) - term._embed(ref)).norm()
    assert (term._embed(x0) - term._embed(ref)).norm() < 0.5 and dist == pytest.approx(0.5, abs=1e-3)
    assert term.interventions == 1
    far = torch.rand(1, 1, 32, 32, generator=g) * 2 - 1
    assert torch.equal(term.grad(far, {"alpha_bar": a}), torch.zeros_like(far))


def test_batch_mates_repel_only_the_later_ones_and_history_grows():
    term = RepelGuidance(radius=0.5)
    base = torch.zeros(1, 1, 32, 32)
    x0 = torch.cat([base, base + 0.01])  # two near-copies in one batch
    grad = term.grad(x0, {"alpha_bar": torch.tensor(0.5)})
    assert grad[0].abs().max() == 0 and grad[1].abs().max() > 0
    assert term.n_references == 0
    term.on_samples_end(x0, {})
    assert term.n_references == 2
    no_history = RepelGuidance(history=False)
    no_history.on_samples_end(x0, {})
    assert no_history.n_references == 0


def test_a_repeated_seed_is_sent_away_from_its_first_sample(tiny_cfg, scheduler_factory):
    term = RepelGuidance(radius=0.5, embedder="pooled-pixels:4")
    model = GuidedModel(tiny_cfg, [term], build_scheduler().alphas_cumprod)
    make = scheduler_factory("ddim", 8)
    first = generate(model, make, [3], [1], (1, 8, 8), 1).images
    assert torch.equal(first, generate(tiny_cfg, make, [3], [1], (1, 8, 8), 1).images)  # no references yet: plain
    second = generate(model, make, [3], [1], (1, 8, 8), 1).images
    assert term.n_references == 2 and term.interventions > 0
    assert (term._embed(second) - term._embed(first)).norm() > 0.1


def test_repel_config_and_bad_input():
    term = parse_guide("repel:radius=0.8,overcompensation=1.2,in_batch=false")
    assert term.to_dict() == {"name": "repel", "scale": 1.0, "start": 0.0, "stop": 1.0, "radius": 0.8,
                              "overcompensation": 1.2, "history": True, "in_batch": False, "embedder": "pooled-pixels:8",
                              "protect": ""}
    for bad, msg in [("repel:radius=0", "positive"), ("repel:embedder=warp", "unknown embedder"),
                     ("repel:embedder=denoiser-mid", "needs the diffusion model")]:
        with pytest.raises(NoveltynetsError, match=msg):
            parse_guide(bad)
    with pytest.raises(NoveltynetsError, match="references: .*must be finite"):
        RepelGuidance(references=torch.zeros(3, 5))


def test_a_protected_set_from_the_training_split_or_a_file(tmp_path):
    assert RepelGuidance(protect="train", history=False).n_references == 4500
    imgs = np.full((3, 32, 32), 255, dtype=np.uint8)
    np.savez(tmp_path / "samples.npz", images=imgs)
    term = RepelGuidance(protect=str(tmp_path / "samples.npz"))
    assert term.n_references == 3
    x0 = torch.ones(1, 1, 32, 32) * 0.99  # next to the protected all-ink image
    assert term.grad(x0, {"alpha_bar": torch.tensor(0.5)}).abs().max() > 0
    for bad in [str(tmp_path / "missing.npy"), __file__]:
        with pytest.raises(NoveltynetsError, match="cannot read protected images"):
            RepelGuidance(protect=bad)
    np.save(tmp_path / "flat.npy", np.zeros(5, dtype=np.float32))
    with pytest.raises(NoveltynetsError, match="must be"):
        RepelGuidance(protect=str(tmp_path / "flat.npy"))
