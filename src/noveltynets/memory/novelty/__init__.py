"""The novelty net: an MLP memory of everything generated in a scope, trained online.

``logit(e)`` is the log-odds that embedding ``e`` "has been generated before, or lies near
something that was". Each ``observe(embeddings)`` adds the new embeddings to a replay buffer
(reservoir of fixed size by default, so the memory does not grow with history) and takes a few
Adam steps. Two ways to train this smooth head (``target``):

- ``"proximity"`` (default): regress a soft proximity to history, P = exp(−d²/2r²), with d the
  distance from a query to the nearest remembered embedding in units of ℓ (the median
  nearest-neighbour distance of the **reference** embeddings: samples that were not generated in
  this scope). Queries are history and reference rows plus noise of up to ``query_jitter``·ℓ, so
  the net learns the proximity field around history, and its gradient points away from it. The
  exact distances come from the replay at training time only; sampling queries the net alone.
- ``"classify"``: balanced binary cross-entropy, history (new batch plus replay) against the
  reference embeddings, so the gradient estimates ∇ log p_history/p_reference. Measured on
  full-resolution pixels it learnt nothing usable: ROC-AUC 0.51 for "this second-run sample is a
  near-duplicate of the first run" (the exact nearest-neighbour distance: 0.77; proximity: 0.76).

Jittered positives are available as negatives too, but alone they teach no memory: the net then
only learns "on the data manifold or off it" (DESIGN.md, planning facts). A second, sharp head
(``recall``) answers "was this very sample generated?" (``seen_probability``).

The package: :mod:`.config` (MemoryConfig), :mod:`.heads` (Fourier features and the MLP heads),
:mod:`.replay` (the reservoir), :mod:`.targets` (what each training step fits: proximity or
classification batches, queries), :mod:`.serial` (the versioned safetensors format) and
:mod:`.core` (NoveltyMemory, which ties them together).
"""

from .config import SECTIONS, MemoryConfig
from .core import NoveltyMemory
from .serial import FORMAT_VERSION

__all__ = ["FORMAT_VERSION", "SECTIONS", "MemoryConfig", "NoveltyMemory"]
