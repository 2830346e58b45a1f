"""Layer 7, the one way through: open a memory (or a peer's history) for a model, condition, sampling
config and embedder, guide with it, observe what was made, save.

    model = load_model()
    config = SamplingConfig(klass=7, cfg=2.0, steps=50)
    with open_session(model, config, guide=["novelty"], memory="sevens") as session:
        run = session.sample(range(64))   # guided by the memory, which then learns these 64
    session.info()                        # for the manifest: name, kind, embedder, versions, n_seen

:func:`open_session` loads the named history from the store (refused if it is of another kind or
was made with another model or embedder) or creates it, a new novelty memory with its reference
negatives (real images, or a pool of this model's unguided samples made once and cached in the
store), and binds it to the guidance term or filter that keeps it. After every batch that term
calls :meth:`Session.observe_embeddings`, which teaches the history and, for a named one, records
one row per sample and persists the state in one transaction. Without a name, a novelty term gets
a memory for this session only. Every front end (CLI, bench, benchmark scripts, service) goes
through here; the registry of every guidance term, the later layers' included, lives here too.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import torch

from .embed import DEFAULT_EMBEDDER, Embedder, embedder_from_spec, spec_of
from .errors import NoveltynetsError
from .filters import Filter, parse_filter
from .memory.store import MemoryStore, new_memory
from .models.unet import NULL_CLASS
from .sampling import SampleRun, SamplingConfig, sample
from .sampling.term import REGISTRY, GuidanceTerm
from .spec import parse_spec

POOL_SEED_BASE = 10**12  # reference-pool seeds: far from any user's 0..N
NEGATIVES = ("pool", "real", "jitter")
# Terms defined in later layers (they need models of their own), registered on first lookup by name.
LATER_TERMS = ("noveltynets.guidance", "noveltynets.minority.guidance")


def registry() -> dict[str, type[GuidanceTerm]]:
    """Every guidance term by name, the later layers' included."""
    for module in LATER_TERMS:
        importlib.import_module(module)
    return REGISTRY


def parse_guide(spec: str) -> GuidanceTerm:
    """``"point:scale=2,target=1"`` → ``PointGuidance(scale=2.0, target=1.0)``."""
    name, cfg = parse_spec(spec, registry(), "guidance")
    return GuidanceTerm.from_dict({"name": name, **cfg})


# -- reference negatives of a new novelty memory --------------------------------------------------------------
def pool_run(model, embedder: Embedder, seeds, config: SamplingConfig, trajectory_steps=(), show_progress: bool = False) -> torch.Tensor:
    """((1 + K)·N, dim) embeddings of unguided samples: the N finished ones, then, step by step,
    their x̂0 at each of the K ``trajectory_steps`` (where a trajectory memory observes its own samples)."""
    x0_hats: dict[int, list[torch.Tensor]] = {int(k): [] for k in trajectory_steps}

    def record(d):
        if d["i"] in x0_hats:
            with torch.no_grad():
                x0_hats[d["i"]].append(embedder(d["x0_hat"]).cpu())

    run = sample(model, seeds, config, show_progress=show_progress, callback=record)
    with torch.no_grad():
        return torch.cat([embedder(run.images.to(config.device)).cpu()] + [e for k in x0_hats for e in x0_hats[k]])


def pool_key(model, embedder: Embedder, config: SamplingConfig, size: int, trajectory_steps=()) -> str:
    """The store's key of a reference pool made with these settings."""
    key = f"{model.model_id}|{embedder.id}|{config.key()}|n={size}"
    return key + (f"|trajectory={','.join(map(str, trajectory_steps))}" if trajectory_steps else "")


def reference_pool(store: MemoryStore, model, embedder: Embedder, config: SamplingConfig, size: int, trajectory_steps=(),
                   show_progress: bool = False) -> torch.Tensor:
    """Embeddings of ``size`` unguided samples with ``config`` (and of their x̂0 at ``trajectory_steps``),
    made once and cached in the store."""
    return _cached_pool(store, model, embedder, config, size, trajectory_steps, show_progress)[0]


