"""A near-duplicate filter: locality-sensitive hashing of embeddings into a Bloom filter.

Each embedding e is centred (c: the mean of the first batch the filter sees, kept from then
on) and projected on ``bands × bits`` random hyperplanes; the signs are the bits (SimHash:
two embeddings at angle θ agree on one bit with probability 1 − θ/π). The bits are cut into
``bands`` bands; a band's key is (band number, its bits). Two embeddings collide when any
band agrees in full, which is likely for near-duplicates and rare for others ("banding":
P(collide) = 1 − (1 − (1 − θ/π)^bits)^bands). Keys go into an rbloom Bloom filter with a stable
hash (BLAKE2b), so the filter is the same in every process and can be saved; memory is a few
bits per key whatever the history size, and a lookup costs the same with 10 or 10⁶ items.
"""

from __future__ import annotations

import hashlib

import torch

from ..errors import NoveltynetsError


def stable_hash(key: bytes) -> int:
    """A 128-bit signed integer from BLAKE2b (Python's hash() is salted per process; rbloom needs a stable one to save)."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "big", signed=True)


class LSHBloom:
    def __init__(self, dim: int, bits: int = 16, bands: int = 8, seed: int = 0, capacity: int = 1_000_000,
                 false_positive_rate: float = 1e-4):
        if bits < 1 or bands < 1 or bits > 64:
            raise NoveltynetsError(f"lsh: need 1 <= bits <= 64 and bands >= 1, got bits={bits}, bands={bands}")
        from rbloom import Bloom

        self.dim, self.bits, self.bands = dim, bits, bands
        g = torch.Generator().manual_seed(seed)
        self.planes = torch.randn(dim, bits * bands, generator=g, dtype=torch.float64)
        self.center: torch.Tensor | None = None
        self.bloom = Bloom(capacity, false_positive_rate, stable_hash)
        self.n_added = 0

    def keys(self, e: torch.Tensor) -> list[list[bytes]]:
        """Per row, its ``bands`` keys: band number and the band's sign bits, as bytes."""
        e = torch.as_tensor(e).detach().double().cpu()
        if e.ndim != 2 or e.shape[1] != self.dim or not torch.isfinite(e).all():
            raise NoveltynetsError(f"lsh: embeddings must be finite (N, {self.dim}), got {tuple(e.shape)}")
        if self.center is None:
            self.center = e.mean(0)
        signs = ((e - self.center) @ self.planes > 0).view(len(e), self.bands, self.bits)
        weights = 2 ** torch.arange(self.bits, dtype=torch.int64)
        codes = (signs.long() * weights).sum(-1)  # (N, bands) integers of `bits` bits
        return [[band.to_bytes(2, "big") + int(c).to_bytes(8, "big") for band, c in enumerate(row)] for row in codes.tolist()]

    def collisions(self, e: torch.Tensor) -> torch.Tensor:
        """(N,) int: how many of each row's bands collide with an added embedding (more = nearer history)."""
        return torch.tensor([sum(k in self.bloom for k in ks) for ks in self.keys(e)], dtype=torch.long)

    def seen(self, e: torch.Tensor) -> torch.Tensor:
        """(N,) bool: whether any band of each row collides with an added embedding."""
        return self.collisions(e) > 0

    def add(self, e: torch.Tensor) -> None:
        for ks in self.keys(e):
            self.bloom.update(ks)
            self.n_added += 1
