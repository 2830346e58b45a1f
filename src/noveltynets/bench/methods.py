"""The benchmark's methods: a registry of ways to make N samples of a class on given seeds.

A method is written ``NAME[:key=value,...]``. ``cfg`` and ``eta`` are understood by every
method; the other keys belong to the method. Names resolve in order: a method registered
here with :func:`register` (``plain``, ``novelty``, later the outer-loop filters), then any
guidance term of :mod:`noveltynets.guidance` (a fresh term per class, its keys as in
``noveltynets sample --guide``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..errors import NoveltynetsError
from ..guidance import REGISTRY as GUIDANCE, NoveltyGuidance, parse_guide
from ..sampling import sample

METHODS: dict[str, type["Method"]] = {}


def register(cls: type["Method"]) -> type["Method"]:
    METHODS[cls.name] = cls
    return cls


@dataclass
class Context:
    """What every method of one benchmark run shares: the model, the sampling settings, caches."""
    model: object
    steps: int = 50
    batch_size: int = 16
    device: str = "cpu"
    cache: dict = field(default_factory=dict)


@dataclass
class MethodRun:
    images: torch.Tensor  # (N, C, H, W) in [-1, 1], one per seed
    seconds: float  # wall time of making them (setup excluded)
    setup_seconds: float = 0.0  # one-off work a real user pays once (e.g. a memory's reference pool)
    generated: int | None = None  # samples generated to keep these N (filters); None = N


class Method:
    name: ClassVar[str]
    keys: ClassVar[dict[str, type]] = {}  # the method's own settings and their types

    def __init__(self, spec: str):
        self.spec = spec.strip()
        name, _, rest = self.spec.partition(":")
        self.settings: dict[str, str] = {}
        for item in filter(None, (s.strip() for s in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq:
                raise NoveltynetsError(f"method {name!r}: expected key=value, got {item!r}")
            self.settings[key.strip()] = value.strip()
        self.cfg = self._pop("cfg", float, 2.0)
        self.eta = self._pop("eta", float, 0.0)
        if self.cfg < 0 or self.eta < 0:
            raise NoveltynetsError(f"method {self.spec!r}: cfg and eta must be non-negative")

    def _pop(self, key: str, typ: type, default):
        if key not in self.settings:
            return default
        value = self.settings.pop(key)
        try:
            return typ(value)
        except ValueError:
            raise NoveltynetsError(f"method {self.spec!r}: {key}={value!r} is not a valid {typ.__name__}") from None

    @property
    def label(self) -> str:
        return self.spec

    def run(self, ctx: Context, klass: int, seeds: list[int]) -> MethodRun:
        raise NotImplementedError

    def _sample(self, ctx: Context, klass: int, seeds: list[int], guidance=()) -> MethodRun:
        run = sample(ctx.model, seeds, klass, self.cfg, ctx.steps, "ddim", self.eta, list(guidance),
                     batch_size=ctx.batch_size, device=ctx.device)
        return MethodRun(run.images.cpu(), run.seconds)


@register
class Plain(Method):
    """CFG sampling, nothing else: the baseline every ratio is taken against."""
    name = "plain"

    def __init__(self, spec: str):
        super().__init__(spec)
        if self.settings:
            raise NoveltynetsError(f"method 'plain' has no setting {next(iter(self.settings))!r}; settings: cfg, eta")

    def run(self, ctx, klass, seeds):
        return self._sample(ctx, klass, seeds)


class GuidanceMethod(Method):
    """Any guidance term, one fresh term per class (so per-class state never leaks)."""

    def __init__(self, spec: str):
        super().__init__(spec)
        self.name = self.spec.partition(":")[0]
        self.guide = self.name + ":" + ",".join(f"{k}={v}" for k, v in self.settings.items())
        parse_guide(self.guide)  # validate now, before any sampling

    def make_terms(self, ctx: Context, klass: int) -> list:
        return [parse_guide(self.guide)]

    def run(self, ctx, klass, seeds):
        return self._sample(ctx, klass, seeds, self.make_terms(ctx, klass))


@register
class Novelty(GuidanceMethod):
    """Novelty guidance with a fresh memory per class that persists across the class's batches.

    Own keys: ``pool`` (unguided samples in the reference pool, default 128 as in ``sample``),
    ``embedder`` (default ``pooled-pixels:8``); the rest go to the guidance term."""
    name = "novelty"

    def __init__(self, spec: str):
        Method.__init__(self, spec)
        self.pool = self._pop("pool", int, 128)
        self.embedder = self._pop("embedder", str, "pooled-pixels:8")
        if self.pool < 2:
            raise NoveltynetsError(f"method {self.spec!r}: pool must be at least 2")
        self.guide = "novelty:" + ",".join(f"{k}={v}" for k, v in self.settings.items())
        parse_guide(self.guide)

    def run(self, ctx, klass, seeds):
        from ..memory import embedder_from_spec
        from ..memory.setup import POOL_SEED_BASE, attach_memory, pool_run
        from ..memory.store import new_memory

        term: NoveltyGuidance = parse_guide(self.guide)
        emb = embedder_from_spec(self.embedder, ctx.model)
        traj = term.observed_steps(ctx.steps) if term.trajectory else []
        key = ("pool", emb.id, klass, self.cfg, self.pool, tuple(traj))
        t0 = time.perf_counter()
        if key not in ctx.cache:  # made once per run and shared by every novelty setting that needs it
            ctx.cache[key] = pool_run(ctx.model, emb, range(POOL_SEED_BASE, POOL_SEED_BASE + self.pool), klass, self.cfg,
                                      ctx.steps, "ddim", traj, ctx.device)
        memory = new_memory(emb, ctx.model.model_id, ctx.device, trajectory=bool(traj))
        memory.set_reference(ctx.cache[key], n_final=self.pool)
        attach_memory([term], memory, emb)
        setup = time.perf_counter() - t0
        out = self._sample(ctx, klass, seeds, [term])
        out.setup_seconds = setup
        return out


def parse_method(spec: str) -> Method:
    name = spec.strip().partition(":")[0]
    if name in METHODS:
        return METHODS[name](spec)
    if name in GUIDANCE:
        return GuidanceMethod(spec)
    known = sorted(set(METHODS) | set(GUIDANCE))
    raise NoveltynetsError(f"unknown method {name!r}; known: {', '.join(known)}")
