"""A clean-up pass after a guided run (exploration, not in the library): each finished sample is re-noised to
t_c = FRAC·T with fresh noise (seeded per sample) and denoised again by the model alone (CFG as configured, no
guidance), the last DDIM steps below t_c: the model repairs what a late push left off the data while the layout,
decided long before t_c, stays (restart sampling's idea, Xu et al. 2023, once at the end). The guidance terms see
the cleaned sample (memories learn what was kept).

    run = sample_clean(model, seeds, config, terms, frac)
"""
import torch

from noveltynets.models.unet import NULL_CLASS
from noveltynets.sampling.guided import CFGDenoiser, GuidedModel
from noveltynets.sampling.loop import SampleRun, generate, make_scheduler
from noveltynets.sampling.seeds import derived_seed

SALT = 777


@torch.no_grad()
def clean(model, config, x0: torch.Tensor, seeds, classes: torch.Tensor, frac: float) -> torch.Tensor:
    """Re-noise x0 to the first DDIM timestep below frac·T and denoise it unguided to 0."""
    sched = make_scheduler(config.scheduler, model.scheduler_config, config.steps)
    T = int(model.scheduler_config.get("num_train_timesteps", 1000))
    ts = [t for t in sched.timesteps if int(t) < frac * T]
    if not ts:
        return x0
    denoiser = CFGDenoiser(model.unet, config.cfg_used)
    ab = sched.alphas_cumprod
    a = ab[int(ts[0])]
    xi = torch.stack([torch.randn(x0.shape[1:], generator=torch.Generator().manual_seed(derived_seed(s, SALT))) for s in seeds])
    x = a.sqrt() * x0 + (1 - a).sqrt() * xi
    for t in ts:
        tt = torch.full((len(seeds),), int(t), dtype=torch.long)
        eps = denoiser(x, tt, {"classes": classes})
        a = ab[int(t)]
        x0_hat = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
        eps = (x - a.sqrt() * x0_hat) / (1 - a).sqrt()
        x = sched.step(eps, t, x).prev_sample
    return x.clamp(-1, 1)


class _Cleaning:
    """A guided model whose finished batches are cleaned before the terms see them."""

    def __init__(self, inner, model, config, frac):
        self.inner, self.model, self.config, self.frac, self.out = inner, model, config, frac, []

    def __call__(self, x, t, extra):
        return self.inner(x, t, extra)

    def start_batch(self):
        getattr(self.inner, "start_batch", lambda: None)()

    def end_batch(self, x0, info):
        x0 = clean(self.model, self.config, x0, info["seeds"], info["classes"], self.frac)
        self.out.append(x0)
        getattr(self.inner, "end_batch", lambda *a: None)(x0, info)


def sample_clean(model, seeds, config, terms, frac: float) -> SampleRun:
    eps_model = CFGDenoiser(model.unet, config.cfg_used)
    if terms:
        eps_model = GuidedModel(eps_model, terms, model.alphas_cumprod, config.grad_mode)
    wrapped = _Cleaning(eps_model, model, config, frac)
    classes = [config.klass if config.klass is not None else NULL_CLASS] * len(seeds)
    run = generate(wrapped, lambda: make_scheduler(config.scheduler, model.scheduler_config, config.steps), list(seeds),
                   classes, model.image_shape, config.batch_size, eta=config.eta, temperature=config.temperature)
    run.images = torch.cat(wrapped.out)
    return run
