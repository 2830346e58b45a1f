"""Minority guidance (Um & Ye, ICLR 2024, §3.3): classifier guidance toward a minority class l̃,

    ŝ(x_t, t, l̃) = s(x_t, t) + w · ∇_{x_t} log p_ψ(l̃ | x_t, t),

with p_ψ the noise-conditioned minority classifier (:mod:`~noveltynets.minority.classifier`) and l̃
a quantile class of the minority score (0 = the most common images, L − 1 = the rarest). In eps
form (guidance.base's convention) eps' = eps − sqrt(1 − ᾱ_t) · w · ∇_{x_t} log p_ψ: exactly ADM's
classifier guidance, the form of the paper's official sampler. A class-conditional classifier
(``num_conditions`` > 0) is given the sampled class, the paper's intra-class form
ŝ(x_t, t, c, l̃) = s(x_t, t, c) + w·∇ log p_ψ(l̃ | x_t, t, c); its null class when unconditional.

The gradient is taken at x_t, not at x̂0, so this term is an x_t-space term (``space = "xt"``):
:class:`~noveltynets.sampling.GuidedModel` adds it to ∇_{x_t} as it is, in either gradient mode,
with no pass through the denoiser.

Plain ``--guide minority`` loads the classifier shipped for the default model and targets its
rarest class; ``classifier=DIR`` takes one made by ``noveltynets minority train``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import NoveltynetsError
from ..guidance.base import GuidanceTerm
from .classifier import DEFAULT_CLASSIFIER_DIR, NoiseClassifier, load_classifier


@functools.lru_cache(maxsize=4)
def _cached_classifier(path: str, device: str, stamp: tuple) -> NoiseClassifier:
    return load_classifier(path, device)


def _stamp(path: Path) -> tuple:
    """What changes when a classifier folder is rewritten (its files' sizes and modification times)."""
    return tuple((f.stat().st_size, f.stat().st_mtime_ns) if f.is_file() else None
                 for f in (path / "config.json", path / "model.safetensors"))


@dataclass
class ClassifierTerm(GuidanceTerm):
    """What the terms on a minority classifier share: the folder (``classifier``, "" = the one shipped for the
    default model), loading it (cached, reloaded when the folder changes), refusing it for another model, and
    ``log_probs``: log p_ψ(l | x_t, t[, c]) over every quantile class l."""
    classifier: str = ""  # a folder from 'noveltynets minority train'; "" = the one shipped for the default model

    def __post_init__(self):
        super().__post_init__()
        if not (self.path / "config.json").is_file():
            raise NoveltynetsError(f"{self.name}: no classifier at {self.path} (make one with 'noveltynets minority train')")
        self.num_classes = self.load("cpu").num_classes

    @property
    def path(self) -> Path:
        """The classifier's folder: ``classifier``, or the shipped one."""
        return Path(self.classifier).resolve() if self.classifier else DEFAULT_CLASSIFIER_DIR

    def load(self, device) -> NoiseClassifier:
        """The classifier, loaded once per device and again when its folder changes on disk."""
        return _cached_classifier(str(self.path), str(device), _stamp(self.path))

    def check_model(self, model) -> None:
        """A classifier that records the model it was trained for serves that model only (one without serves any)."""
        trained_for = self.load("cpu").config.get("model_id")
        if trained_for is not None and trained_for != model.model_id:
            raise NoveltynetsError(f"{self.name}: the classifier at {self.path} was trained for model {trained_for}, not "
                                   f"{model.model_id} (train one for it with 'noveltynets minority train')")

    def log_probs(self, x_t: torch.Tensor, info: dict) -> torch.Tensor:
        """(B, L): log p_ψ(l | x_t, t), or log p_ψ(l | x_t, t, c) with a class-conditional classifier (c = the
        sampled class, or "no class" when sampling unconditionally)."""
        clf = self.load(x_t.device)
        logits = clf(x_t, info["t"], info.get("classes") if clf.num_conditions else None)
        return torch.log_softmax(logits.float(), dim=1)


@dataclass
class MinorityGuidance(ClassifierTerm):
    name = "minority"
    space = "xt"
    scale: float = 2.0  # w
    stop: float = 1.0  # the paper guides every step
    level: int = -1  # l̃; negative counts from the rarest (−1 = L − 1)

    def __post_init__(self):
        super().__post_init__()
        if not -self.num_classes <= self.level < self.num_classes:
            raise NoveltynetsError(f"minority: level must be in [{-self.num_classes}, {self.num_classes - 1}] "
                                   f"for a classifier of {self.num_classes} classes, got {self.level}")

    @property
    def target(self) -> int:
        """l̃ as a class index in [0, L)."""
        return self.level % self.num_classes

    def log_prob(self, x_t: torch.Tensor, info: dict) -> torch.Tensor:
        """log p_ψ(l̃ | x_t, t[, c]) per sample."""
        return self.log_probs(x_t, info)[:, self.target]
