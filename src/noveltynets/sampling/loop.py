"""The sampling loop over diffusers schedulers, with per-sample seeds.

Sample i's initial noise and every per-step noise it needs come from its own
``torch.Generator`` seeded with ``seeds[i]`` (drawn on the CPU), so a seed gives the same
image whatever the batch it is in and whatever the device.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

from ..errors import NoveltynetsError
from ..progress import progress_bar
from .config import SamplingConfig
from .seeds import derived_seed

class _DDIMScheduler(DDIMScheduler):
    """diffusers' DDIM, with its eta > 0 variance shrunk by 1e-5 relative. Its step takes
    sqrt(1 − ᾱ_prev − σ_t²), which is exactly 0 in theory at the first step when ᾱ_T ≈ 0 (ours:
    2.4e-9) and rounds below zero on some CPUs: every image became NaN (measured, eta = 1)."""

    def _get_variance(self, timestep, prev_timestep):
        return super()._get_variance(timestep, prev_timestep) * (1 - 1e-5)


SCHEDULERS = {
    "ddim": (_DDIMScheduler, {"timestep_spacing": "trailing", "set_alpha_to_one": True}),
    "ddpm": (DDPMScheduler, {"timestep_spacing": "trailing"}),
    "dpm++": (DPMSolverMultistepScheduler, {"timestep_spacing": "trailing"}),
    "unipc": (UniPCMultistepScheduler, {"timestep_spacing": "trailing"}),
}


def make_scheduler(name: str, train_config: dict, steps: int):
    """A diffusers scheduler of kind ``name`` built from the model's training schedule."""
    if name not in SCHEDULERS:
        raise NoveltynetsError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULERS)}")
    limit = int(train_config.get("num_train_timesteps", 1000))
    if not 1 <= steps <= limit:
        raise NoveltynetsError(f"steps must be in 1..{limit} (the model's training steps), got {steps}")
    cls, overrides = SCHEDULERS[name]
    keys = set(inspect.signature(cls.__init__).parameters)
    base = {k: v for k, v in train_config.items() if k in keys and not k.startswith("_")}
    scheduler = cls(**{**base, **overrides, "clip_sample": False} if "clip_sample" in keys else {**base, **overrides})
    scheduler.set_timesteps(steps)
    return scheduler


def _step_kwargs(scheduler, generators, eta: float) -> dict:
    params = inspect.signature(scheduler.step).parameters
    kw = {}
    if "generator" in params:
        kw["generator"] = generators
    if "eta" in params:
        kw["eta"] = eta
    return kw


def initial_noise(seeds: list[int], shape: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Generator]]:
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    return torch.stack([torch.randn(shape, generator=g) for g in gens]), gens


