"""Minority guidance (Um & Ye, ICLR 2024): minority score, its quantile classes, the noise-conditioned
classifier, and the guidance terms ``minority`` (classifier guidance toward a quantile class), ``minority-mix``
(the mixed-score sampler of the paper's Appendix C.4) and ``minority-self`` (classifier-free, self-guided)."""

from .classifier import DEFAULT_CLASSIFIER_DIR, NoiseClassifier, load_classifier, train_classifier
from .guidance import ClassifierTerm, MinorityGuidance
from .mix import MinorityMix
from .self_guided import MinoritySelf
from .score import DenoiserDistance, FeatureDistance, default_levels, get_distance, level_scores, minority_score, quantile_classes, timestep_at

__all__ = ["DEFAULT_CLASSIFIER_DIR", "DenoiserDistance", "FeatureDistance", "MinorityGuidance", "MinorityMix", "MinoritySelf", "ClassifierTerm", "NoiseClassifier", "default_levels", "get_distance",
           "level_scores", "load_classifier", "minority_score", "quantile_classes", "timestep_at", "train_classifier"]
