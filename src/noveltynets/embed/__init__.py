"""Layer 3: differentiable embedders, exact histories (faiss) and LSH sketches, used by guidance, memory and filters alike."""

from .embedders import DEFAULT_EMBEDDER, CallableEmbedder, DecodedImages, DenoiserFeatures, Embedder, MultiScalePooled, PooledLatents, PooledPixels, embedder_from_spec, spec_of
from .history import ExactHistory, HistoryConfig, KnnHistory, LSHConfig, LSHHistory

__all__ = ["DEFAULT_EMBEDDER", "CallableEmbedder", "DecodedImages", "DenoiserFeatures", "Embedder", "MultiScalePooled", "PooledLatents", "PooledPixels", "embedder_from_spec",
           "spec_of", "ExactHistory", "HistoryConfig", "KnnHistory", "LSHConfig", "LSHHistory"]
