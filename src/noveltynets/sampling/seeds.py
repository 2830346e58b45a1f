"""Seed lists: ``"0-63"``, ``"3,5,9"``, ``"0-9,100-109"``; one seed per sample."""

from __future__ import annotations

from ..errors import NoveltynetsError

MAX_SEED = 2**63 - 1


def parse_seeds(spec: str) -> list[int]:
    seeds: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if dash else a
        except ValueError:
            raise NoveltynetsError(f"bad seed range {part!r} in {spec!r}: use e.g. 0-63 or 1,5,9") from None
        if a < 0 or b > MAX_SEED:
            raise NoveltynetsError(f"seeds must lie in 0..{MAX_SEED}, got {part!r}")
        if b < a:
            raise NoveltynetsError(f"bad seed range {part!r}: end is before start")
        if b - a >= 10_000_000:
            raise NoveltynetsError(f"seed range {part!r} is too long (at most 10,000,000 seeds)")
        seeds.extend(range(a, b + 1))
    if len(set(seeds)) != len(seeds):
        raise NoveltynetsError(f"seed list {spec!r} repeats a seed")
    return seeds
