"""Layer 10: noveltynets inside other frameworks (diffusers)."""
