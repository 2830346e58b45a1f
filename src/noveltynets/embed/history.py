"""Histories that are not networks: exact nearest neighbours (faiss) and LSH + Bloom sketches.

``KnnHistory`` is the exact index over a growing set of embeddings (faiss flat L2): queries ask
for the nearest one or for every one within a radius. Exact search scales to 10⁶ references of
64 dimensions at ~0.2 s per query batch on one CPU thread (measured).

``ExactHistory`` and ``LSHHistory`` are the persistable histories of the peers (SPELL's
repellency, the kNN and LSH rejection filters, oversampling's farthest-point selection): like a
:class:`~noveltynets.memory.NoveltyMemory` they have a ``kind``, a config naming their embedder
and model, ``n_seen``, ``observe(embeddings)``, ``reset()`` and a byte round trip, so the store
keeps them under a name beside the memories (``noveltynets sample --guide repel --memory NAME``).
An exact history grows with every sample (its bytes and query time are the price of exactness);
an LSH history has a fixed size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import NoveltynetsError


class KnnHistory:
    def __init__(self, dim: int):
        import faiss

        self.dim = dim
        self.index = faiss.IndexFlatL2(dim)

    def __len__(self) -> int:
        return self.index.ntotal

    @staticmethod
    def _np(e: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(torch.as_tensor(e).detach().float().cpu().numpy())

    def add(self, e: torch.Tensor) -> None:
        """Add embeddings (N, dim)."""
        a = self._np(e)
        if a.ndim != 2 or a.shape[1] != self.dim or not np.isfinite(a).all():
            raise NoveltynetsError(f"history: embeddings must be finite (N, {self.dim}), got {tuple(a.shape)}")
        self.index.add(a)

    def nearest(self, e: torch.Tensor) -> torch.Tensor:
        """Distance (N,) from each row to its nearest stored embedding; inf while the history is empty."""
        if len(self) == 0:
            return torch.full((len(e),), float("inf"))
        d2, _ = self.index.search(self._np(e), 1)
        return torch.from_numpy(d2[:, 0]).clamp_min(0).sqrt()

    def within(self, e: torch.Tensor, radius: float) -> list[torch.Tensor]:
        """For each row, the stored embeddings closer than ``radius`` (K_i, dim), as e's dtype and device."""
        if len(self) == 0:
            return [e[:0]] * len(e)
        lims, _, ids = self.index.range_search(self._np(e), radius ** 2)
        return [torch.from_numpy(self.index.reconstruct_batch(ids[lims[i]:lims[i + 1]])).to(e) if lims[i + 1] > lims[i]
                else e[:0] for i in range(len(e))]

    def embeddings(self) -> torch.Tensor:
        """Every stored embedding (N, dim), in the order added."""
        return torch.from_numpy(self.index.reconstruct_n(0, len(self))) if len(self) else torch.zeros(0, self.dim)


@dataclass
class HistoryConfig:
    dim: int
    embedder_id: str
    model_id: str = ""


@dataclass
class LSHConfig(HistoryConfig):
    bits: int = 20
    bands: int = 6
    seed: int = 0


def _blob(tensors: dict[str, torch.Tensor], config) -> bytes:
    return st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata={"config": json.dumps(asdict(config))})


def _unblob(blob: bytes, config_cls) -> tuple[dict[str, torch.Tensor], object]:
    try:
        header_len = int.from_bytes(blob[:8], "little")
        meta = json.loads(blob[8:8 + header_len]).get("__metadata__", {})
        return st_load(blob), config_cls(**json.loads(meta["config"]))
    except Exception as e:
        raise NoveltynetsError(f"history data is corrupt ({type(e).__name__})") from None


class ExactHistory:
    """Every observed embedding, exactly: SPELL's history and the kNN filter's kept set (grows with history)."""

    kind: ClassVar[str] = "exact"

    def __init__(self, config: HistoryConfig):
        self.config = config
        self.index = KnnHistory(config.dim)

    @property
    def n_seen(self) -> int:
        return len(self.index)

    def observe(self, embeddings: torch.Tensor, trajectory: torch.Tensor | None = None) -> None:
        """Remember finished samples' embeddings (B, dim); x̂0 along trajectories are not part of an exact history."""
        self.index.add(embeddings)

    def nearest(self, e: torch.Tensor) -> torch.Tensor:
        return self.index.nearest(e)

    def within(self, e: torch.Tensor, radius: float) -> list[torch.Tensor]:
        return self.index.within(e, radius)

    def embeddings(self) -> torch.Tensor:
        return self.index.embeddings()

    def reset(self) -> None:
        self.index = KnnHistory(self.config.dim)

    def to_bytes(self) -> bytes:
        return _blob({"embeddings": self.embeddings()}, self.config)

    @classmethod
    def from_bytes(cls, blob: bytes, device: str | torch.device = "cpu") -> "ExactHistory":
        t, config = _unblob(blob, HistoryConfig)
        history = cls(config)
        if len(t["embeddings"]):
            history.index.add(t["embeddings"])
        return history


class LSHHistory:
    """SimHash bands of every observed embedding in a Bloom filter (:class:`~noveltynets.embed.lsh.LSHBloom`): fixed size."""

    kind: ClassVar[str] = "lsh"

    def __init__(self, config: LSHConfig):
        from .lsh import LSHBloom

        self.config = config
        self.lsh = LSHBloom(config.dim, config.bits, config.bands, config.seed)

    @property
    def n_seen(self) -> int:
        return self.lsh.n_added

    def observe(self, embeddings: torch.Tensor, trajectory: torch.Tensor | None = None) -> None:
        self.lsh.add(embeddings)

    def seen(self, e: torch.Tensor) -> torch.Tensor:
        return self.lsh.seen(e)

    def collisions(self, e: torch.Tensor) -> torch.Tensor:
        return self.lsh.collisions(e)

    def reset(self) -> None:
        self.__init__(self.config)

    def to_bytes(self) -> bytes:
        center = self.lsh.center if self.lsh.center is not None else torch.zeros(0, dtype=torch.float64)
        bloom = torch.frombuffer(bytearray(self.lsh.bloom.save_bytes()), dtype=torch.uint8)
        return _blob({"center": center, "bloom": bloom, "n_added": torch.tensor([self.lsh.n_added])}, self.config)

    @classmethod
    def from_bytes(cls, blob: bytes, device: str | torch.device = "cpu") -> "LSHHistory":
        from rbloom import Bloom

        from .lsh import stable_hash

        t, config = _unblob(blob, LSHConfig)
        history = cls(config)
        history.lsh.center = t["center"] if len(t["center"]) else None
        try:
            history.lsh.bloom = Bloom.load_bytes(t["bloom"].numpy().tobytes(), stable_hash)
        except Exception as e:
            raise NoveltynetsError(f"history data is corrupt ({type(e).__name__})") from None
        history.lsh.n_added = int(t["n_added"][0])
        return history
