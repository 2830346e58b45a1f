"""Benchmark scripts; a package so that tests (run from the repository root) can import them."""
