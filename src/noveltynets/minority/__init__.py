"""Minority guidance (Um & Ye, ICLR 2024): minority score, its quantile classes and the noise-conditioned classifier."""

from .classifier import NoiseClassifier, load_classifier, train_classifier
from .score import FeatureDistance, default_levels, get_distance, minority_score, quantile_classes, timestep_at

__all__ = ["NoiseClassifier", "load_classifier", "train_classifier", "FeatureDistance", "default_levels", "get_distance", "minority_score", "quantile_classes", "timestep_at"]
