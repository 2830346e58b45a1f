"""A recall head of a few bytes per sample: every finished sample kept as a residual-quantizer code.

Until ``train_rows`` samples have come, they are kept as rows and searched exactly. Then faiss's residual
quantizer (``nbytes`` codebooks of 8 bits, encoded with a beam of 16, and a 1-byte norm: ``RQ{nbytes}x8_Ncqint8``)
is trained on them once, and every sample from then on is kept only as its code, ``nbytes + 1`` bytes, in a table
allocated for ``capacity`` rows at that moment: the bytes are flat from then on, whatever the history. Past
``capacity`` samples, a reservoir (algorithm R) keeps an equal share of all of them. A query is the squared
distance to the nearest code's reconstruction (faiss's own search by look-up tables, over every stored code).

Measured as a memory's recall head (docs/benchmarks/capacity/README.md, "The codes memory"; 12-byte codes in the
32-d projection, codebooks trained on the first 10k samples): at 10⁶ samples of a 64-d mixture, seen AUC 0.991 and
near-duplicate AUC 0.993 / 0.985 / 0.955 at ρ = 0.1 / 0.2 / 0.3ℓ (exact kNN: 1.000 / 1.000 / 0.928; the LSH sketch:
0.718 / 0.552 / 0.483), the whole memory 15.7 MB from 10⁴ on; a query costs 10 ms a row at 10⁶ on 2 cores.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

from ...errors import NoveltynetsError
from .replay import reservoir_slots

BEAM = 16  # candidates kept per codebook while encoding (faiss's default, 5, lost resolution in the probe)


class CodeTable:
    """Up to ``capacity`` rows of ``dim`` floats, kept as codes of ``nbytes`` (+ 1) bytes once ``train_rows`` have come."""

    def __init__(self, dim: int, capacity: int, nbytes: int = 12, train_rows: int = 10_000):
        if not 256 <= train_rows <= capacity or not 1 <= nbytes <= 64 or dim < 1:
            raise NoveltynetsError(f"codes: need 256 <= train_rows <= capacity and 1 <= nbytes <= 64; got capacity={capacity}, "
                                   f"nbytes={nbytes}, train_rows={train_rows}")
        self.dim, self.capacity, self.nbytes, self.train_rows = dim, capacity, nbytes, train_rows
        self.raw = torch.zeros(0, dim)  # the rows themselves, until the codebooks are trained on them
        self.index = self.table = None  # faiss's trained index, and its code table as a (capacity, code_size) uint8 view
        self.index_bytes = b""  # the trained index before any code was added (codebooks and norm range), as saved
        self.n_offered = 0  # rows offered in all

    @property
    def n_stored(self) -> int:
        return min(self.n_offered, self.capacity)

    @property
    def trained(self) -> bool:
        return self.index is not None

    def add(self, rows: torch.Tensor, gen: torch.Generator) -> None:
        """Keep ``rows`` (N, dim): as rows until ``train_rows`` have come (then train and encode them), else as codes."""
        rows = rows.detach().float().cpu()
        if self.trained:
            return self._store(rows, gen)
        self.raw = torch.cat([self.raw, rows])
        self.n_offered += len(rows)
        if len(self.raw) >= self.train_rows:
            raw, self.raw, self.n_offered = self.raw, self.raw[:0], 0
            self._load_index(self._train(raw[: self.train_rows]))
            self._store(raw, gen)

    def _train(self, rows: torch.Tensor) -> bytes:
        index = faiss.index_factory(self.dim, f"RQ{self.nbytes}x8_Ncqint8")
        index.rq.max_beam_size = BEAM
        index.rq.cp.min_points_per_centroid = 1  # under 39 rows a centroid is allowed here: no warning on stderr
        index.train(np.ascontiguousarray(rows.numpy()))
        return faiss.serialize_index(index).tobytes()

    def _load_index(self, blob: bytes) -> None:
        """The trained index from its bytes, its code table allocated at ``capacity`` rows (zeros) and viewed by ``table``."""
        try:
            index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        except RuntimeError:
            raise NoveltynetsError("memory data is corrupt (its codebooks do not load)") from None
        self.index, self.index_bytes = index, blob
        size = self.capacity * self.index.code_size
        self.index.codes.resize(size)
        self.table = torch.from_numpy(faiss.rev_swig_ptr(self.index.codes.data(), size)).view(self.capacity, -1)
        self.index.ntotal = 0

    def _store(self, rows: torch.Tensor, gen: torch.Generator) -> None:
        codes = torch.from_numpy(self.index.sa_encode(np.ascontiguousarray(rows.numpy())))
        slots = reservoir_slots(len(rows), self.n_offered, self.capacity, gen)
        free = max(0, min(len(rows), self.capacity - self.n_offered))  # slots[:free] are the next free ones, in order
        self.table[self.n_offered: self.n_offered + free] = codes[:free]  # while there is room: in order
        for i, j in enumerate(slots[free:], free):
            if j >= 0:
                self.table[j] = codes[i]
        self.n_offered += len(rows)
        self.index.ntotal = self.n_stored

    def nearest_sq(self, x: torch.Tensor) -> torch.Tensor:
        """(N, dim) → (N,) squared distance to the nearest kept row (its code's reconstruction once trained); inf if none."""
        x = x.detach().float().cpu()
        if self.n_stored == 0:
            return torch.full((len(x),), float("inf"))
        if not self.trained:
            return torch.cdist(x.double(), self.raw.double()).min(1).values.pow(2).float()
        return torch.from_numpy(self.index.search(np.ascontiguousarray(x.numpy()), 1)[0][:, 0]).clamp_min(0)

    # -- state ------------------------------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        """``codes.counters`` (rows offered), then ``codes.raw`` before training, or ``codes.index`` and ``codes.table``."""
        t = {"codes.counters": torch.tensor([self.n_offered])}
        if not self.trained:
            return t | {"codes.raw": self.raw}
        index = torch.frombuffer(bytearray(self.index_bytes), dtype=torch.uint8)
        return t | {"codes.index": index, "codes.table": self.table.clone()}  # a copy: the view lives as long as the index

    def load(self, t: dict[str, torch.Tensor]) -> None:
        if "codes.counters" not in t:
            raise NoveltynetsError("memory data is corrupt (its config keeps codes, its data none)")
        self.n_offered = int(t["codes.counters"][0])
        if "codes.index" not in t:
            self.raw = t["codes.raw"].float().cpu()
            if self.raw.shape != (self.n_offered, self.dim):
                raise NoveltynetsError("memory data is corrupt (its rows before codes do not match its config)")
            return
        self._load_index(t["codes.index"].numpy().tobytes())
        if self.index.d != self.dim or t["codes.table"].shape != self.table.shape:
            raise NoveltynetsError("memory data is corrupt (its codes do not match its config)")
        self.table.copy_(t["codes.table"])
        self.index.ntotal = self.n_stored
