"""Layer 5: novelty memories (the MLP memory) and the store that persists every kind of history. Imports neither guidance nor sampling."""

from .novelty import MemoryConfig, NoveltyMemory

__all__ = ["MemoryConfig", "NoveltyMemory"]
