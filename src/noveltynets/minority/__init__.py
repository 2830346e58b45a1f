"""Minority guidance (Um & Ye, ICLR 2024): minority score and its quantile classes."""

from .score import FeatureDistance, default_levels, get_distance, minority_score, quantile_classes, timestep_at

__all__ = ["FeatureDistance", "default_levels", "get_distance", "minority_score", "quantile_classes", "timestep_at"]
