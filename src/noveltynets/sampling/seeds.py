"""Seed lists: ``"0-63"``, ``"3,5,9"``, ``"0-9,100-109"``; one seed per sample."""

from __future__ import annotations

import hashlib

import torch

from ..errors import NoveltynetsError

MAX_SEED = 2**32 - 1  # torch's CPU generator (mt19937) keeps only a seed's low 32 bits: 2**32 + 5 gives seed 5's noise


def derived_seed(*parts: int) -> int:
    """A seed in 0..MAX_SEED derived from integers (BLAKE2b), e.g. (seed, candidate round) or (seed, step):
    distinct inputs give independent noise, and it is the same in every process."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def step_noise(seeds: list, step: int, salt: int, shape: tuple[int, ...]) -> torch.Tensor:
    """(len(seeds), *shape) standard normal noise, row r from ``derived_seed(seeds[r], step, salt)`` (the same in any
    batch and process); a seed of None draws from torch's global generator. ``salt`` keeps one term's noise apart
    from another's at the same (seed, step)."""
    return torch.stack([torch.randn(shape, generator=None if s is None else torch.Generator().manual_seed(derived_seed(s, step, salt)))
                        for s in seeds])


def parse_seeds(spec: str) -> list[int]:
    return _parse_ints(spec, "seed", 0, MAX_SEED, "0-63 or 1,5,9", repeats=False)


def parse_ranks(spec: str) -> list[int]:
    """Ranks of a distilled model, one per sample in order: ``"1-16"``, ``"1,1,2"`` (repeats allowed)."""
    return _parse_ints(spec, "rank", 1, 255, "1-16 or 1,4,8", repeats=True)


def _parse_ints(spec: str, what: str, lo_ok: int, hi_ok: int, example: str, repeats: bool) -> list[int]:
    values: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if dash else a
        except ValueError:
            raise NoveltynetsError(f"bad {what} range {part!r} in {spec!r}: use e.g. {example}") from None
        if a < lo_ok or b > hi_ok:
            raise NoveltynetsError(f"{what}s must lie in {lo_ok}..{hi_ok}, got {part!r}")
        if b < a:
            raise NoveltynetsError(f"bad {what} range {part!r}: end is before start")
        if b - a >= 10_000_000:
            raise NoveltynetsError(f"{what} range {part!r} is too long (at most 10,000,000 {what}s)")
        values.extend(range(a, b + 1))
    if not repeats and len(set(values)) != len(values):
        raise NoveltynetsError(f"{what} list {spec!r} repeats a {what}")
    return values
