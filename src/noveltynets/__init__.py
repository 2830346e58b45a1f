"""noveltynets: diffusion sampling that keeps producing samples unlike the ones before.

    from noveltynets import SamplingConfig, load_model, open_session
"""

__version__ = "0.1.0"

_EXPORTS = {"load_model": "noveltynets.models", "open_session": "noveltynets.session", "Session": "noveltynets.session",
            "SamplingConfig": "noveltynets.sampling", "sample": "noveltynets.sampling", "MemoryStore": "noveltynets.memory.store"}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):  # imported on first use: `import noveltynets` stays cheap (the CLI's --help)
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'noveltynets' has no attribute {name!r}")
