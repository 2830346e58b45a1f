"""Layer 10: the HTTP service (``noveltynets serve``): FastAPI over the session API and the memory store."""
