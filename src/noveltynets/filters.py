"""Outer-loop filters: generate more samples than asked for, keep the ones that differ.

A filter never changes a sample; it decides which candidates to keep. ``Filter.run`` asks
for candidates through ``generate(seeds) -> images`` and keeps one image per requested seed,
batch by batch (``batch_size`` slots at a time, one history over the whole run as in the
benchmark), so its cost is honest: ``generated`` counts every candidate made.

- ``oversample:k=4,select=fps|kmedoids`` — each batch of m slots makes m·k candidates and keeps m:
  farthest-point selection (each pick the candidate farthest from the history and from the
  picks so far) or k-medoids (the m most representative candidates of the m·k).
- ``knn-filter:radius=0.5`` — a candidate closer than ``radius`` to any kept sample (earlier
  batches and earlier slots of its own batch; exact, faiss) is rejected and its slot tries again.
- ``lsh-filter:bits=20,bands=6`` — the same, with "close" decided by an LSH + Bloom filter
  (:class:`~noveltynets.embed.lsh.LSHBloom`, centred on the mean of the first batch of
  candidates): constant memory and time per lookup.

The kept set is the filter's history (``memory``: an :class:`~noveltynets.embed.history.ExactHistory`,
or an :class:`~noveltynets.embed.history.LSHHistory` for ``lsh-filter``). It learns each batch's kept
samples after the batch (through ``observer`` when the store keeps it under a name, so it spans
runs: ``noveltynets sample --filter knn-filter --memory NAME``); without one, a run starts empty.

A slot that is rejected tries new seeds until ``max_ratio`` candidates have been made for it,
then keeps the farthest of them (so a run always ends). Candidate seed r of the slot whose
requested seed is s is ``s`` for r = 0 and a 32-bit seed derived from (s, r) after that
(:func:`~noveltynets.sampling.seeds.derived_seed`; torch's CPU generator ignores the bits
above 32, so ``(r << 32) | s`` would remake seed s), so each kept image can be remade alone
with ``noveltynets sample --seeds``.
Distances are in the filter's own embedder (pooled pixels by default), never the
evaluation embedder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from .errors import NoveltynetsError
from .embed.embedders import embedder_from_spec
from .embed.history import ExactHistory, HistoryConfig, LSHConfig, LSHHistory
from .sampling.seeds import MAX_SEED, derived_seed
from .spec import parse_spec

FILTERS: dict[str, type["Filter"]] = {}


def candidate_seed(seed: int, r: int) -> int:
    """The r-th candidate of the slot whose requested seed is ``seed`` (r = 0 is the seed itself)."""
    return seed if r == 0 else derived_seed(seed, r, 0xF117E5)


def farthest_point(cands: torch.Tensor, m: int, history: torch.Tensor | None = None,
                   history_distance: torch.Tensor | None = None) -> list[int]:
    """Greedy farthest-point selection of m rows of ``cands`` (N, d): each pick maximises its
    distance to the history and the earlier picks; the first pick without history is row 0.
    The history is given as rows (``history``) or as each candidate's distance to it (``history_distance``)."""
    d = torch.full((len(cands),), float("inf"), dtype=cands.dtype)
    if history is not None and len(history):
        d = torch.cdist(cands, history.to(cands)).min(1).values
    if history_distance is not None:
        d = torch.minimum(d, history_distance.to(cands))
    picks: list[int] = []
    for _ in range(min(m, len(cands))):
        i = 0 if not picks and torch.isinf(d).all() else int(torch.argmax(d))
        picks.append(i)
        d = torch.minimum(d, (cands - cands[i]).norm(dim=1))
        d[picks] = -1.0
    return picks


def k_medoids(cands: torch.Tensor, m: int, iters: int = 20) -> list[int]:
    """k-medoids (Voronoi iteration, farthest-point start): m rows of ``cands`` that minimise the
    summed distance from every candidate to its medoid."""
    dist = torch.cdist(cands, cands)
    medoids = farthest_point(cands, m)
    for _ in range(iters):
        assign = dist[:, medoids].argmin(1)
        new = []
        for c, med in enumerate(medoids):
            members = torch.nonzero(assign == c).flatten()
            new.append(int(members[dist[members][:, members].sum(1).argmin()]) if len(members) else med)
        if new == medoids:
            break
        medoids = new
    return medoids


