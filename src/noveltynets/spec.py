"""``NAME[:key=value,...]`` specs (``--guide``, ``--filter``): parsed against a registry of dataclasses."""

from __future__ import annotations

import dataclasses
import typing

from .errors import NoveltynetsError


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


def parse_spec(spec: str, registry: dict, kind: str) -> tuple[str, dict]:
    """``"name:a=1,b=x"`` → (name, {a: 1, b: "x"}) with values typed by the dataclass ``registry[name]``'s fields."""
    name, _, rest = spec.strip().partition(":")
    if name not in registry:
        raise NoveltynetsError(f"unknown {kind} {name!r}; known: {', '.join(sorted(registry))}")
    hints = typing.get_type_hints(registry[name])
    fields = {f.name for f in dataclasses.fields(registry[name])}
    cfg: dict = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise NoveltynetsError(f"{kind} {name!r}: expected key=value, got {item!r}")
        key = key.strip()
        if key not in fields:
            raise NoveltynetsError(f"{kind} {name!r} has no setting {key!r}; settings: {', '.join(sorted(fields))}")
        cfg[key] = convert(value.strip(), hints[key], key, f"{kind} {name!r}")
    return name, cfg
