"""The mixed-score sampler (Um & Ye, ICLR 2024, Appendix C.4), as reconstructed here: sample from a
blend that favours high minority scores instead of guiding toward one quantile class.

The paper's equation (8) did not survive in the copy of the appendix we have; its text does. Our
reading: the target is p̃(x₀) ∝ p(x₀) · s(x₀)^λ (s the minority score). Its perturbed versions have no
known score, so s is replaced by its empirical average under the minority classifier, E[s | x_t] ≈
Σ_l p_ψ(l | x_t, t) · r_l, with r_l the level of quantile class l (here the median score of the class,
saved with the classifier by ``noveltynets minority train``). The mixed score is then

    ∇ log p̃_t(x_t) ≈ s_θ(x_t, t) + λ · ∇_{x_t} log Σ_l p_ψ(l | x_t, t) · r_l          (form "linear")

and, with the power taken inside the average (the exact power of the classifier's mixture),

    ∇ log p̃_t(x_t) ≈ s_θ(x_t, t) + ∇_{x_t} log Σ_l p_ψ(l | x_t, t) · r_l^λ            (form "power").

λ = 0 is the plain sampler in both. In eps form (guidance.base's convention) it is added as any x_t-space
classifier term: eps' = eps − sqrt(1 − ᾱ_t) · scale · ∇_{x_t}(…), ``scale`` 1 by default; the knob is
``strength`` (λ). Only ratios of the r_l matter (the log's gradient does not change when every r_l is
multiplied by one number). A class-conditional classifier is given the sampled class, as in
:mod:`~noveltynets.minority.guidance`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import NoveltynetsError
from .guidance import ClassifierTerm

FORMS = ("linear", "power")


@dataclass
class MinorityMix(ClassifierTerm):
    name = "minority-mix"
    space = "xt"
    strength: float = 1.0  # λ
    form: str = "linear"  # "linear": λ·∇ log Σ p_l r_l; "power": ∇ log Σ p_l r_l^λ
    stop: float = 1.0  # a drop-in replacement of the model's score: every step

    def __post_init__(self):
        super().__post_init__()
        if not self.strength >= 0:
            raise NoveltynetsError(f"minority-mix: strength (λ) must be >= 0, got {self.strength}")
        if self.form not in FORMS:
            raise NoveltynetsError(f"minority-mix: form must be one of {', '.join(FORMS)}, got {self.form!r}")
        self.log_levels("cpu")  # refused now, before any sampling, if the folder has none

    def log_levels(self, device) -> torch.Tensor:
        """log r_l (L,), from the classifier's config as it is on disk now (a retrained folder brings its own)."""
        clf = self.load(device)
        levels = clf.config.get("level_scores")
        if not isinstance(levels, list) or len(levels) != clf.num_classes or not all(
                isinstance(r, (int, float)) and r > 0 for r in levels):
            raise NoveltynetsError(f"minority-mix: the classifier at {self.path} has no threshold levels (level_scores, one "
                                   f"positive score per class); train it again with 'noveltynets minority train'")
        return torch.tensor(levels, dtype=torch.float64, device=device).log().float()

    def active(self, progress: float) -> bool:
        return self.strength != 0 and super().active(progress)

    def log_prob(self, x_t: torch.Tensor, info: dict) -> torch.Tensor:
        """λ·log Σ_l p_ψ(l | x_t) r_l ("linear") or log Σ_l p_ψ(l | x_t) r_l^λ ("power"), per sample."""
        log_r = self.log_levels(x_t.device)
        if self.form == "power":
            return torch.logsumexp(self.log_probs(x_t, info) + self.strength * log_r, dim=1)
        return self.strength * torch.logsumexp(self.log_probs(x_t, info) + log_r, dim=1)
