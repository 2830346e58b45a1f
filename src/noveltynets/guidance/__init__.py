"""Guidance terms (one file each), their registry and the ``NAME[:key=value,...]`` parser."""

from __future__ import annotations

from ..spec import parse_spec
from .base import REGISTRY, GuidanceTerm, registry
from .cads import CADSGuidance
from .novelty import NoveltyGuidance
from .particle import ParticleGuidance
from .point import PointGuidance
from .repel import RepelGuidance


def parse_guide(spec: str) -> GuidanceTerm:
    """``"point:scale=2,target=1"`` → ``PointGuidance(scale=2.0, target=1.0)``."""
    name, cfg = parse_spec(spec, registry(), "guidance")
    return GuidanceTerm.from_dict({"name": name, **cfg})


__all__ = ["REGISTRY", "CADSGuidance", "GuidanceTerm", "NoveltyGuidance", "ParticleGuidance", "PointGuidance", "RepelGuidance",
           "parse_guide", "registry"]
