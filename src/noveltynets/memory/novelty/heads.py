"""The memory's heads: random Fourier features of the normalised input and an MLP on them.

Every random number here comes from a generator seeded by the config (the frequencies from one
of their own, the layers' initial weights from one stream shared by both heads in turn), so a
memory's initial weights depend on its seed alone and building one leaves the process's global
RNG as it was. The layers get ``nn.Linear``'s default initialisation, drawn from that stream.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .config import MemoryConfig


def smooth_scales(c: MemoryConfig) -> torch.Tensor:
    """The smooth head's frequency scales: geometric from proximity_sigma_min to proximity_sigma (per ℓ,
    as its input is measured in ℓ) for proximity targets, else from fourier_sigma_min to fourier_sigma."""
    if c.target == "proximity":
        return torch.logspace(math.log10(c.proximity_sigma_min), math.log10(c.proximity_sigma), c.fourier)
    if c.fourier_sigma_min > 0:
        return torch.logspace(math.log10(c.fourier_sigma_min), math.log10(c.fourier_sigma), c.fourier)
    return torch.full((c.fourier,), c.fourier_sigma)


def sharp_scales(c: MemoryConfig) -> torch.Tensor:
    """The recall head's: all at fourier_sigma (sharp features memorise points)."""
    return torch.full((max(c.fourier, 1),), c.fourier_sigma)


def head(c: MemoryConfig, sigmas: torch.Tensor, hidden: int, raw: bool, freq_seed: int, init: torch.Generator,
         device: torch.device) -> tuple[torch.Tensor | None, nn.Sequential]:
    """Random Fourier frequencies (space_dim, F) with these scales (None without Fourier features), drawn
    with ``freq_seed``, and the MLP on them, initialised from ``init``."""
    freqs = None
    if c.fourier:
        freqs = (torch.randn(c.space_dim, len(sigmas), generator=torch.Generator().manual_seed(freq_seed)) * sigmas).to(device)
    width = (2 * len(sigmas) + c.space_dim * raw) if c.fourier else c.space_dim
    return freqs, mlp([width] + [hidden] * c.layers, init).to(device)


def mlp(widths: list[int], init: torch.Generator) -> nn.Sequential:
    """Linear + SiLU through ``widths``, then a linear map to one logit."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [linear(a, b, init), nn.SiLU()]
    return nn.Sequential(*layers, linear(widths[-1], 1, init))


def linear(n_in: int, n_out: int, init: torch.Generator) -> nn.Linear:
    """``nn.Linear(n_in, n_out)`` with its default initialisation (``reset_parameters``: weights
    kaiming-uniform with a = √5, bias uniform in ±1/√n_in) drawn from ``init``, not the global RNG."""
    layer = nn.utils.skip_init(nn.Linear, n_in, n_out)
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=init)
    bound = 1 / math.sqrt(n_in) if n_in > 0 else 0
    nn.init.uniform_(layer.bias, -bound, bound, generator=init)
    return layer


def features(z: torch.Tensor, mean: torch.Tensor, scale, freqs: torch.Tensor | None, raw: bool) -> torch.Tensor:
    """A head's input from rows in the memory's space: ``(z − mean) / scale``, then its Fourier features
    (sin and cos of the projections on ``freqs``, and the normalised rows too if ``raw``)."""
    z = (z - mean) / scale
    if freqs is not None:
        f = z @ freqs
        z = torch.cat([f.sin(), f.cos()] + [z] * raw, dim=-1)
    return z