def _cached_pool(store: MemoryStore, model, embedder: Embedder, config: SamplingConfig, size: int, trajectory_steps=(),
                 show_progress: bool = False) -> tuple[torch.Tensor, float]:
    """:func:`reference_pool` and the seconds spent making it (0 when it came from the store)."""
    key = pool_key(model, embedder, config, size, trajectory_steps)
    cached = store.pool(key)
    if cached is not None:
        return cached, 0.0
    t0 = time.perf_counter()
    made = pool_run(model, embedder, range(POOL_SEED_BASE, POOL_SEED_BASE + size), config, trajectory_steps, show_progress)
    store.put_pool(key, made)
    return made, time.perf_counter() - t0


def real_reference(embedder: Embedder, klass: int | None) -> torch.Tensor:
    from .data import load_split

    train = load_split("train")
    with torch.no_grad():
        return embedder(train.of_class(klass) if klass is not None else train.images)


def default_negatives(model, negatives: str | None = None) -> str:
    """A new novelty memory's reference: ``negatives`` if given, else the real training images where they ship with
    the model (no sampling, so a new memory costs nothing up front), else a pool of the model's own unguided samples."""
    return negatives or ("real" if getattr(model, "trained_here", False) else "pool")


def history_owners(terms=(), filt=None) -> list:
    """The guidance terms and the filter of a run that keep a history (``history_kind``), in order."""
    owners = [t for t in terms if getattr(t, "history_kind", None) and getattr(t, "history", True)]
    return owners + ([filt] if filt is not None and filt.history_kind else [])


# -- the session ----------------------------------------------------------------------------------------------
class Session:
    """A run's guidance terms and filter, with the history one of them keeps bound to it (see :func:`open_session`)."""

    def __init__(self, model, config: SamplingConfig, terms: list, filt: Filter | None, owner=None, history=None,
                 embedder: Embedder | None = None, store: MemoryStore | None = None, name: str | None = None,
                 version: int | None = None, learn: bool = True, settings: dict | None = None, pool_seconds: float = 0.0,
                 owns_store: bool = False):
        self.model, self.config, self.terms, self.filter = model, config, terms, filt
        self.owner, self.history, self.embedder, self.store, self.name = owner, history, embedder, store, name
        self.version = self.version_before = version
        self.learn, self.settings, self.pool_seconds, self.owns_store = learn, settings or {}, pool_seconds, owns_store
        if owner is not None:
            owner.attach(history, self.observe_embeddings, embedder)

    # what the sampler and the user call
    def sample(self, seeds, show_progress: bool = False) -> SampleRun:
        """Images for ``seeds`` with this session's terms (and filter: one kept image per seed slot); the history learns them."""
        seeds = list(seeds)
        if self.filter is None:
            return sample(self.model, seeds, self.config, self.terms, show_progress)
        from .progress import progress_bar

        t0 = time.perf_counter()
        with progress_bar(len(seeds), f"{self.filter.name} (kept)", enabled=show_progress) as advance:
            fr = self.filter.run(lambda s: sample(self.model, s, self.config, self.terms).images, seeds, self.config.batch_size, advance)
        klass = self.config.klass if self.config.klass is not None else NULL_CLASS
        return SampleRun(fr.images, fr.seeds, [klass] * len(seeds), [time.perf_counter() - t0], generated=fr.generated)

    def observe(self, images: torch.Tensor, info: dict | None = None) -> None:
        """Teach the history finished ``images`` (N, C, H, W) in [-1, 1] made elsewhere; ``info`` may hold their ``seeds``."""
        if self.history is None:
            raise NoveltynetsError("this session keeps no history to observe into")
        with torch.no_grad():
            emb = self.embedder(images.to(self.history_device))
        self.observe_embeddings(emb, {"seeds": [None] * len(emb), **(info or {})})

    def observe_embeddings(self, embeddings: torch.Tensor, info: dict) -> None:
        """The owner's observer, after each batch: learn ``embeddings`` (and ``info["trajectory"]``), record and persist."""
        if not self.learn:
            return  # a frozen history (e.g. the bench's unrelated-memory control)
        trajectory = info.get("trajectory")
        if self.name is None:  # a memory for this session only
            self.history.observe(embeddings, trajectory=trajectory)
            return
        classes = info["classes"].tolist() if "classes" in info else [self.config.klass] * len(embeddings)
        records = [{"seed": None if s is None else int(s), "class": None if c is None else int(c), "settings": self.settings}
                   for s, c in zip(info["seeds"], classes)]
        self.history, self.version = self.store.observe(self.name, self.history, self.version, embeddings, records,
                                                        trajectory=trajectory)
        self.owner.memory = self.history

    def info(self) -> dict | None:
        """For the manifest: the history's name, kind, embedder, versions and size (None: no history)."""
        if self.history is None:
            return None
        if self.name is None:
            return {"name": None, "scope": "session", "kind": self.history.kind, "embedder": self.embedder.id, "n_seen": self.history.n_seen}
        return {"name": self.name, "store": str(self.store.path), "kind": self.history.kind, "embedder": self.embedder.id,
                "version_before": self.version_before, "version_after": self.version, "n_seen": self.history.n_seen}

    def save(self) -> None:
        """Write the history's state now, atomically (a named history is already persisted after every batch)."""
        if self.name is not None and self.learn:
            self.version = self.store.save(self.name, self.history)

    @property
    def history_device(self):
        return getattr(self.history, "device", self.config.device)

    def close(self) -> None:
        """Close the store if the session opened it (a :class:`MemoryStore` passed in stays open for its owner)."""
        if self.owns_store and self.store is not None:
            self.store.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _as_terms(guide) -> list[GuidanceTerm]:
    return [parse_guide(g) if isinstance(g, str) else g for g in ([guide] if isinstance(guide, (str, GuidanceTerm)) else guide)]


