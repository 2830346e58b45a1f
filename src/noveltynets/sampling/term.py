"""The one base class of every guidance term, and the sign convention, written once.

Sign convention (classifier guidance in eps form: Dhariwal & Nichol 2021, Alg. 2 / eq. 14)::

    eps'(x_t) = eps(x_t) − sqrt(1 − ᾱ_t) · Σ_i scale_i · ∇_{x_t} log p_i(x_t)

A term returns ``grad(x0_hat, info) = ∇_{x̂0} log p``: the direction, in the space of the
predicted clean image x̂0 = (x_t − sqrt(1 − ᾱ_t)·eps) / sqrt(ᾱ_t), in which samples should
move. Anti-guidance (novelty) returns −∇ log P(seen). :class:`~noveltynets.sampling.GuidedModel`
turns it into ∇_{x_t} either exactly (a vector-Jacobian product through the denoiser) or
cheaply (∂x̂0/∂x_t ≈ I / sqrt(ᾱ_t), no backward pass through the denoiser).

Every term is a dataclass: its fields are its configuration, which round-trips through
``to_dict`` / ``from_dict`` (and so through JSON). ``start``/``stop`` are fractions of the
run (step i of n is active when start ≤ i/n < stop); guidance is off in the last 5% of
steps by default, where it can only add artefacts.

A term with ``space = "xt"`` (a noise-conditioned classifier: minority guidance) is instead called
as ``grad(x_t, info)`` and returns ∇_{x_t} log p directly; GuidedModel adds it to ∇_{x_t} unchanged.
``info`` holds the model's ``extra`` (classes, step i, num_steps, seeds) and ``x`` (x_t), ``t``
(timesteps, (B,)), ``alpha_bar`` and ``eps``; where the sampler owns the denoiser, also ``denoiser`` (the
eps-model, ``(x, t, extra) -> eps``) and ``alphas_cumprod`` (the schedule), which a term that sets
``needs_denoiser`` calls at points of its own (minority-self re-noises x̂0 and denoises it).

Besides a gradient, a term may ask the sampler to **re-noise** a sample: ``renoise(x0_hat,
info)`` returns ρ (B,) in [0, 1], the share of each sample's noise to re-draw at this step
(see :func:`~noveltynets.sampling.sample_batch`). x̂0 is kept and x_t stays an exact noisy
version of it, so a re-noised trajectory is still one the model could have taken (DDIM with a
per-sample eta): the sample changes course without leaving the data manifold.

A term may also change what the model is conditioned on (CADS): ``condition(y, info)`` returns the
condition (B, ...) the conditional rows see at this step (``info``: ``i``, ``num_steps``, ``seeds``), and
``conditioning(eps_model, extra)`` is the context manager the native sampler enters around each model
call to apply it; by default both leave the condition as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import NoveltynetsError

REGISTRY: dict[str, type["GuidanceTerm"]] = {}  # every term class by name, filled as term modules are imported


@dataclass
class GuidanceTerm:
    name: ClassVar[str] = ""
    space: ClassVar[str] = "x0"  # "x0": grad is ∇_{x̂0} log p at x̂0; "xt": grad is ∇_{x_t} log p at x_t (classifier guidance)
    needs_denoiser: ClassVar[bool] = False  # grad calls info["denoiser"] (x, t, extra) -> eps at other points (minority-self)
    scale: float = 1.0
    start: float = 0.0
    stop: float = 0.95

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            REGISTRY[cls.name] = cls

    def __post_init__(self):
        if not 0.0 <= self.start <= self.stop <= 1.0:
            raise NoveltynetsError(f"{self.name}: need 0 <= start <= stop <= 1, got start={self.start}, stop={self.stop}")

    def active(self, progress: float) -> bool:
        """Whether :meth:`grad` acts at this point of the run (a fraction in [0, 1))."""
        return self.scale != 0 and self.start <= progress < self.stop

    def renoises(self, progress: float) -> bool:
        """Whether :meth:`renoise` is asked at this point of the run; by default never."""
        return False

    def renoise(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor | None:
        """ρ (B,) in [0, 1]: the share of each sample's noise the sampler re-draws at this step, or None."""
        return None

    def clean_up(self) -> float:
        """The unguided clean-up after the run (a fraction of T, :func:`~noveltynets.sampling.loop.clean_up`) this term
        asks for when the sampler's own ``clean`` is 0; by default none."""
        return 0.0

    def conditioning(self, eps_model, extra: dict):
        """A context manager entered around every model call of the run (CADS noises the condition here)."""
        return contextlib.nullcontext()

    def check_model(self, model) -> None:
        """Refuse, with a one-line error, a model this term cannot serve (a classifier trained for another); by default
        any model."""

    def condition(self, y: torch.Tensor, info: dict) -> torch.Tensor:
        """The condition (B, ...) of the conditional rows at this step; by default ``y`` as it is."""
        return y

    def changes_condition(self) -> bool:
        return type(self).condition is not GuidanceTerm.condition

    def reset(self) -> None:
        """Forget per-run state; called before every batch is sampled."""

    def log_prob(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        """Per-sample log p (B,), differentiable in ``x0_hat``. Override this or :meth:`grad`."""
        raise NotImplementedError(f"{type(self).__name__} implements neither log_prob nor grad")

    def grad(self, x0_hat: torch.Tensor, info: dict) -> torch.Tensor:
        """∇_{x̂0} log p, same shape as ``x0_hat``. Default: autograd of :meth:`log_prob`."""
        with torch.enable_grad():
            x = x0_hat.detach().requires_grad_(True)
            return torch.autograd.grad(self.log_prob(x, info).sum(), x)[0]

    def on_samples_end(self, x0: torch.Tensor, info: dict) -> None:
        """Called with each finished batch (x0 in [-1, 1]); memories learn here."""

    def to_dict(self) -> dict[str, Any]:
        cfg = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("config", True)}
        return {"name": self.name, **cfg}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GuidanceTerm":
        d = dict(d)
        name = d.pop("name", cls.name)
        if name not in REGISTRY:
            raise NoveltynetsError(f"unknown guidance {name!r}; known: {', '.join(sorted(REGISTRY)) or 'none'}")
        term_cls = REGISTRY[name]
        known = {f.name for f in dataclasses.fields(term_cls) if f.metadata.get("config", True)}
        unknown = set(d) - known
        if unknown:
            raise NoveltynetsError(f"guidance {name!r} has no setting {', '.join(sorted(unknown))}; settings: {', '.join(sorted(known))}")
        return term_cls(**d)
