"""Novelty memories: the MLP memory, its embedders and the store that persists them."""

from .embedders import CallableEmbedder, DenoiserFeatures, Embedder, MultiScalePooled, PooledPixels, embedder_from_spec
from .novelty import MemoryConfig, NoveltyMemory

__all__ = ["CallableEmbedder", "DenoiserFeatures", "Embedder", "MultiScalePooled", "PooledPixels", "embedder_from_spec",
           "MemoryConfig", "NoveltyMemory"]
