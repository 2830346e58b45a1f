"""The benchmark's methods: a registry of ways to make N samples of a class on given seeds.

A method is written ``NAME[:key=value,...]``. ``cfg``, ``eta`` and ``temp`` (initial-noise
temperature) are understood by every method, so the plain knobs are ``plain:cfg=1``,
``plain:eta=1``, ``plain:temp=0.9``; so are ``grad`` (the guidance gradient mode, ``x0`` cheap or
``exact`` through the denoiser, as ``sample --grad-mode``) and ``memory`` (``continued``, ``fresh`` or ``unrelated``:
what a method's history is across the runs of ``bench --keep``, see :mod:`~noveltynets.bench.keep`);
the other keys belong to the method.

A method runs in three steps, so the keep-sampling runner can give its terms or filter histories
from the store in between: ``build`` (fresh guidance terms or filter, no history),
``attach_session`` (histories for this run only: a novelty memory with its reference pool) and
``generate``. Names resolve in
order: ``A+B`` combines guidance methods (:class:`Combo`), a method registered here with
:func:`register` (``plain``, ``novelty``, ``distilled``), then any
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
from ..sampling import SamplingConfig, sample
from ..session import history_owners, open_session, parse_guide, registry
from ..spec import convert, in_range, split_spec

METHODS: dict[str, type["Method"]] = {}


def register(cls: type["Method"]) -> type["Method"]:
    METHODS[cls.name] = cls
    return cls


MEMORY_MODES = ("continued", "fresh", "unrelated")


@dataclass
class Context:
    """What every method of one benchmark run shares: the model, the sampling settings, caches, a store
    (reference pools, and the named histories of ``bench --keep``)."""
    model: object
    steps: int = 50
    batch_size: int = 16
    device: str = "cpu"
    cache: dict = field(default_factory=dict)
    store: object = None  # a MemoryStore; None: a private one in memory, made on first use

    def get_store(self):
        if self.store is None:
            from ..memory.store import MemoryStore

            self.store = MemoryStore(":memory:")
        return self.store


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
        self.settings = split_spec(self.spec, "method")[1]
        self.cfg = self._pop("cfg", float, 2.0)
        self.eta = self._pop("eta", float, 0.0)
        self.temp = self._pop("temp", float, 1.0)
        self.memory = self._pop("memory", str, "continued")
        self.grad = self._pop("grad", str, "x0")
        self.clean = self._pop("clean", float, 0.0)
        if self.cfg < 0 or self.eta < 0 or not self.temp > 0 or not 0 <= self.clean <= 1:
            raise NoveltynetsError(f"method {self.spec!r}: cfg and eta must be non-negative, temp positive and clean in [0, 1]")
        if self.grad not in ("x0", "exact"):
            raise NoveltynetsError(f"method {self.spec!r}: grad must be x0 (cheap) or exact, got {self.grad!r}")
        if self.memory not in MEMORY_MODES:
            raise NoveltynetsError(f"method {self.spec!r}: memory must be one of {', '.join(MEMORY_MODES)}, got {self.memory!r}")

    def _pop(self, key: str, typ: type, default):
        if key not in self.settings:
            return default
        return convert(self.settings.pop(key), typ, key, f"method {self.spec!r}")

    def own_spec(self, name: str) -> str:
        """``name:key=value,...`` of the settings left after the shared ones (cfg, eta, temp) were taken."""
        return name + ":" + ",".join(f"{k}={v}" for k, v in self.settings.items())

    @property
    def label(self) -> str:
        return self.spec

    def build(self, ctx: Context, klass: int) -> list:
        """Fresh guidance terms, or ``[filter]``, for one run of one class (no history attached)."""
        return []

    def history_embedder(self, ctx: Context, owner):
        """The embedder of the history ``owner`` (one of :meth:`build`'s) keeps: its own, or a novelty memory's."""
        return owner.history_embedder(self.model_for(ctx))

    def model_for(self, ctx: Context):
        """The model this method samples (the benchmark's, unless the method brings its own: ``distilled``)."""
        return ctx.model

    def ranks_for(self, ctx: Context) -> tuple[int, ...] | None:
        """A distilled model's ranks, sample i of a run getting ``ranks[i % len(ranks)]``; None: no ranks."""
        return None

    rank_scale = 1.0  # rank guidance of a distilled model's ranks (SamplingConfig.rank_scale)

    def memory_options(self, owner) -> dict:
        """How a new novelty memory of ``owner`` is made: ``open_session``'s ``negatives``, ``pool_size`` and
        ``memory_config`` (defaults: those of ``noveltynets sample``)."""
        return {}

    def config(self, ctx: Context, klass: int | None) -> SamplingConfig:
        """The sampling config of this method's runs of class ``klass``."""
        return SamplingConfig(klass, self.cfg, ctx.steps, "ddim", self.eta, self.temp, ctx.batch_size, ctx.device, self.grad,
                              self.ranks_for(ctx), self.rank_scale, self.clean)

    def attach_session(self, ctx: Context, klass: int, built: list) -> None:
        """Histories for this run only, where one must be made: a novelty memory with its reference pool
        (the other terms and filters start their own empty history)."""
        terms, filt = _split(built)
        for i, owner in enumerate(history_owners(terms, filt)):
            if owner.history_kind == "novelty":
                open_session(self.model_for(ctx), self.config(ctx, klass), terms, filt, store=ctx.get_store(), owner=i,
                             embedder=self.history_embedder(ctx, owner), **self.memory_options(owner))

    def generate(self, ctx: Context, klass: int, seeds: list[int], built: list) -> MethodRun:
        raise NotImplementedError

    def run(self, ctx: Context, klass: int, seeds: list[int]) -> MethodRun:
        """One run with histories of its own; ``setup_seconds`` is what making them took (e.g. a reference pool)."""
        t0 = time.perf_counter()
        built = self.build(ctx, klass)
        self.attach_session(ctx, klass, built)
        setup = time.perf_counter() - t0
        out = self.generate(ctx, klass, seeds, built)
        out.setup_seconds = setup
        return out

    def _sample(self, ctx: Context, klass: int, seeds: list[int], guidance=()) -> MethodRun:
        run = sample(self.model_for(ctx), seeds, self.config(ctx, klass), list(guidance))
        return MethodRun(run.images.cpu(), run.seconds)


@register
class Plain(Method):
    """CFG sampling, nothing else: the baseline every ratio is taken against."""
    name = "plain"

    def __init__(self, spec: str):
        super().__init__(spec)
        if self.settings:
            raise NoveltynetsError(f"method 'plain' has no setting {next(iter(self.settings))!r}; settings: cfg, eta, temp, grad, clean")

    def generate(self, ctx, klass, seeds, built):
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

    def build(self, ctx, klass):
        return [parse_guide(self.guide)]

    def make_terms(self, ctx: Context, klass: int) -> list:
        """Fresh guidance terms for one class, with the histories they need for one run."""
        terms = self.build(ctx, klass)
        self.attach_session(ctx, klass, terms)
        return terms

    def generate(self, ctx, klass, seeds, built):
        return self._sample(ctx, klass, seeds, built)


@register
class Novelty(GuidanceMethod):
    """Novelty guidance with a fresh memory per class that persists across the class's batches.

    Own keys: ``pool`` (unguided samples in a reference pool, default 128 as in ``sample``),
    ``embedder`` (default ``pooled-pixels:32``) and any :class:`~noveltynets.memory.MemoryConfig` field
    (``negatives``, ``projection``, ``proximity_radius``, ...); the rest go to the guidance term."""
    name = "novelty"

    def __init__(self, spec: str):
        Method.__init__(self, spec)
        from dataclasses import fields

        from ..memory import MemoryConfig
        from ..embed.embedders import DEFAULT_EMBEDDER

        self.pool = self._pop("pool", int, 128)
        self.embedder = self._pop("embedder", str, DEFAULT_EMBEDDER)
        if self.pool < 2:
            raise NoveltynetsError(f"method {self.spec!r}: pool must be at least 2")
        self.memory_config = {}
        for f in fields(MemoryConfig):
            if f.name in self.settings and f.name not in ("dim", "embedder_id", "model_id", "trajectory"):
                self.memory_config[f.name] = self._pop(f.name, f.type, None)
        self.negatives = self.memory_config.pop("negatives", None)  # None: the model's default (session.default_negatives)
        if self.negatives not in (None, "pool", "real"):
            raise NoveltynetsError(f"method {self.spec!r}: negatives must be pool or real")
        self.guide = self.own_spec("novelty")
        parse_guide(self.guide)
        MemoryConfig(dim=1, embedder_id="", **{k: v for k, v in self.memory_config.items() if k != "projection"})  # validate now

    def history_embedder(self, ctx, owner):
        from ..embed import embedder_from_spec

        return embedder_from_spec(self.embedder, self.model_for(ctx))

    def memory_options(self, owner):
        return {"negatives": self.negatives, "pool_size": self.pool, "memory_config": self.memory_config}


@register
class Distilled(GuidanceMethod):
    """Rank-indexed sampling of a distilled model (:mod:`noveltynets.distill`): the i-th sample of a run gets rank
    ``ranks[i % len(ranks)]``, with no memory. Own keys: ``model`` (a distilled model folder, required), ``ranks``
    (a range such as ``1-16``; default every rank bin of the model) and ``rank_scale`` (rank guidance, default 1).
    Plain sampling, the baseline of every ratio, stays the benchmark's model. Combines with guidance methods, e.g.
    ``distilled:model=DIR+novelty`` (a memory on top)."""
    name = "distilled"

    def __init__(self, spec: str):
        Method.__init__(self, spec)
        from ..sampling import parse_ranks

        ranks, self.model_path = self._pop("ranks", str, None), self._pop("model", str, None)
        self.rank_scale = self._pop("rank_scale", float, 1.0)
        if self.settings:
            raise NoveltynetsError(f"method 'distilled' has no setting {next(iter(self.settings))!r}; settings: model, ranks, "
                                   "rank_scale, cfg, eta, temp, grad, clean")
        in_range(f"method {self.spec!r}: rank_scale", self.rank_scale, 0, 100)
        if not self.model_path:
            raise NoveltynetsError(f"method {self.spec!r}: give the distilled model, distilled:model=DIR (noveltynets distill train)")
        self.ranks = tuple(parse_ranks(ranks)) if ranks is not None else None
        self.guide = None

    def build(self, ctx, klass):
        return []

    def model_for(self, ctx):
        from ..models import load_model
        from ..sampling.loop import check_ranks

        key = ("distilled-model", self.model_path)
        if key not in ctx.cache:
            model = load_model(self.model_path, ctx.device)
            check_ranks(model, self.ranks or (1,))
            ctx.cache[key] = model
        return ctx.cache[key]

    def ranks_for(self, ctx):
        return self.ranks or tuple(range(1, self.model_for(ctx).num_ranks + 1))


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

    def build(self, ctx, klass):
        return [t for p in self.parts for t in p.build(ctx, klass)]

    def _part(self, owner) -> Method:
        return next(p for p in self.parts if p.name == owner.name)

    def history_embedder(self, ctx, owner):
        return self._part(owner).history_embedder(ctx, owner)

    def memory_options(self, owner):
        return self._part(owner).memory_options(owner)

    def model_for(self, ctx):
        return next((p.model_for(ctx) for p in self.parts if p.model_for(ctx) is not ctx.model), ctx.model)

    def ranks_for(self, ctx):
        return next((p.ranks_for(ctx) for p in self.parts if p.ranks_for(ctx) is not None), None)

    @property
    def rank_scale(self):
        return next((p.rank_scale for p in self.parts if p.rank_scale != 1), 1.0)


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

    def build(self, ctx, klass):
        return [parse_filter(self.filter_spec)]

    def generate(self, ctx, klass, seeds, built):
        store, asked, making = plain_store(ctx, self, klass), [], [0.0]

        def generate(batch):
            asked.extend(batch)
            missing = [s for s in batch if s not in store]
            for i in range(0, len(missing), ctx.batch_size):
                chunk = missing[i:i + ctx.batch_size]
                run = sample(self.model_for(ctx), chunk, self.config(ctx, klass))
                making[0] += run.seconds
                for s, img in zip(chunk, run.images.cpu()):
                    store[s] = (img, run.seconds / len(chunk))
            return torch.stack([store[s][0] for s in batch])

        t0 = time.perf_counter()
        out = built[0].run(generate, seeds, ctx.batch_size)
        own = time.perf_counter() - t0 - making[0]
        return MethodRun(out.images, own + sum(store[s][1] for s in asked), generated=out.generated)


def _split(built: list) -> tuple[list, object]:
    """(guidance terms, filter or None) of what :meth:`Method.build` made."""
    from ..filters import Filter

    filters = [b for b in built if isinstance(b, Filter)]
    return [b for b in built if not isinstance(b, Filter)], (filters[0] if filters else None)


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
