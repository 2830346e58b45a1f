"""Wiring a novelty memory into a sampling run: load or create it, its reference pool, its observer."""

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


def reference_pool(store: MemoryStore, model, embedder: Embedder, klass: int | None, cfg: float, steps: int, scheduler: str,
                   size: int, device: str = "cpu", show_progress: bool = False, trajectory_steps=()) -> torch.Tensor:
    """Embeddings of ``size`` unguided samples with these settings (and of their x̂0 at
    ``trajectory_steps``), made once and cached in the store."""
    key = f"{model.model_id}|{embedder.id}|class={klass}|cfg={cfg}|steps={steps}|{scheduler}|n={size}"
    if trajectory_steps:
        key += f"|trajectory={','.join(map(str, trajectory_steps))}"
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


def open_memory(store: MemoryStore, name: str, model, embedder: Embedder, klass, cfg, steps, scheduler, negatives: str = "pool",
                pool_size: int = 128, scope: str = "user", device: str = "cpu", show_progress: bool = False,
                trajectory_steps=()) -> tuple[NoveltyMemory, int]:
    """Load memory ``name`` (checking embedder and model) or create it with its reference negatives."""
    if store.exists(name):
        return store.load(name, device, embedder.id, model.model_id)
    memory = new_memory(embedder, model.model_id, device, negatives=negatives, trajectory=bool(trajectory_steps) and negatives == "pool")
    if negatives == "pool":
        memory.set_reference(reference_pool(store, model, embedder, klass, cfg, steps, scheduler, pool_size, device, show_progress,
                                            trajectory_steps), n_final=pool_size)
    elif negatives == "real":
        memory.set_reference(real_reference(embedder, klass))
    store.create(name, memory, scope)
    return store.load(name, device)


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
    """``NoveltyGuidance.observer``: after each batch, train and persist the memory in one transaction."""

    def __init__(self, store: MemoryStore, name: str, term, version: int, settings: dict):
        self.store, self.name, self.term, self.version, self.settings = store, name, term, version, settings

    def __call__(self, embeddings: torch.Tensor, info: dict) -> None:
        classes = info["classes"].tolist()
        records = [{"seed": int(s), "class": int(c), "settings": self.settings} for s, c in zip(info["seeds"], classes)]
        self.term.memory, self.version = self.store.observe(self.name, self.term.memory, self.version, embeddings, records,
                                                            trajectory=info.get("trajectory"))


def attach_memory(terms, memory: NoveltyMemory, embedder: Embedder, observer=None) -> None:
    from ..guidance import NoveltyGuidance

    found = False
    for term in terms:
        if isinstance(term, NoveltyGuidance):
            term.memory, term.embedder, term.observer, found = memory, embedder, observer, True
    if not found:
        raise NoveltynetsError("--memory needs --guide novelty")