def renoise(x: torch.Tensor, eps: torch.Tensor, x0_hat: torch.Tensor, alpha_bar: torch.Tensor, rho: torch.Tensor,
            generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """eps ← sqrt(1 − ρ²)·eps + ρ·ξ and x_t ← sqrt(ᾱ)·x̂0 + sqrt(1 − ᾱ)·eps, per sample: a share ρ of
    the noise is re-drawn (ξ from each sample's own generator, drawn only where ρ > 0, so a
    sample that is never re-noised follows exactly its plain trajectory)."""
    rho = rho.to(eps.device, eps.dtype).view(-1, *[1] * (eps.dim() - 1))
    xi = torch.zeros_like(eps)
    for j in torch.nonzero(rho.flatten() > 0).flatten().tolist():
        xi[j] = torch.randn(eps.shape[1:], generator=generators[j]).to(eps.device, eps.dtype)
    hit = rho > 0
    eps = torch.where(hit, (1 - rho ** 2).sqrt() * eps + rho * xi, eps)
    return torch.where(hit, alpha_bar.sqrt() * x0_hat + (1 - alpha_bar).sqrt() * eps, x), eps


CLEAN_SALT = 777  # the clean-up pass's noise: derived_seed(seed, CLEAN_SALT), apart from every other noise of the seed


@torch.no_grad()
def clean_up(denoiser: Callable, x0: torch.Tensor, seeds: list[int], extra: dict, alphas_cumprod: torch.Tensor,
             timesteps, frac: float, num_train_timesteps: int) -> torch.Tensor:
    """Re-noise each finished sample to the first of ``timesteps`` below ``frac``·T (noise from its own seed) and
    denoise it again with ``denoiser`` alone, by DDIM (eta 0) along the timesteps below: restart sampling's idea
    (Xu et al., 2023), once, at the end of the run and without guidance. The layout, decided long before, stays;
    the model repairs the fine detail a late guidance push left off the data. Returns x0 in [-1, 1]."""
    tail = [int(t) for t in timesteps if int(t) < frac * num_train_timesteps]
    if not tail:
        return x0
    xi = torch.stack([torch.randn(x0.shape[1:], generator=torch.Generator().manual_seed(derived_seed(s, CLEAN_SALT)))
                      for s in seeds]).to(x0.device, x0.dtype)
    a = alphas_cumprod[tail[0]]
    x = a.sqrt() * x0 + (1 - a).sqrt() * xi
    for k, t in enumerate(tail):
        eps = denoiser(x, torch.full((len(seeds),), t, device=x.device, dtype=torch.long), extra)
        a = alphas_cumprod[t]
        x0_hat = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
        eps = (x - a.sqrt() * x0_hat) / (1 - a).sqrt()
        a_next = alphas_cumprod[tail[k + 1]] if k + 1 < len(tail) else torch.ones_like(a)
        x = a_next.sqrt() * x0_hat + (1 - a_next).sqrt() * eps
    return x.clamp(-1, 1)


@torch.no_grad()  # guidance terms that need gradients turn them on themselves
def sample_batch(model: Callable, scheduler, seeds: list[int], classes: torch.Tensor, shape: tuple[int, ...],
                 eta: float = 0.0, clip: bool = True, callback: Callable[[dict], None] | None = None,
                 device: str | torch.device = "cpu", temperature: float = 1.0, ranks: torch.Tensor | None = None,
                 clean: float = 0.0) -> torch.Tensor:
    """Denoise one batch from its seeds; ``model(x, t, extra) -> eps``. Returns x0 in [-1, 1].

    ``ranks`` (B,), a distilled model's rank of each sample, reaches the model as ``extra["ranks"]``.

    ``clean`` > 0: a last, unguided clean-up below ``clean``·T (:func:`clean_up`) with the model that a guided
    model wraps (``model.eps_model``), before the batch is returned (and shown to the terms).

    ``temperature`` scales the initial noise (< 1: samples nearer the modes, > 1: further out).

    The model may return ``(eps, rho)`` instead, rho (B,) in [0, 1], to have the share rho of
    sample i's noise re-drawn at this step (see :func:`renoise`); the other samples are untouched."""
    x, gens = initial_noise(seeds, shape)
    x = x.to(device) * scheduler.init_noise_sigma * temperature
    classes = classes.to(device)
    ranks = None if ranks is None else torch.as_tensor(ranks, dtype=torch.long).to(device)
    alphas_cumprod = scheduler.alphas_cumprod.to(device)
    timesteps = scheduler.timesteps
    step_kw = _step_kwargs(scheduler, gens, eta)
    batch = {"classes": classes, "num_steps": len(timesteps), "seeds": seeds, **({} if ranks is None else {"ranks": ranks})}
    for i, t in enumerate(timesteps):
        tt = torch.full((len(seeds),), int(t), device=device, dtype=torch.long)
        extra = {**batch, "i": i}
        # 1. (guided) noise prediction, and the share of noise the model asks to re-draw
        out = model(x, tt, extra)
        eps, rho = out if isinstance(out, tuple) else (out, None)
        # 2. Tweedie's x̂0; clip it and recompute eps from the clipped x̂0 (keeps CFG samples in range)
        a = alphas_cumprod[int(t)]
        x0_hat = (x - (1 - a).sqrt() * eps) / a.sqrt()
        if clip:
            x0_hat = x0_hat.clamp(-1, 1)
            eps = (x - a.sqrt() * x0_hat) / (1 - a).sqrt()
        # 3. re-noising asked for by the model: re-draw that share of the noise from the sample's
        #    own generator, keeping x̂0; x_t stays a noisy version of x̂0
        if rho is not None and bool((rho > 0).any()):
            x, eps = renoise(x, eps, x0_hat, a, rho, gens)
        if callback is not None:
            callback({"x": x, "i": i, "t": int(t), "eps": eps, "x0_hat": x0_hat})
        # 4. scheduler step with the per-sample generators
        x = scheduler.step(eps, t, x, **step_kw).prev_sample
    if clean:
        return clean_up(getattr(model, "eps_model", model), x.clamp(-1, 1), seeds, batch, alphas_cumprod, timesteps, clean,
                        int(scheduler.config.num_train_timesteps))
    return x.clamp(-1, 1)


@dataclass
class SampleRun:
    """What :func:`generate` made: images (N, C, H, W) in [-1, 1], their seeds and classes, timings."""

    images: torch.Tensor
    seeds: list[int]
    classes: list[int]
    batch_seconds: list[float] = field(default_factory=list)
    generated: int | None = None  # samples generated to keep these (an outer-loop filter's candidates); None: one per image
    ranks: list[int] | None = None  # a distilled model's rank of each image; None: no ranks

    @property
    def seconds(self) -> float:
        return sum(self.batch_seconds)


def generate(model: Callable, scheduler_factory: Callable[[], object], seeds: list[int], classes: list[int],
             shape: tuple[int, ...], batch_size: int = 16, eta: float = 0.0, clip: bool = True,
             device: str | torch.device = "cpu", show_progress: bool = False,
             callback: Callable[[dict], None] | None = None, temperature: float = 1.0, ranks: list[int] | None = None,
             clean: float = 0.0) -> SampleRun:
    """Sample ``len(seeds)`` images in batches. A model with a batch lifecycle (:class:`GuidedModel`)
    is told ``start_batch()`` before each batch and ``end_batch(x0, info)`` after it (so memories learn).
    ``ranks``: a distilled model's rank of each seed (see :class:`~noveltynets.sampling.CFGDenoiser`)."""
    if len(classes) != len(seeds) or (ranks is not None and len(ranks) != len(seeds)):
        raise ValueError("one class (and one rank, if any) per seed is needed")
    start_batch, end_batch = getattr(model, "start_batch", None), getattr(model, "end_batch", None)
    out, times = [], []
    with progress_bar(len(seeds), "sampling", enabled=show_progress) as advance:
        for start in range(0, len(seeds), batch_size):
            s, c = seeds[start:start + batch_size], torch.tensor(classes[start:start + batch_size])
            r = None if ranks is None else torch.tensor(ranks[start:start + batch_size])
            if start_batch is not None:
                start_batch()
            t0 = time.perf_counter()
            x0 = sample_batch(model, scheduler_factory(), s, c, shape, eta=eta, clip=clip, callback=callback, device=device,
                              temperature=temperature, ranks=r, clean=clean)
            if end_batch is not None:
                end_batch(x0, {"seeds": s, "classes": c.to(x0.device), **({} if r is None else {"ranks": r})})
            if x0.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            out.append(x0.cpu())
            advance(len(s))
    return SampleRun(torch.cat(out), list(seeds), list(classes), times, ranks=None if ranks is None else list(ranks))


def sample(model, seeds, config: SamplingConfig | None = None, guidance=(), show_progress: bool = False,
           callback: Callable[[dict], None] | None = None) -> SampleRun:
    """Sample one image per seed from a :class:`~noveltynets.models.DiffusionModel` with ``config``
    (default :class:`SamplingConfig()`: unconditional, 50 DDIM steps).

    ``guidance`` is a list of guidance terms, applied through :class:`GuidedModel`; ``callback``
    sees every step (see :func:`sample_batch`)."""
    from ..models.unet import NULL_CLASS
    from .guided import CFGDenoiser, GuidedModel

    config = config or SamplingConfig()
    scheduler = make_scheduler(config.scheduler, model.scheduler_config, config.steps)  # validate before any work
    clean = clean_of(config.clean, guidance, scheduler)
    check_ranks(model, config.ranks)
    eps_model = CFGDenoiser(model.unet, config.cfg_used, rank_stride=getattr(model, "rank_stride", 0), rank_scale=config.rank_scale)
    if guidance:
        eps_model = GuidedModel(eps_model, guidance, model.alphas_cumprod, config.grad_mode)
    classes = [config.klass if config.klass is not None else NULL_CLASS] * len(seeds)
    return generate(eps_model, lambda: make_scheduler(config.scheduler, model.scheduler_config, config.steps), list(seeds),
                    classes, model.image_shape, config.batch_size, eta=config.eta, device=config.device,
                    show_progress=show_progress, callback=callback, temperature=config.temperature,
                    ranks=config.ranks_of(len(seeds)), clean=clean)


def clean_of(clean: float, terms, scheduler) -> float:
    """The clean-up a run gets: ``clean`` when > 0 (refused if no timestep of the run lies below it), else the largest a
    term asks for (:meth:`GuidanceTerm.clean_up`, e.g. novelty after its late push), or none where no timestep lies below."""
    if clean:
        check_clean(clean, scheduler)
        return clean
    asked = max((t.clean_up() for t in terms), default=0.0)
    return asked if _reaches_below(asked, scheduler) else 0.0


def _reaches_below(frac: float, scheduler) -> bool:
    """Whether the run's last timestep lies below ``frac``·T (a clean-up to ``frac`` has a step to run)."""
    return int(scheduler.timesteps[-1]) < frac * scheduler.config.num_train_timesteps


def check_clean(clean: float, scheduler) -> None:
    """Refuse a clean-up fraction that no timestep of the run lies below (it would clean nothing)."""
    last = int(scheduler.timesteps[-1])
    if clean and not _reaches_below(clean, scheduler):
        raise NoveltynetsError(f"clean {clean:g} is below the run's last timestep ({last} of {scheduler.config.num_train_timesteps}): "
                               f"give at least {(last + 1) / scheduler.config.num_train_timesteps:g} or more steps")


def check_ranks(model, ranks) -> None:
    """Refuse ranks a model cannot read: a model without a rank index, or a rank above its bins."""
    if ranks is None:
        return
    bins = getattr(model, "num_ranks", 0)
    if not bins:
        raise NoveltynetsError(f"model {model.model_id} has no rank index: ranks need a distilled model "
                               "(one made with noveltynets distill train)")
    if max(ranks) > bins:
        raise NoveltynetsError(f"ranks must be in 1..{bins} for model {model.model_id}, got {max(ranks)}")