@dataclass
class FilteredRun:
    images: torch.Tensor  # (N, C, H, W), one per requested seed, in slot order
    seeds: list[int]  # the seed each kept image was made from
    generated: int  # candidates made in all


STATE = {"config": False}  # dataclass field metadata: live state, not configuration


@dataclass
class Filter:
    name: ClassVar[str] = ""
    history_kind: ClassVar[str | None] = "exact"  # the kind of history it keeps (see memory.store.KINDS)
    embedder: str = "pooled-pixels:8"
    max_ratio: int = 8  # at most this many candidates per kept sample
    memory: Any = dataclasses.field(default=None, repr=False, compare=False, metadata=STATE)  # the kept set (a history)
    observer: Any = dataclasses.field(default=None, repr=False, compare=False, metadata=STATE)  # learns each batch (the store)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            FILTERS[cls.name] = cls

    def __post_init__(self):
        if self.max_ratio < 1:
            raise NoveltynetsError(f"{self.name}: max_ratio must be at least 1, got {self.max_ratio}")
        self._embed = embedder_from_spec(self.embedder)
        self._attached = self.memory is not None

    def to_dict(self) -> dict:
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("config", True)}}

    def history_embedder(self, model=None):
        return self._embed

    def new_history(self, embedder, model_id: str = ""):
        """An empty history of this filter's kind for ``embedder``."""
        return ExactHistory(HistoryConfig(embedder.dim, embedder.id, model_id))

    def run(self, generate: Callable[[list[int]], torch.Tensor], seeds: list[int], batch_size: int = 16,
            advance: Callable[[int], None] = lambda n: None) -> FilteredRun:
        """Fill one slot per seed, ``batch_size`` at a time; the history learns each batch's kept samples.
        Without an attached history (``memory``) the run starts from an empty one."""
        if any(not 0 <= s <= MAX_SEED for s in seeds):
            raise NoveltynetsError(f"{self.name}: seeds must lie in 0..{MAX_SEED}")
        if not self._attached:  # a run of its own starts from an empty history
            self.memory = self.new_history(self._embed)
        images, used, made = [], [], 0
        for start in range(0, len(seeds), batch_size):
            imgs, kept, n, e = self.fill(generate, seeds[start:start + batch_size])
            if self.observer is not None:
                self.observer(e, {"seeds": kept})
            else:
                self.memory.observe(e)
            images.append(imgs)
            used += kept
            made += n
            advance(len(kept))
        return FilteredRun(torch.cat(images), used, made)

    def attach(self, memory, observer=None, embedder=None) -> None:
        """Keep ``memory`` (a history of this filter's kind, e.g. a named one from the store) across runs."""
        mine = dataclasses.asdict(self.new_history(self._embed).config)
        theirs = dataclasses.asdict(memory.config)
        differ = [f"{k}={theirs[k]}" for k in mine if k not in ("model_id",) and theirs.get(k) != mine[k]]
        if differ:
            raise NoveltynetsError(f"{self.name}: its history was made with {', '.join(differ)}")
        self.memory, self.observer, self._attached = memory, observer, True

    def fill(self, generate, seeds: list[int]) -> tuple[torch.Tensor, list[int], int, torch.Tensor]:
        """Images for one batch of slots, the seeds they came from, the candidates made and the kept embeddings."""
        raise NotImplementedError


@dataclass
class Oversample(Filter):
    name = "oversample"
    k: int = 4
    select: str = "fps"

    def __post_init__(self):
        super().__post_init__()
        if self.k < 1 or self.select not in ("fps", "kmedoids"):
            raise NoveltynetsError(f"oversample: need k >= 1 and select fps or kmedoids, got k={self.k}, select={self.select!r}")

    def fill(self, generate, seeds):
        cand_seeds = [candidate_seed(s, r) for r in range(self.k) for s in seeds]
        imgs = generate(cand_seeds)
        with torch.no_grad():
            e = self._embed(imgs).double()
        if self.select == "fps":
            picks = farthest_point(e, len(seeds), history_distance=self.memory.nearest(e) if self.memory.n_seen else None)
        else:
            picks = k_medoids(e, len(seeds))
        return imgs[picks], [cand_seeds[i] for i in picks], len(cand_seeds), e[picks]


