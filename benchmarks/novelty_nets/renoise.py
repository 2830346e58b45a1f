"""``renoise``: re-noising triggered by the memory vs by an exact kNN oracle over the trajectories."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from noveltynets.bench.runner import Judge
from noveltynets.errors import NoveltynetsError
from noveltynets.sampling import GuidanceTerm, sample

from .common import Memories, emit, load, sampling_config


@dataclass
class KnnRenoise(GuidanceTerm):
    """Oracle trigger for re-noising: sample i is re-noised at step k when its x̂0 embedding lies
    closer to some earlier sample's x̂0 *at the same step* than τ_k (the ``quantile`` of
    nearest-neighbour distances among the reference pool's x̂0 at step k, see :meth:`calibrate`):
    exact kNN over the whole history of trajectories, what the memory's re-noising check approximates.

    A guidance term with no gradient (``scale`` 0) that re-noises while ``start ≤ i/n < stop``; it
    learns each finished batch's trajectories in ``on_samples_end`` (as a memory does), so batches are
    checked against every earlier batch, not against their batch-mates. Unregistered (``name`` is
    empty, ``label`` names it in rows and ``to_dict``): it needs an embedder and calibrated thresholds,
    which no ``--guide`` spec can give, and importing the benchmark must not add a method to the CLI's
    or the bench's list of guidance names."""

    label: ClassVar[str] = "knn-renoise"
    scale: float = 0.0  # no push: it only re-noises
    stop: float = 0.8  # re-noise while start <= i/n < stop (the memory's renoise_stop)
    rho: float = 1.0  # share of a flagged sample's noise the sampler re-draws
    quantile: float = 0.6  # τ_k: this quantile of the pool's nearest-neighbour distances at step k
    embedder: Any = field(default=None, repr=False, compare=False, metadata={"config": False})
    taus: dict = field(default_factory=dict, repr=False, compare=False, metadata={"config": False})  # step -> τ_k
    history: dict = field(default_factory=dict, repr=False, compare=False, metadata={"config": False})  # step -> (N, dim)
    current: dict = field(default_factory=dict, repr=False, compare=False, metadata={"config": False})  # this batch's
    flags: int = field(default=0, repr=False, compare=False, metadata={"config": False})  # re-noisings requested so far

    def __post_init__(self):
        super().__post_init__()
        if self.scale != 0:
            raise NoveltynetsError(f"{self.label}: only re-noises (scale must be 0, got {self.scale})")
        if not 0 <= self.rho <= 1 or not 0 <= self.quantile <= 1:
            raise NoveltynetsError(f"{self.label}: rho and quantile must be in [0, 1], got {self.rho} and {self.quantile}")

    @torch.no_grad()
    def calibrate(self, pool: dict[int, torch.Tensor]) -> "KnnRenoise":
        """τ_k from ``pool[k]`` (N ≥ 2, dim): the pool's x̂0 embeddings at step k, as ``session.pool_run`` records them."""
        for k, e in pool.items():
            e = e.float()
            d = torch.cdist(e, e).fill_diagonal_(float("inf")).min(1).values
            self.taus[int(k)] = float(d.quantile(self.quantile))
        return self

    def renoises(self, progress: float) -> bool:
        return self.start <= progress < self.stop

    def reset(self) -> None:
        self.current = {}

    @torch.no_grad()
    def renoise(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        i = info["i"]
        e = self.embedder(x0_hat.clamp(-1, 1))  # the sampler clips x̂0; the pool's x̂0 are clipped too
        self.current[i] = e
        seen = self.history.get(i)
        if seen is None or i not in self.taus:  # nothing at this step yet, or a step the pool does not hold
            return torch.zeros(len(e), device=x0_hat.device, dtype=x0_hat.dtype)
        flag = torch.cdist(e.float(), seen.float()).min(1).values < self.taus[i]
        self.flags += int(flag.sum())
        return flag.to(x0_hat.dtype) * self.rho

    def on_samples_end(self, x0: torch.Tensor, info: dict) -> None:
        for i, e in self.current.items():
            self.history[i] = torch.cat([self.history[i], e]) if i in self.history else e
        self.current = {}

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "name": self.label}


def run(args) -> dict:
    """Re-noising (``novelty:scale=0,renoise_rho=1``) triggered by the memory vs by the exact kNN
    oracle (:class:`KnnRenoise`, one per ``--quantiles``), against plain sampling, on the same seeds."""
    model, emb = load(args)
    memories = Memories(model, emb, args)
    steps = [i for i in range(args.steps) if i / args.steps < args.renoise_stop]
    rows = []
    for klass in args.classes:
        judge, seeds, config = Judge(klass, args.device), list(range(args.n)), sampling_config(args, klass)
        pool = memories.reference(config, steps).view(1 + len(steps), args.pool, -1)[1:].to(args.device)
        pool = dict(zip(steps, pool))  # the pool's x̂0 at each step it re-noises
        runs = [("plain", [])]
        for q in args.quantiles:
            runs.append((f"knn-oracle q={q}", [KnnRenoise(stop=args.renoise_stop, quantile=q, embedder=emb).calibrate(pool)]))
        tc = {"scale": 0.0, "renoise_rho": 1.0, "renoise_stop": args.renoise_stop, **args.term_config}
        runs.append(("memory " + json.dumps(tc), [memories.term(config, **tc)]))
        for label, terms in runs:
            run = sample(model, seeds, config, terms)
            flags = terms[0].flags / args.n if terms and isinstance(terms[0], KnnRenoise) else None
            rows.append(emit(args, {"class": klass, "method": label, "flags_per_sample": flags, "seconds": run.seconds,
                                    **judge(run.images)}))
    memories.close()
    return {"rows": rows}