def open_session(model, config: SamplingConfig | None = None, guide=(), filter=None, memory: str | None = None,
                 store: MemoryStore | str | Path | None = None, embedder: Embedder | str | None = None, negatives: str | None = None,
                 pool_size: int = 128, scope: str = "user", memory_config: dict | None = None, owner: int | None = None,
                 learn: bool = True, settings: dict | None = None, show_progress: bool = False,
                 reference: torch.Tensor | None = None) -> Session:
    """A session of ``model`` with ``config``, guidance terms ``guide`` (specs such as ``"novelty:scale=2"`` or terms) and
    ``filter`` (a spec or a :class:`~noveltynets.filters.Filter`).

    ``memory`` names the history in ``store`` (a :class:`MemoryStore` or its path; default
    ``~/.cache/noveltynets/memories.sqlite``) that the one term or filter keeping a history guides with and
    updates: loaded if it exists, else created with ``scope``. Without a name, a novelty term gets a memory for
    this session only; peers keep their own history inside the term. ``owner`` picks one of several owners
    (an index into :func:`history_owners`). ``embedder`` (a spec or an Embedder) is a novelty memory's
    (default: an existing memory's own, else pooled pixels); a new memory's ``negatives`` are ``"real"``,
    ``"pool"`` (``pool_size`` unguided samples) or ``"jitter"``, its ``memory_config`` any
    :class:`~noveltynets.memory.MemoryConfig` fields; ``reference`` (N, dim) embeddings, if given, are a new memory's
    negatives instead (e.g. a diffusers pipeline's own unguided samples). ``learn=False`` guides without ever teaching the history.
    ``settings`` is recorded with every observed sample (default: the sampling config and the terms)."""
    from .guidance import NoveltyGuidance

    config = config or SamplingConfig()
    terms = _as_terms(guide)
    for term in terms:
        term.check_model(model)
    filt = parse_filter(filter) if isinstance(filter, str) else filter
    if filt is not None and config.ranks is not None:
        raise NoveltynetsError("ranks and an outer-loop filter do not combine (a filter's candidates have no rank of their own)")
    owners = history_owners(terms, filt)
    if sum(isinstance(t, NoveltyGuidance) for t in terms) > 1:
        raise NoveltynetsError("novelty guidance is given more than once: one novelty term per run (put all its settings in one spec)")
    if memory is not None and not owners:
        used = ", ".join([t.name for t in terms] + ([filt.name] if filt else [])) or "plain sampling"
        raise NoveltynetsError(f"--memory needs a method that keeps a history (--guide novelty or repel, --filter knn-filter, "
                               f"lsh-filter or oversample); {used} keeps none")
    if owner is None and memory is not None and len(owners) > 1:
        raise NoveltynetsError(f"--memory names one history, but {' and '.join(o.name for o in owners)} each keep one")
    if owner is not None:
        chosen = owners[owner]
    elif memory is not None:
        chosen = owners[0]
    else:
        chosen = next((o for o in owners if isinstance(o, NoveltyGuidance)), None)
    if chosen is None:  # nothing to bind: plain sampling, or peers whose history lives inside the term
        return Session(model, config, terms, filt)
    if negatives not in (None, *NEGATIVES):
        raise NoveltynetsError(f"--negatives must be pool, real or jitter, got {negatives!r}")
    if pool_size < 2:
        raise NoveltynetsError("--pool-size must be at least 2")
    st = store if isinstance(store, MemoryStore) else MemoryStore(store)
    if isinstance(chosen, NoveltyGuidance):
        if not isinstance(embedder, Embedder):
            known = memory is not None and st.exists(memory)
            embedder = embedder_from_spec(embedder or (spec_of(st.info(memory).embedder_id) if known else DEFAULT_EMBEDDER), model)
    elif embedder is not None:
        raise NoveltynetsError(f"--embedder is the novelty memory's; {chosen.name}'s history uses its own (e.g. {chosen.name}:embedder=...)")
    else:
        embedder = chosen.history_embedder(model)
    history, version, pool_seconds = _open_history(st, memory, chosen, model, embedder, config, negatives, pool_size, scope,
                                                   memory_config, show_progress, reference)
    settings = settings if settings is not None else {
        "class": config.klass, "cfg": config.cfg_used, "steps": config.steps, "scheduler": config.scheduler,
        "guidance": [t.to_dict() for t in terms], "filter": filt.to_dict() if filt else None,
        **({"ranks": list(config.ranks)} if config.ranks is not None else {}),
        **({"rank_scale": config.rank_scale} if config.rank_scale != 1 else {})}
    return Session(model, config, terms, filt, chosen, history, embedder, st, memory, version,
                   learn, settings, pool_seconds, owns_store=not isinstance(store, MemoryStore))


