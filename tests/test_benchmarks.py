"""The benchmark scripts: every experiment of benchmarks/novelty_nets imports, and the renoise experiment's
kNN oracle is a guidance term that re-noises a sample repeating an earlier trajectory, and no other.

(``benchmarks`` is importable because tests/ is a package: pytest puts the repository root on the path.)"""

import importlib

import pytest
import torch

from benchmarks.novelty_nets import EXPERIMENTS
from benchmarks.novelty_nets.common import parse_args
from benchmarks.novelty_nets.renoise import KnnRenoise
from noveltynets.embed import PooledPixels
from noveltynets.models import build_scheduler
from noveltynets.sampling import GuidanceTerm, GuidedModel, generate
from noveltynets.sampling.term import REGISTRY

SHAPE = (1, 8, 8)
ALPHAS = build_scheduler().alphas_cumprod
STEPS = 6


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_imports_and_parses(name):
    assert callable(importlib.import_module(f"benchmarks.novelty_nets.{name}").run)
    args = parse_args([name, "--quick", "--classes", "7", "3"])
    assert (args.what, args.classes, args.n, args.steps, args.pool) == (name, [7], 32, 10, 32)


def test_knn_renoise_is_a_guidance_term_outside_the_registry():
    term = KnnRenoise(embedder=PooledPixels(4))
    assert isinstance(term, GuidanceTerm) and term.space == "x0"
    assert not term.active(0.0) and term.renoises(0.0) and term.renoises(0.79) and not term.renoises(0.8)
    assert term.to_dict() == {"name": "knn-renoise", "scale": 0.0, "start": 0.0, "stop": 0.8, "rho": 1.0, "quantile": 0.6}
    assert "knn-renoise" not in REGISTRY and "" not in REGISTRY  # importing the benchmark adds no --guide method


def test_knn_renoise_calibrates_its_thresholds_from_the_pool():
    pool = {k: torch.randn(8, 16, generator=torch.Generator().manual_seed(k)) for k in (0, 2)}
    low, high = KnnRenoise(quantile=0.1).calibrate(pool), KnnRenoise(quantile=0.9).calibrate(pool)
    assert set(low.taus) == {0, 2} and all(0 < low.taus[k] < high.taus[k] for k in (0, 2))


def test_knn_renoise_renoises_a_repeated_trajectory_not_a_fresh_one(tiny_cfg, scheduler_factory):
    make = scheduler_factory("ddim", STEPS)
    term = KnnRenoise(embedder=PooledPixels(4), taus={i: 1e-4 for i in range(STEPS)})
    guided = GuidedModel(tiny_cfg, [term], ALPHAS)

    def run(model, seeds):
        return generate(model, make, seeds, [3] * len(seeds), SHAPE, 4).images

    first = run(guided, [3])
    assert term.flags == 0 and torch.equal(first, run(tiny_cfg, [3]))  # no history yet: the plain sample
    assert set(term.history) == {i for i in range(STEPS) if i / STEPS < 0.8}  # learnt its x̂0 at every step it re-noises
    second = run(guided, [3])  # the same seed retraces the first trajectory: flagged, re-noised, a different sample
    assert term.flags >= 1 and not torch.allclose(second, first)
    flags = term.flags
    fresh = run(guided, [4])  # far from both earlier trajectories: left alone
    assert term.flags == flags and torch.equal(fresh, run(tiny_cfg, [4]))
