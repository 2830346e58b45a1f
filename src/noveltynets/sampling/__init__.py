"""Layer 4, the sampling core: the scheduler loop with per-sample seeds, one sampling config, CFG, and the
guided eps-model with the guidance-term interface it defines."""

from .config import SamplingConfig
from .guided import CFGDenoiser, GuidedModel
from .loop import SCHEDULERS, SampleRun, generate, initial_noise, make_scheduler, sample, sample_batch
from .seeds import MAX_SEED, derived_seed, parse_ranks, parse_seeds
from .term import GuidanceTerm

__all__ = ["CFGDenoiser", "GuidanceTerm", "GuidedModel", "SCHEDULERS", "SampleRun", "SamplingConfig", "generate", "initial_noise",
           "make_scheduler", "sample", "sample_batch", "parse_ranks", "parse_seeds", "MAX_SEED", "derived_seed"]
