"""Guidance terms (one file each), their registry and the ``NAME[:key=value,...]`` parser."""

from __future__ import annotations

import dataclasses
import typing

from ..errors import NoveltynetsError
from .base import REGISTRY, GuidanceTerm
from .novelty import NoveltyGuidance
from .point import PointGuidance
from .repel import RepelGuidance


def _convert(value: str, typ, key: str, name: str):
    typ = {"float": float, "int": int, "str": str, "bool": bool}.get(typ, typ) if isinstance(typ, str) else typ
    try:
        if typ is bool:
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        return typ(value)
    except (TypeError, ValueError):
        raise NoveltynetsError(f"guidance {name!r}: {key}={value!r} is not a valid {getattr(typ, '__name__', typ)}") from None


def parse_guide(spec: str) -> GuidanceTerm:
    """``"point:scale=2,target=1"`` → ``PointGuidance(scale=2.0, target=1.0)``."""
    name, _, rest = spec.strip().partition(":")
    if name not in REGISTRY:
        raise NoveltynetsError(f"unknown guidance {name!r}; known: {', '.join(sorted(REGISTRY))}")
    hints = typing.get_type_hints(REGISTRY[name])
    fields = {f.name for f in dataclasses.fields(REGISTRY[name])}
    cfg: dict = {"name": name}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise NoveltynetsError(f"guidance {name!r}: expected key=value, got {item!r}")
        key = key.strip()
        if key not in fields:
            raise NoveltynetsError(f"guidance {name!r} has no setting {key!r}; settings: {', '.join(sorted(fields))}")
        cfg[key] = _convert(value.strip(), hints[key], key, name)
    return GuidanceTerm.from_dict(cfg)


__all__ = ["REGISTRY", "GuidanceTerm", "NoveltyGuidance", "PointGuidance", "RepelGuidance", "parse_guide"]
