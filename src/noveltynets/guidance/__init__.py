"""Layer 6: the guidance terms, one file each (the base interface is the sampler's, :mod:`noveltynets.sampling.term`).
Parse a ``NAME[:key=value,...]`` spec of any term, the later layers' included, with :func:`noveltynets.session.parse_guide`."""

from __future__ import annotations

from .base import REGISTRY, GuidanceTerm
from .cads import CADSGuidance
from .novelty import NoveltyGuidance
from .particle import ParticleGuidance
from .point import PointGuidance
from .repel import RepelGuidance

__all__ = ["REGISTRY", "CADSGuidance", "GuidanceTerm", "NoveltyGuidance", "ParticleGuidance", "PointGuidance", "RepelGuidance"]
