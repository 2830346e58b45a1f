"""The benchmark's methods: a registry of ways to make N samples of a class on given seeds.

A method is written ``NAME[:key=value,...]``. ``cfg``, ``eta`` and ``temp`` (initial-noise
temperature) are understood by every method, so the plain knobs are ``plain:cfg=1``,
``plain:eta=1``, ``plain:temp=0.9``; the other keys belong to the method. Names resolve in
order: ``A+B`` combines guidance methods (:class:`Combo`), a method registered here with
:func:`register` (``plain``, ``novelty``), then any
guidance term of :mod:`noveltynets.guidance` (a fresh term per class, its keys as in
``noveltynets sample --guide``), then any outer-loop filter of :mod:`noveltynets.filters`
(over plain sampling, its keys as in ``--filter``; its cost counts every candidate made).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..errors import NoveltynetsError
from ..filters import FILTERS, parse_filter
from ..guidance import NoveltyGuidance, parse_guide, registry
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
        self.temp = self._pop("temp", float, 1.0)
        if self.cfg < 0 or self.eta < 0 or not self.temp > 0:
            raise NoveltynetsError(f"method {self.spec!r}: cfg and eta must be non-negative and temp positive")

    def _pop(self, key: str, typ: type, default):
        if key not in self.settings:
            return default
        value = self.settings.pop(key)
        try:
            return typ(value)
        except ValueError:
            raise NoveltynetsError(f"method {self.spec!r}: {key}={value!r} is not a valid {typ.__name__}") from None

    def own_spec(self, name: str) -> str:
        """``name:key=value,...`` of the settings left after the shared ones (cfg, eta, temp) were taken."""
        return name + ":" + ",".join(f"{k}={v}" for k, v in self.settings.items())

    @property
    def label(self) -> str:
        return self.spec

    def run(self, ctx: Context, klass: int, seeds: list[int]) -> MethodRun:
        raise NotImplementedError

    def _sample(self, ctx: Context, klass: int, seeds: list[int], guidance=()) -> MethodRun:
        run = sample(ctx.model, seeds, klass, self.cfg, ctx.steps, "ddim", self.eta, list(guidance),
                     batch_size=ctx.batch_size, device=ctx.device, temperature=self.temp)
        return MethodRun(run.images.cpu(), run.seconds)


@register
class Plain(Method):
    """CFG sampling, nothing else: the baseline every ratio is taken against."""
    name = "plain"

    def __init__(self, spec: str):
        super().__init__(spec)
        if self.settings:
            raise NoveltynetsError(f"method 'plain' has no setting {next(iter(self.settings))!r}; settings: cfg, eta, temp")

    def run(self, ctx, klass, seeds):
        out = self._sample(ctx, klass, seeds)
        store = plain_store(ctx, self, klass)  # the filters' candidates r = 0 are these very images
        for s, img in zip(seeds, out.images):
            store.setdefault(s, (img, out.seconds / len(seeds)))
        return out


def plain_store(ctx: Context, method: Method, klass: int) -> dict:
    """seed -> (plain image, seconds it took to make) for one class and one cfg/eta/temp, shared by a run's methods."""
    return ctx.cache.setdefault(("plain-images", klass, method.cfg, method.eta, method.temp, ctx.steps), {})


class GuidanceMethod(Method):
    """Any guidance term, one fresh term per class (so per-class state never leaks)."""

    def __init__(self, spec: str):
        super().__init__(spec)
        self.name = self.spec.partition(":")[0]
        self.guide = self.own_spec(self.name)
        parse_guide(self.guide)  # validate now, before any sampling

    def make_terms(self, ctx: Context, klass: int) -> list:
        """Fresh guidance terms for one class (with whatever one-off setup they need)."""
        return [parse_guide(self.guide)]

    def run(self, ctx, klass, seeds):
        t0 = time.perf_counter()
        terms = self.make_terms(ctx, klass)
        setup = time.perf_counter() - t0
        out = self._sample(ctx, klass, seeds, terms)
        out.setup_seconds = setup
        return out


