"""Minority guidance (Um & Ye, ICLR 2024): minority score, its quantile classes, the noise-conditioned
classifier and the ``minority`` guidance term."""

from .classifier import DEFAULT_CLASSIFIER_DIR, NoiseClassifier, load_classifier, train_classifier
from .guidance import MinorityGuidance
from .score import DenoiserDistance, FeatureDistance, default_levels, get_distance, minority_score, quantile_classes, timestep_at

__all__ = ["DEFAULT_CLASSIFIER_DIR", "DenoiserDistance", "FeatureDistance", "MinorityGuidance", "NoiseClassifier", "default_levels", "get_distance",
           "load_classifier", "minority_score", "quantile_classes", "timestep_at", "train_classifier"]
