"""The replay: the embeddings a memory remembers, kept as a reservoir of fixed size (or all of them)."""

from __future__ import annotations

import torch


def reservoir_add(buf: torch.Tensor, emb: torch.Tensor, offered: int, cap: int | None,
                  gen: torch.Generator) -> tuple[torch.Tensor, int]:
    """Add ``emb`` to ``buf``, which ``offered`` rows have been offered to so far; returns the buffer and
    the new count. Reservoir sampling (Vitter's algorithm R) keeps every row ever offered with equal
    probability in at most ``cap`` rows; ``cap=None`` keeps all."""
    if cap is None:
        return torch.cat([buf, emb]), offered + len(emb)
    k = min(len(emb), max(0, cap - len(buf)))  # rows that fill free room
    buf = torch.cat([buf, emb[:k]])
    for i, j in enumerate(reservoir_slots(len(emb) - k, offered + k, cap, gen)):
        if j >= 0:
            buf[j] = emb[k + i]
    return buf, offered + len(emb)


def reservoir_slots(n: int, offered: int, cap: int, gen: torch.Generator) -> list[int]:
    """Where algorithm R puts each of ``n`` new rows in a reservoir of ``cap`` rows that ``offered`` rows were offered
    to before them: row i (the ``offered + i``-th) fills slot ``offered + i`` while there is room, then replaces a
    uniformly drawn slot with probability cap / (offered + i + 1), else is dropped (−1). Later rows win a slot drawn twice."""
    slots = []
    for o in range(offered, offered + n):
        j = o if o < cap else int(torch.randint(o + 1, (1,), generator=gen))
        slots.append(j if j < cap else -1)
    return slots


def draw(pool: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` rows of ``pool``, drawn uniformly with replacement."""
    return pool[torch.randint(len(pool), (n,), generator=gen).to(pool.device)]
