"""Teaching a memory a fixed set (e.g. the training images, so samples stop echoing training data)."""

from __future__ import annotations

import torch


def pretrain(memory, embeddings: torch.Tensor, epochs: int, observe=None, advance=None, chunk: int = 256, seed: int = 0):
    """Teach ``memory`` a fixed set: every embedding is observed once, in shuffled chunks, then the
    replay is rehearsed ``epochs`` times (one pass = one step per chunk).

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
