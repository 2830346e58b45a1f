"""Pull toward a point: the analytic toy term, log p = −‖x̂0 − target‖² / (2σ²).

Its gradient, −(x̂0 − target)/σ², is known in closed form, which makes it the reference
for testing the sampler's guidance arithmetic; ``target`` is a constant pixel value
(−1 = background, 1 = ink).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import GuidanceTerm


@dataclass
class PointGuidance(GuidanceTerm):
    name = "point"
    target: float = -1.0
    sigma: float = 1.0

    def log_prob(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        return -(x0_hat - self.target).pow(2).flatten(1).sum(1) / (2 * self.sigma**2)

    def grad(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        return -(x0_hat - self.target) / self.sigma**2
