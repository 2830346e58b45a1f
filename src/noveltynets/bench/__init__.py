"""Benchmarks and checks that run the sampler and judge it with the evaluation embedder."""