def _open_history(store: MemoryStore, name: str | None, owner, model, embedder: Embedder, config: SamplingConfig,
                  negatives: str | None, pool_size: int, scope: str, memory_config: dict | None, show_progress: bool,
                  reference: torch.Tensor | None = None):
    """(history, version, seconds spent making a reference pool): ``name`` loaded, or a new history (stored under ``name``)."""
    kind = owner.history_kind
    if name is not None and store.exists(name):
        return (*store.load(name, config.device, embedder.id, model.model_id, kind=kind), 0.0)
    pool_seconds = 0.0
    if kind == "novelty" and reference is not None:  # negatives given by the caller
        history = new_memory(embedder, model.model_id, config.device, trajectory=False, **{"negatives": "pool", **(memory_config or {})})
        history.set_reference(reference)
    elif kind == "novelty":
        negatives = default_negatives(model, negatives)
        cfg = {"negatives": negatives, **(memory_config or {})}
        proximity = cfg.get("target", "proximity") == "proximity" and negatives != "jitter"
        observes = owner.trajectory and (negatives == "pool" or proximity)  # see MemoryConfig.trajectory
        traj = owner.observed_steps(config.steps) if observes and negatives == "pool" else []  # the pool's x̂0 at those steps
        history = new_memory(embedder, model.model_id, config.device, trajectory=observes, **cfg)
        if negatives == "pool":
            pool_config = config.replace(batch_size=max(config.batch_size, 64))  # the same images in fewer, larger batches
            pool, pool_seconds = _cached_pool(store, model, embedder, pool_config, pool_size, traj, show_progress)
            history.set_reference(pool, n_final=pool_size)
        elif negatives == "real":
            history.set_reference(real_reference(embedder, config.klass))
    else:
        history = owner.new_history(embedder, model.model_id)
    if name is None:
        return history, None, pool_seconds
    store.create(name, history, scope)
    return (*store.load(name, config.device), pool_seconds)
