"""Wiring a history into a sampling run: load or create it (a novelty memory with its reference pool,
or a peer's exact or LSH history), attach it to the term or filter that keeps it, and its store observer."""

from __future__ import annotations

import torch

from ..errors import NoveltynetsError
from .embedders import Embedder
from .novelty import NoveltyMemory
from .store import MemoryStore, new_memory

POOL_SEED_BASE = 10**12  # reference-pool seeds: far from any user's 0..N


def pool_run(model, embedder: Embedder, seeds, klass: int | None, cfg: float, steps: int, scheduler: str,
             trajectory_steps=(), device: str = "cpu", show_progress: bool = False, batch_size: int = 64) -> torch.Tensor:
    """((1 + K)·N, dim) embeddings of unguided samples: the N finished ones, then, step by step,
    their x̂0 at each of the K ``trajectory_steps`` (where a trajectory memory observes its own samples)."""
    from ..sampling import sample

    x0_hats: dict[int, list[torch.Tensor]] = {int(k): [] for k in trajectory_steps}

    def record(d):
        if d["i"] in x0_hats:
            with torch.no_grad():
                x0_hats[d["i"]].append(embedder(d["x0_hat"]).cpu())

    run = sample(model, seeds, klass, cfg, steps, scheduler, batch_size=batch_size, device=device,
                 show_progress=show_progress, callback=record)
    with torch.no_grad():
        return torch.cat([embedder(run.images.to(device)).cpu()] + [e for k in x0_hats for e in x0_hats[k]])


def pool_key(model, embedder: Embedder, klass, cfg, steps, scheduler, size, trajectory_steps=()) -> str:
    """The store's key of a reference pool made with these settings."""
    key = f"{model.model_id}|{embedder.id}|class={klass}|cfg={cfg}|steps={steps}|{scheduler}|n={size}"
    return key + (f"|trajectory={','.join(map(str, trajectory_steps))}" if trajectory_steps else "")


def reference_pool(store: MemoryStore, model, embedder: Embedder, klass: int | None, cfg: float, steps: int, scheduler: str,
                   size: int, device: str = "cpu", show_progress: bool = False, trajectory_steps=()) -> torch.Tensor:
    """Embeddings of ``size`` unguided samples with these settings (and of their x̂0 at
    ``trajectory_steps``), made once and cached in the store."""
    key = pool_key(model, embedder, klass, cfg, steps, scheduler, size, trajectory_steps)
    cached = store.pool(key)
    if cached is not None:
        return cached
    emb = pool_run(model, embedder, range(POOL_SEED_BASE, POOL_SEED_BASE + size), klass, cfg, steps, scheduler,
                   trajectory_steps, device, show_progress)
    store.put_pool(key, emb)
    return emb


def real_reference(embedder: Embedder, klass: int | None) -> torch.Tensor:
    from ..data import load_split

    train = load_split("train")
    images = train.of_class(klass) if klass is not None else train.images
    with torch.no_grad():
        return embedder(images)


def default_negatives(model, negatives: str | None = None) -> str:
    """A new novelty memory's reference: ``negatives`` if given, else the real training images where they ship with
    the model (no sampling, so a new memory costs nothing up front), else a pool of the model's own unguided samples."""
    return negatives or ("real" if getattr(model, "trained_here", False) else "pool")


def history_owners(terms=(), filt=None) -> list:
    """The guidance terms and the filter of a run that keep a history (``history_kind``), in order."""
    owners = [t for t in terms if getattr(t, "history_kind", None) and getattr(t, "history", True)]
    return owners + ([filt] if filt is not None and filt.history_kind else [])


