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
  (:class:`~noveltynets.memory.lsh.LSHBloom`, centred on the mean of the first batch of
  candidates): constant memory and time per lookup.

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
from typing import Callable, ClassVar

import torch

from .errors import NoveltynetsError
from .memory.embedders import embedder_from_spec
from .memory.history import KnnHistory
from .memory.lsh import LSHBloom
from .sampling.seeds import MAX_SEED, derived_seed
from .spec import parse_spec

FILTERS: dict[str, type["Filter"]] = {}


def candidate_seed(seed: int, r: int) -> int:
    """The r-th candidate of the slot whose requested seed is ``seed`` (r = 0 is the seed itself)."""
    return seed if r == 0 else derived_seed(seed, r, 0xF117E5)


def farthest_point(cands: torch.Tensor, m: int, history: torch.Tensor | None = None) -> list[int]:
    """Greedy farthest-point selection of m rows of ``cands`` (N, d): each pick maximises its
    distance to the history and the earlier picks; the first pick without history is row 0."""
    d = torch.full((len(cands),), float("inf"), dtype=cands.dtype)
    if history is not None and len(history):
        d = torch.cdist(cands, history.to(cands)).min(1).values
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


@dataclass
class Filter:
    name: ClassVar[str] = ""
    embedder: str = "pooled-pixels:8"
    max_ratio: int = 8  # at most this many candidates per kept sample

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            FILTERS[cls.name] = cls

    def __post_init__(self):
        if self.max_ratio < 1:
            raise NoveltynetsError(f"{self.name}: max_ratio must be at least 1, got {self.max_ratio}")
        self._embed = embedder_from_spec(self.embedder)

    def to_dict(self) -> dict:
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    def run(self, generate: Callable[[list[int]], torch.Tensor], seeds: list[int], batch_size: int = 16,
            advance: Callable[[int], None] = lambda n: None) -> FilteredRun:
        if any(not 0 <= s <= MAX_SEED for s in seeds):
            raise NoveltynetsError(f"{self.name}: seeds must lie in 0..{MAX_SEED}")
        self.reset()
        images, used, made = [], [], 0
        for start in range(0, len(seeds), batch_size):
            imgs, kept, n = self.fill(generate, seeds[start:start + batch_size])
            images.append(imgs)
            used += kept
            made += n
            advance(len(kept))
        return FilteredRun(torch.cat(images), used, made)

    def reset(self) -> None:
        """Forget the history (called at the start of every run)."""

    def fill(self, generate, seeds: list[int]) -> tuple[torch.Tensor, list[int], int]:
        """Images for one batch of slots, the seeds they came from and the candidates made."""
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

    def reset(self):
        self._history = None

    def fill(self, generate, seeds):
        cand_seeds = [candidate_seed(s, r) for r in range(self.k) for s in seeds]
        imgs = generate(cand_seeds)
        with torch.no_grad():
            e = self._embed(imgs).double()
        picks = farthest_point(e, len(seeds), self._history) if self.select == "fps" else k_medoids(e, len(seeds))
        self._history = e[picks] if self._history is None else torch.cat([self._history, e[picks]])
        return imgs[picks], [cand_seeds[i] for i in picks], len(cand_seeds)


@dataclass
class RejectionFilter(Filter):
    """Slots whose candidate is flagged as a near-duplicate try new seeds (see the module doc)."""

    def fill(self, generate, seeds):
        slots = {j: [] for j in range(len(seeds))}  # slot -> its candidates so far: (image, embedding, seed)
        done: dict[int, tuple] = {}
        made, r = 0, 0
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
                self.remember(done[j][1][None])
            r += 1
        kept = [done[j] for j in range(len(seeds))]
        return torch.stack([k[0] for k in kept]), [k[2] for k in kept], made

    def prepare(self, e: torch.Tensor) -> None:
        """Sees each round's candidate embeddings before they are judged one by one."""

    def flagged(self, e: torch.Tensor) -> bool:
        raise NotImplementedError

    def distance(self, e: torch.Tensor) -> float:
        raise NotImplementedError

    def remember(self, e: torch.Tensor) -> None:
        raise NotImplementedError


@dataclass
class KnnFilter(RejectionFilter):
    name = "knn-filter"
    radius: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        if not self.radius > 0:
            raise NoveltynetsError(f"knn-filter: radius must be positive, got {self.radius}")

    def reset(self):
        self._history = KnnHistory(self._embed.dim)

    def distance(self, e):
        return float(self._history.nearest(e)[0])

    def flagged(self, e):
        return self.distance(e) < self.radius

    def remember(self, e):
        self._history.add(e)


@dataclass
class LshFilter(RejectionFilter):
    name = "lsh-filter"
    bits: int = 20
    bands: int = 6
    seed: int = 0

    def reset(self):
        self._lsh = LSHBloom(self._embed.dim, self.bits, self.bands, self.seed)
        self._knn = KnnHistory(self._embed.dim)  # only to pick the least-bad candidate when a slot runs out of tries

    def __post_init__(self):
        super().__post_init__()
        self.reset()  # validates bits and bands now

    def prepare(self, e):
        if self._lsh.center is None:  # SimHash needs centred embeddings: centre on the first candidates
            self._lsh.center = e.mean(0).cpu()

    def distance(self, e):
        return float(self._knn.nearest(e)[0])

    def flagged(self, e):
        return bool(self._lsh.seen(e)[0])

    def remember(self, e):
        self._lsh.add(e)
        self._knn.add(e)


def parse_filter(spec: str) -> Filter:
    """``"oversample:k=4,select=kmedoids"`` → ``Oversample(k=4, select="kmedoids")``."""
    name, cfg = parse_spec(spec, FILTERS, "filter")
    return FILTERS[name](**cfg)