@dataclass
class RejectionFilter(Filter):
    """Slots whose candidate is flagged as a near-duplicate try new seeds (see the module doc)."""

    def fill(self, generate, seeds):
        slots = {j: [] for j in range(len(seeds))}  # slot -> its candidates so far: (image, embedding, seed)
        done: dict[int, tuple] = {}
        made, r = 0, 0
        self.kept_now: list[torch.Tensor] = []  # this batch's kept embeddings: history for its later slots
        while len(done) < len(seeds):
            pending = [j for j in slots if j not in done]
            cand_seeds = [candidate_seed(seeds[j], r) for j in pending]
            imgs = generate(cand_seeds)
            made += len(cand_seeds)
            with torch.no_grad():
                e = self._embed(imgs).double()
            self.prepare(e)
            for j, img, ej, s in zip(pending, imgs, e, cand_seeds):  # in slot order: earlier slots are history for later ones
                slots[j].append((img, ej, s))
                if not self.flagged(ej[None]):
                    done[j] = (img, ej, s)
                elif r + 1 >= self.max_ratio:  # out of tries: keep the least flagged candidate
                    done[j] = max(slots[j], key=lambda c: float(self.distance(c[1][None])))
                else:
                    continue
                self.kept_now.append(done[j][1])
            r += 1
        kept = [done[j] for j in range(len(seeds))]
        return torch.stack([k[0] for k in kept]), [k[2] for k in kept], made, torch.stack([k[1] for k in kept])

    def prepare(self, e: torch.Tensor) -> None:
        """Sees each round's candidate embeddings before they are judged one by one."""

    def flagged(self, e: torch.Tensor) -> bool:
        raise NotImplementedError

    def distance(self, e: torch.Tensor) -> float:
        """How far from history and this batch's kept samples (larger = less flagged)."""
        raise NotImplementedError


@dataclass
class KnnFilter(RejectionFilter):
    name = "knn-filter"
    radius: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        if not self.radius > 0:
            raise NoveltynetsError(f"knn-filter: radius must be positive, got {self.radius}")

    def distance(self, e):
        d = float(self.memory.nearest(e)[0])
        return min([d] + [float((e[0] - k).norm()) for k in self.kept_now])

    def flagged(self, e):
        return self.distance(e) < self.radius


@dataclass
class LshFilter(RejectionFilter):
    name = "lsh-filter"
    bits: int = 20
    bands: int = 6
    seed: int = 0

    history_kind: ClassVar[str] = "lsh"

    def __post_init__(self):
        super().__post_init__()
        self.new_history(self._embed)  # validates bits and bands now

    def new_history(self, embedder, model_id: str = ""):
        return LSHHistory(LSHConfig(embedder.dim, embedder.id, model_id, self.bits, self.bands, self.seed))

    def prepare(self, e):
        if self.memory.lsh.center is None:  # SimHash needs centred embeddings: centre on the first candidates (kept with the history)
            self.memory.lsh.center = e.mean(0).cpu()

    def distance(self, e):
        """Minus the number of bands that collide with history or with this batch's kept samples (a constant-size measure)."""
        lsh = self.memory.lsh
        now = {k for ks in lsh.keys(torch.stack(self.kept_now)) for k in ks} if self.kept_now else set()
        return -float(sum(k in lsh.bloom or k in now for k in lsh.keys(e)[0]))

    def flagged(self, e):
        return self.distance(e) < 0


def parse_filter(spec: str) -> Filter:
    """``"oversample:k=4,select=kmedoids"`` → ``Oversample(k=4, select="kmedoids")``."""
    name, cfg = parse_spec(spec, FILTERS, "filter")
    return FILTERS[name](**cfg)
