"""``noveltynets bench``: methods × classes on the same seeds, judged by the evaluation embedder.

Protocol of BENCHMARK.md: per class, every method makes the same seeds, 16 per batch, with one
history per class (a method with memory keeps it across the class's batches); plain CFG sampling
always runs first and every cost is a ratio to it, measured in the same run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .. import metrics
from ..data import load_mnist5k, load_split
from ..errors import NoveltynetsError
from ..models import build_scheduler
from ..models.embedder import load_eval_embedder
from ..sampling import make_scheduler
from ..sampling.loop import check_clean
from ..session import POOL_SEED_BASE
from .methods import Context, Method, parse_method

UNCOND = "uncond"  # the "class" of unconditional sampling: judged against all real images
METRIC_KEYS = ["near_dup", "novelty", "vendi", "precision", "recall", "density", "coverage", "adherence",
               "avg_knn", "lof", "memorization", "fid", "kid"]


@dataclass
class BenchConfig:
    methods: list[str] = field(default_factory=lambda: ["plain", "novelty"])
    classes: list[int | str] = field(default_factory=lambda: [1, 3, 7])  # digits, or UNCOND for unconditional sampling
    n: int = 256
    steps: int = 50
    batch_size: int = 16
    device: str = "cpu"
    seed_offset: int = 0

    @classmethod
    def quick(cls, **overrides) -> "BenchConfig":
        """One class, 64 samples, 10 steps: the smoke run the tests use (< 2 minutes on 2 CPU cores)."""
        return cls(**{"classes": [7], "n": 64, "steps": 10, **overrides})

    def check_seeds(self, runs: int) -> None:
        """The seeds of ``runs`` runs of n, from seed_offset on, stay below the reference pools' seeds."""
        if not 0 <= self.seed_offset <= POOL_SEED_BASE - runs * self.n:
            raise NoveltynetsError(f"--seed-offset must lie in 0..{POOL_SEED_BASE - runs * self.n} (the seeds of "
                                   f"{runs} run(s) of {self.n} stay below the reference pools' {POOL_SEED_BASE}), got {self.seed_offset}")

    def validate(self) -> list[Method]:
        if self.n < 6:
            raise NoveltynetsError(f"--n must be at least 6 (recall uses the samples' 5 nearest neighbours), got {self.n}")
        if self.steps <= 0 or self.batch_size <= 0:
            raise NoveltynetsError("--steps and --batch-size must be positive")
        if not self.methods:
            raise NoveltynetsError("no methods given")
        self.check_seeds(1)
        bad = [c for c in self.classes if c != UNCOND and not (isinstance(c, int) and 0 <= c <= 9)]
        if bad or not self.classes:
            raise NoveltynetsError(f"classes must be digits 0-9 or {UNCOND!r}, got {self.classes}")
        methods = [parse_method(m) for m in self.methods]
        if not any(m.spec == "plain" for m in methods):  # the baseline of every ratio
            methods.insert(0, parse_method("plain"))
        for m in (m for m in methods if m.clean):  # a clean-up no timestep of the run lies below: said now, not after runs
            try:
                check_clean(m.clean, make_scheduler("ddim", dict(build_scheduler().config), self.steps))
            except NoveltynetsError as e:
                raise NoveltynetsError(f"method {m.spec!r}: {e}") from None
        labels = [m.label for m in methods]
        if len(set(labels)) != len(labels):
            raise NoveltynetsError(f"a method is listed twice: {labels}")
        return sorted(methods, key=lambda m: m.spec != "plain")