@register
class Novelty(GuidanceMethod):
    """Novelty guidance with a fresh memory per class that persists across the class's batches.

    Own keys: ``pool`` (unguided samples in the reference pool, default 128 as in ``sample``),
    ``embedder`` (default ``pooled-pixels:32``); the rest go to the guidance term."""
    name = "novelty"

    def __init__(self, spec: str):
        Method.__init__(self, spec)
        self.pool = self._pop("pool", int, 128)
        from ..memory.embedders import DEFAULT_EMBEDDER

        self.embedder = self._pop("embedder", str, DEFAULT_EMBEDDER)
        if self.pool < 2:
            raise NoveltynetsError(f"method {self.spec!r}: pool must be at least 2")
        self.guide = self.own_spec("novelty")
        parse_guide(self.guide)

    def make_terms(self, ctx, klass):
        from ..memory import embedder_from_spec
        from ..memory.setup import POOL_SEED_BASE, attach_memory, pool_run
        from ..memory.store import new_memory

        term: NoveltyGuidance = parse_guide(self.guide)
        emb = embedder_from_spec(self.embedder, ctx.model)
        traj = term.observed_steps(ctx.steps) if term.trajectory else []
        key = ("pool", emb.id, klass, self.cfg, self.pool, tuple(traj))
        if key not in ctx.cache:  # made once per run and shared by every novelty setting that needs it
            ctx.cache[key] = pool_run(ctx.model, emb, range(POOL_SEED_BASE, POOL_SEED_BASE + self.pool), klass, self.cfg,
                                      ctx.steps, "ddim", traj, ctx.device)
        memory = new_memory(emb, ctx.model.model_id, ctx.device, trajectory=bool(traj))
        memory.set_reference(ctx.cache[key], n_final=self.pool)
        attach_memory([term], memory, emb)
        return [term]


class Combo(GuidanceMethod):
    """Several guidance methods at once, ``A+B`` (e.g. ``novelty:scale=1+particle:scale=3``): every part's
    terms act together. ``cfg``, ``eta`` and ``temp`` may be given in any part and must agree."""

    def __init__(self, spec: str):
        Method.__init__(self, spec.partition("+")[0])
        self.spec = spec.strip()
        self.parts = [parse_method(p) for p in self.spec.split("+")]
        if any(not isinstance(p, GuidanceMethod) for p in self.parts) or len(self.parts) < 2:
            raise NoveltynetsError(f"method {self.spec!r}: only guidance methods combine with '+'")
        knobs = {(p.cfg, p.eta, p.temp) for p in self.parts}
        if len(knobs) > 1:
            raise NoveltynetsError(f"method {self.spec!r}: its parts set different cfg/eta/temp")
        self.cfg, self.eta, self.temp = knobs.pop()
        self.name = "+".join(p.name for p in self.parts)

    def make_terms(self, ctx, klass):
        return [t for p in self.parts for t in p.make_terms(ctx, klass)]


class FilterMethod(Method):
    """An outer-loop filter over plain sampling, one fresh filter (and history) per class.

    A plain image depends on its seed only, so candidates are made once per run and shared by
    every filter setting (and the plain baseline): its cost is the filter's own time plus, for
    every candidate it asked for, the time that candidate took to make (in batches of
    ``batch_size``), whether or not another setting asked for it first."""

    def __init__(self, spec: str):
        super().__init__(spec)
        self.name = self.spec.partition(":")[0]
        self.filter_spec = self.own_spec(self.name)
        parse_filter(self.filter_spec)  # validate now

    def run(self, ctx, klass, seeds):
        store, asked, making = plain_store(ctx, self, klass), [], [0.0]

        def generate(batch):
            asked.extend(batch)
            missing = [s for s in batch if s not in store]
            for i in range(0, len(missing), ctx.batch_size):
                chunk = missing[i:i + ctx.batch_size]
                run = sample(ctx.model, chunk, klass, self.cfg, ctx.steps, "ddim", self.eta, batch_size=ctx.batch_size,
                             device=ctx.device, temperature=self.temp)
                making[0] += run.seconds
                for s, img in zip(chunk, run.images.cpu()):
                    store[s] = (img, run.seconds / len(chunk))
            return torch.stack([store[s][0] for s in batch])

        t0 = time.perf_counter()
        out = parse_filter(self.filter_spec).run(generate, seeds, ctx.batch_size)
        own = time.perf_counter() - t0 - making[0]
        return MethodRun(out.images, own + sum(store[s][1] for s in asked), generated=out.generated)


def parse_method(spec: str) -> Method:
    if "+" in spec:
        return Combo(spec)
    name = spec.strip().partition(":")[0]
    if name in METHODS:
        return METHODS[name](spec)
    if name in registry():
        return GuidanceMethod(spec)
    if name in FILTERS:
        return FilterMethod(spec)
    known = sorted(set(METHODS) | set(registry()) | set(FILTERS))
    raise NoveltynetsError(f"unknown method {name!r}; known: {', '.join(known)}")
