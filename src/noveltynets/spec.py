"""``NAME[:key=value,...]`` specs (``--guide``, ``--filter``): parsed against a registry of dataclasses."""

from __future__ import annotations

import dataclasses
import math
import typing

from .errors import NoveltynetsError


def in_range(name: str, value: float, lo: float, hi: float, lo_open: bool = False) -> None:
    """A clear error unless ``value`` is finite and in [lo, hi] ((lo, hi] with ``lo_open``); the message gives the range."""
    ok = math.isfinite(value) and (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:
        raise NoveltynetsError(f"{name} must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value}")


def convert(value: str, typ, key: str, what: str):
    """``value`` as ``typ`` (float, int, str or bool), or a clear error naming ``what`` and ``key``."""
    typ = {"float": float, "int": int, "str": str, "bool": bool}.get(typ, typ) if isinstance(typ, str) else typ
    try:
        if typ is bool:
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        return typ(value)
    except (TypeError, ValueError):
        raise NoveltynetsError(f"{what}: {key}={value!r} is not a valid {getattr(typ, '__name__', typ)}") from None


def split_spec(spec: str, kind: str) -> tuple[str, dict[str, str]]:
    """``"name:a=1,b=x"`` → (name, {"a": "1", "b": "x"}), values as written."""
    name, _, rest = spec.strip().partition(":")
    settings: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise NoveltynetsError(f"{kind} {name!r}: expected key=value, got {item!r}")
        settings[key.strip()] = value.strip()
    return name, settings


def parse_spec(spec: str, registry: dict, kind: str) -> tuple[str, dict]:
    """``"name:a=1,b=x"`` → (name, {a: 1, b: "x"}) with values typed by the dataclass ``registry[name]``'s fields."""
    name = spec.strip().partition(":")[0]
    if name not in registry:
        raise NoveltynetsError(f"unknown {kind} {name!r}; known: {', '.join(sorted(registry))}")
    name, raw = split_spec(spec, kind)
    hints = typing.get_type_hints(registry[name])
    fields = {f.name for f in dataclasses.fields(registry[name])}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise NoveltynetsError(f"{kind} {name!r} has no setting {unknown[0]!r}; settings: {', '.join(sorted(fields))}")
    return name, {key: convert(value, hints[key], key, f"{kind} {name!r}") for key, value in raw.items()}
