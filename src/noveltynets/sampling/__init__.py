"""The sampling core: scheduler loop with per-sample seeds, CFG, and guided eps-models."""

from .guided import CFGDenoiser, GuidedModel
from .loop import SCHEDULERS, SampleRun, generate, initial_noise, make_scheduler, sample, sample_batch
from .seeds import MAX_SEED, derived_seed, parse_seeds

__all__ = ["CFGDenoiser", "GuidedModel", "SCHEDULERS", "SampleRun", "generate", "initial_noise", "make_scheduler", "sample", "sample_batch", "parse_seeds",
           "MAX_SEED", "derived_seed"]
