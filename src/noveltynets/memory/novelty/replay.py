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
    free = max(0, cap - len(buf))
    buf = torch.cat([buf, emb[:free]])
    offered += len(emb[:free])
    for e in emb[free:]:
        offered += 1
        j = int(torch.randint(offered, (1,), generator=gen))
        if j < cap:
            buf[j] = e
    return buf, offered


def draw(pool: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` rows of ``pool``, drawn uniformly with replacement."""
    return pool[torch.randint(len(pool), (n,), generator=gen).to(pool.device)]
