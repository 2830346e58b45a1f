"""A fixed-size sketch of a set of points for "is there one near here?": Euclidean LSH tables in one Bloom bit array.

Each of ``tables`` tables cuts space into cells by ``projections`` random Gaussian directions a and
offsets b: a point x falls in cell (⌊(a·x + b) / w⌋ for each direction) (E2LSH, Datar et al. 2004).
Two points at distance d share a table's cell with probability p(d / w)^projections, which is 1 at
d = 0 and falls fast beyond w (:func:`collision_probability`). Added points set their cells' keys in
one Bloom filter of ``nbits`` bits (``hashes`` bits per key), so the sketch has the same size and the
same query cost whatever the number of points, and a query's score (how many of its tables' cells are
set) says how near the set it lies, up to the filter's false positives, which rise as the filter fills
(:meth:`L2Sketch.false_positive_rate`).

All of it is integer arithmetic modulo the Mersenne prime 2³¹ − 1 on int64 tensors (no overflow, the
same on every device), vectorised, and its state is one uint8 tensor, saved with the memory it belongs to.
"""

from __future__ import annotations

import math

import torch

from ..errors import NoveltynetsError

PRIME = 2**31 - 1  # keys and bit positions: universal hashing modulo this prime, products below 2⁶²


def collision_probability(c: torch.Tensor | float) -> torch.Tensor:
    """P(two points at distance c·w share one direction's interval), for Gaussian directions (Datar et al. 2004, eq. 2)."""
    c = torch.as_tensor(c, dtype=torch.float64).clamp_min(1e-12)
    normal = torch.distributions.Normal(0.0, 1.0)
    return 1 - 2 * normal.cdf(-1 / c) - 2 * c / math.sqrt(2 * math.pi) * (1 - torch.exp(-1 / (2 * c ** 2)))


def optimal_hashes(nbits: int, capacity: int) -> int:
    """The Bloom filter's bits per key that give the fewest false positives at ``capacity`` keys: (m/n) ln 2."""
    return max(1, min(16, round(nbits / max(capacity, 1) * math.log(2))))


class L2Sketch:
    """``tables`` E2LSH tables of ``projections`` directions of width ``width`` in ``dim`` dimensions, in a
    Bloom filter of ``nbits`` bits with ``hashes`` bits per key. Points are given in the units ``width``
    is measured in (the caller scales them). Deterministic in ``seed``."""

    def __init__(self, dim: int, tables: int = 8, projections: int = 6, width: float = 1.0, nbits: int = 2**25,
                 hashes: int = 4, seed: int = 0, width_min: float | None = None):
        width_min = width if width_min is None else width_min
        if min(dim, tables, projections, hashes) < 1 or not 0 < width_min <= width or not 64 <= nbits < PRIME:
            raise NoveltynetsError(f"sketch: need dim, tables, projections, hashes >= 1, width > 0 and 64 <= bits < 2^31; "
                                   f"got dim={dim}, tables={tables}, projections={projections}, width={width}, bits={nbits}, "
                                   f"hashes={hashes}")
        self.dim, self.tables, self.projections, self.hashes = dim, tables, projections, hashes
        self.widths = torch.logspace(math.log10(width_min), math.log10(width), tables, dtype=torch.float64)[:, None]
        self.nbits = nbits // 8 * 8
        g = torch.Generator().manual_seed(seed)
        self.directions = torch.randn(tables, projections, dim, generator=g, dtype=torch.float64)
        self.offsets = torch.rand(tables, projections, generator=g, dtype=torch.float64) * self.widths
        ints = torch.randint(1, PRIME, (tables * projections + tables + 2 * hashes,), generator=g, dtype=torch.int64)
        self.mult = ints[: tables * projections].view(tables, projections)  # a cell's key: Σ_k cell_k · mult_k + salt (mod p)
        self.salt = ints[tables * projections: tables * projections + tables]
        self.hash_a, self.hash_b = ints[-2 * hashes:].view(2, hashes)  # bit j of a key: (a_j · key + b_j mod p) mod nbits
        self.bits = torch.zeros(self.nbits // 8, dtype=torch.uint8)
        self.n_added = 0

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """(N, tables) int64: each point's cell key in each table."""
        x = torch.as_tensor(x).detach().to("cpu", torch.float64)
        if x.ndim != 2 or x.shape[1] != self.dim or not torch.isfinite(x).all():
            raise NoveltynetsError(f"sketch: points must be finite (N, {self.dim}), got {tuple(x.shape)}")
        cells = torch.floor((torch.einsum("tkd,nd->ntk", self.directions, x) + self.offsets) / self.widths).long()
        return ((cells.remainder(PRIME) * self.mult).remainder(PRIME).sum(-1) + self.salt).remainder(PRIME)

    def positions(self, keys: torch.Tensor) -> torch.Tensor:
        """(..., hashes) bit positions of keys."""
        return (keys[..., None] * self.hash_a + self.hash_b).remainder(PRIME).remainder(self.nbits)

    def add(self, x: torch.Tensor) -> None:
        """Set the cells of points ``x`` (N, dim) in every table."""
        pos = self.positions(self.keys(x)).flatten().unique()
        byte, inverse = (pos >> 3).unique(return_inverse=True)
        masks = torch.zeros(len(byte), dtype=torch.int64).index_add_(0, inverse, 1 << (pos & 7))  # distinct bits: sum = OR
        self.bits[byte] |= masks.to(torch.uint8)
        self.n_added += len(x)

    def hits(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) int: in how many tables each point's cell is set (every ``tables`` for an added point)."""
        pos = self.positions(self.keys(x))
        set_ = (self.bits[pos >> 3] >> (pos & 7).to(torch.uint8)) & 1
        return set_.bool().all(-1).sum(-1)

    def fill(self) -> float:
        """The fraction of the filter's bits that are set."""
        return float(torch.tensor([bin(v).count("1") for v in range(256)])[self.bits.long()].sum()) / self.nbits

    def false_positive_rate(self) -> float:
        """P(an empty cell reads as set) now: fill^hashes."""
        return self.fill() ** self.hashes

    @property
    def nbytes(self) -> int:
        return self.bits.numel()