class Judge:
    """All metrics of one class's samples, in the evaluation embedder's space (never the guidance one).

    Real = all real images of the class (precision, recall, density, coverage, AvgkNN, LOF, τ of
    near-dups); FID/KID against the held-out images of the class; memorization in pixels against
    the whole training split. ``klass=None`` (unconditional samples): all real images, no adherence."""

    def __init__(self, klass: int | None, device: str = "cpu", evaluator=None):
        self.klass = klass
        self.ev = evaluator or load_eval_embedder(device=device)
        real, heldout = load_mnist5k(), load_split("heldout")
        self.real = self.ev.features(real.images if klass is None else real.of_class(klass)).numpy()
        self.heldout = self.ev.features(heldout.images if klass is None else heldout.of_class(klass)).numpy()
        self.train_px = load_split("train").images.flatten(1).numpy()
        self.tau = metrics.near_dup_threshold(self.real)

    def __call__(self, images: torch.Tensor, history: torch.Tensor | None = None) -> dict:
        """Metrics of ``images`` in sampling order; with ``history``, near-dups count against it too."""
        f = self.ev.features(images).numpy()
        n_hist = 0
        if history is not None:
            n_hist = len(history)
            f = np.concatenate([self.ev.features(history).numpy(), f])
        d = metrics.nearest_earlier_distance(f)[max(1, n_hist):]
        new = f[n_hist:]
        p, r = metrics.precision_recall(self.real, new)
        dens, cov = metrics.density_coverage(self.real, new)
        adherence = {} if self.klass is None else {"adherence": metrics.adherence(self.ev.predict(images).numpy(), self.klass)}
        return {
            "near_dup": float((d < self.tau).mean()), "novelty": float(d.mean()), "vendi": metrics.vendi_score(new),
            "precision": p, "recall": r, "density": dens, "coverage": cov, **adherence,
            "avg_knn": float(metrics.avg_knn(self.real, new).mean()), "lof": float(metrics.lof(self.real, new).mean()),
            "memorization": metrics.memorization_rate(images.flatten(1).numpy(), self.train_px),
            "fid": metrics.fid(self.heldout, new), "kid": metrics.kid(self.heldout, new)[0],
        }

    def cumulative(self, images: torch.Tensor) -> dict:
        """Metrics of everything generated so far: Vendi, coverage of the real class, distinct modes
        (greedy cover at the near-dup radius τ, in order)."""
        f = self.ev.features(images).numpy()
        return {"vendi_all": metrics.vendi_score(f), "coverage_all": metrics.density_coverage(self.real, f)[1],
                "modes": int(metrics.greedy_cover(f, self.tau)[-1])}


def run_bench(cfg: BenchConfig, model, advance=lambda **kw: None, log=lambda row: None) -> dict:
    """Run every method on every class; returns {"config", "rows", "means", "images"}.

    ``advance(**fields)`` is called after each (class, method); ``log(row)`` with each row."""
    methods = cfg.validate()
    ctx = Context(model=model, steps=cfg.steps, batch_size=cfg.batch_size, device=cfg.device)
    seeds = list(range(cfg.seed_offset, cfg.seed_offset + cfg.n))
    evaluator = load_eval_embedder(device="cpu")
    rows, images = [], {m.label: {} for m in methods}
    for label in cfg.classes:
        klass = None if label == UNCOND else label
        judge = Judge(klass, evaluator=evaluator)
        plain_per_sample = None
        for m in methods:
            t0 = time.perf_counter()
            out = m.run(ctx, klass, seeds)
            generated = out.generated or len(out.images)
            per_sample = out.seconds / len(out.images)
            plain_per_sample = plain_per_sample or per_sample  # plain runs first
            row = {"class": label, "method": m.name, "setting": m.label, "n": len(out.images),
                   "seconds": out.seconds, "setup_seconds": out.setup_seconds, "per_sample_s": per_sample,
                   "cost_ratio": per_sample / plain_per_sample, "generated_per_kept": generated / len(out.images),
                   **judge(out.images)}
            rows.append(row)
            images[m.label][label] = out.images
            log(row)
            advance(klass=klass, method=m.label, seconds=round(time.perf_counter() - t0, 1))
    return {"config": asdict(cfg), "rows": rows, "means": mean_rows(rows), "images": images}


def mean_rows(rows: list[dict]) -> list[dict]:
    """One row per setting: the mean over classes of every number."""
    out = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        rs = [r for r in rows if r["setting"] == setting]
        mean = {k: float(np.mean([r[k] for r in rs])) for k in rs[0] if isinstance(rs[0][k], float) and all(k in r for r in rs)}
        out.append({"class": "mean", "method": rs[0]["method"], "setting": setting, "n": rs[0]["n"], "n_classes": len(rs), **mean})
    return out