def open_history(store: MemoryStore, name: str | None, owner, model, embedder: Embedder, klass, cfg, steps, scheduler,
                 negatives: str | None = None, pool_size: int = 128, scope: str = "user", device: str = "cpu",
                 show_progress: bool = False, memory_config: dict | None = None) -> tuple:
    """The history ``owner`` (a guidance term or filter with a ``history_kind``) keeps, and its version.

    ``name`` in the store: loaded if it exists (refused if it is of another kind or was made with
    another embedder or model), else created. ``name=None``: a history for this run only (session
    scope, not stored; version None). A new novelty memory gets its reference negatives here:
    ``negatives="pool"`` (``pool_size`` unguided samples with these settings, and their x̂0 where
    ``owner`` observes trajectories, made once and cached in the store) or ``"real"`` (the real
    images of ``klass``). ``embedder`` is the history's: a novelty memory's, or the owner's own."""
    kind = owner.history_kind
    negatives = default_negatives(model, negatives)
    if name is not None and store.exists(name):
        return store.load(name, device, embedder.id, model.model_id, kind=kind)
    if kind == "novelty":
        config = {"negatives": negatives, **(memory_config or {})}
        proximity = config.get("target", "proximity") == "proximity" and negatives != "jitter"
        observes = owner.trajectory and (negatives == "pool" or proximity)  # see MemoryConfig.trajectory
        traj = owner.observed_steps(steps) if observes and negatives == "pool" else []  # the pool's x̂0 at those steps
        history = new_memory(embedder, model.model_id, device, trajectory=observes, **config)
        if negatives == "pool":
            history.set_reference(reference_pool(store, model, embedder, klass, cfg, steps, scheduler, pool_size, device,
                                                 show_progress, traj), n_final=pool_size)
        elif negatives == "real":
            history.set_reference(real_reference(embedder, klass))
    else:
        history = owner.new_history(embedder, model.model_id)
    if name is None:
        return history, None
    store.create(name, history, scope)
    return store.load(name, device)


def open_memory(store: MemoryStore, name: str, model, embedder: Embedder, klass, cfg, steps, scheduler, negatives: str = "pool",
                pool_size: int = 128, scope: str = "user", device: str = "cpu", show_progress: bool = False,
                trajectory_steps=()) -> tuple[NoveltyMemory, int]:
    """Load novelty memory ``name`` (checking embedder and model) or create it with its reference negatives."""
    from ..guidance import NoveltyGuidance

    return open_history(store, name, NoveltyGuidance(trajectory=bool(trajectory_steps)), model, embedder, klass, cfg, steps,
                        scheduler, negatives, pool_size, scope, device, show_progress)


def pretrain(memory: NoveltyMemory, embeddings: torch.Tensor, epochs: int, observe=None, advance=None,
             chunk: int = 256, seed: int = 0) -> NoveltyMemory:
    """Teach ``memory`` a fixed set (e.g. the training images): every embedding is observed once,
    in shuffled chunks, then the replay is rehearsed ``epochs`` times (one pass = one step per chunk).

    ``observe(memory, embeddings, indices) -> memory`` replaces ``memory.observe`` (the store
    passes one that records and persists); ``advance(**fields)`` is called after every chunk and epoch.
    """
    if observe is None:
        def observe(m, e, idx):
            m.observe(e)
            return m

    chunks = torch.randperm(len(embeddings), generator=torch.Generator().manual_seed(seed)).split(chunk)
    for idx in chunks:
        memory = observe(memory, embeddings[idx.to(embeddings.device)], idx)
        if advance:
            advance()
    for _ in range(epochs):
        loss = memory.rehearse(steps=len(chunks))
        if advance:
            advance(loss=loss)
    return memory


class StoreObserver:
    """An owner's ``observer``: after each batch, teach its history the batch and persist it, in one transaction."""

    def __init__(self, store: MemoryStore, name: str, owner, version: int, settings: dict):
        self.store, self.name, self.owner, self.version, self.settings = store, name, owner, version, settings

    def __call__(self, embeddings: torch.Tensor, info: dict) -> None:
        classes = info["classes"].tolist() if "classes" in info else [self.settings.get("class")] * len(embeddings)
        records = [{"seed": int(s), "class": None if c is None else int(c), "settings": self.settings}
                   for s, c in zip(info["seeds"], classes)]
        self.owner.memory, self.version = self.store.observe(self.name, self.owner.memory, self.version, embeddings, records,
                                                             trajectory=info.get("trajectory"))


def attach_memory(terms, memory: NoveltyMemory, embedder: Embedder, observer=None) -> None:
    """Give every novelty term of ``terms`` this memory (and observer)."""
    from ..guidance import NoveltyGuidance

    found = False
    for term in terms:
        if isinstance(term, NoveltyGuidance):
            term.attach(memory, observer, embedder)
            found = True
    if not found:
        raise NoveltynetsError("--memory needs --guide novelty")
