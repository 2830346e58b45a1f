"""noveltynets in diffusers: a native pipeline for class-conditional UNets such as the shipped model.

    from noveltynets.integrations.diffusers import NoveltyDDIMPipeline
    pipe = NoveltyDDIMPipeline.from_noveltynets()                 # the shipped model (or any model folder)
    session = pipe.open_session(guide=["novelty"], memory="sevens", klass=7)
    images = pipe(class_labels=7, seeds=range(16), novelty=session).images   # PIL images; the memory learns them

``pipe.save_pretrained(DIR)`` / ``NoveltyDDIMPipeline.from_pretrained(DIR)`` round-trip it as any diffusers
pipeline. Each image's noise comes from its own seed (``seeds=`` or one ``torch.Generator`` per image), so a
seed gives the same image as ``noveltynets sample --seeds`` whatever the batch. The pipeline keeps its
scheduler (``pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)`` swaps it).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DModel

from ..errors import NoveltynetsError
from ..models.unet import NULL_CLASS, DiffusionModel, load_model
from ..sampling import CFGDenoiser, GuidedModel, SamplingConfig, generate
from ..sampling.loop import SCHEDULERS, make_scheduler


class NoveltyDDIMPipeline(DiffusionPipeline):
    """Class-conditional sampling with classifier-free guidance (class ``NULL_CLASS`` = unconditional) and, through
    ``novelty=`` (a :class:`~noveltynets.session.Session`), any guidance term or memory of noveltynets."""

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @classmethod
    def from_noveltynets(cls, model: DiffusionModel | str | Path | None = None, scheduler: str = "ddim",
                         steps: int = 50) -> "NoveltyDDIMPipeline":
        """A pipeline of a noveltynets model (default: the shipped one) with the scheduler ``noveltynets sample`` uses."""
        model = model if isinstance(model, DiffusionModel) else load_model(model)
        sched = make_scheduler(scheduler, model.scheduler_config, steps)
        public = next(c for c in type(sched).__mro__ if c.__module__.startswith("diffusers"))  # savable by diffusers
        pipe = cls(model.unet, public.from_config(sched.config))
        pipe._noveltynets_model = model
        return pipe

    def as_model(self) -> DiffusionModel:
        """The pipeline's UNet and training schedule as a noveltynets model (for sessions and reference pools)."""
        model = getattr(self, "_noveltynets_model", None)
        if model is None or model.unet is not self.unet:
            path = Path(getattr(self.config, "_name_or_path", "") or "diffusers-pipeline")
            train = {k: v for k, v in self.scheduler.config.items() if not k.startswith("_")}
            model = DiffusionModel(self.unet, train, f"{path.name}@pipeline", path)
            self._noveltynets_model = model
        return model

    def open_session(self, klass: int | None = None, guidance_scale: float = 2.0, num_inference_steps: int = 50, **kwargs):
        """:func:`noveltynets.session.open_session` for this pipeline's model and these call settings."""
        from ..session import open_session

        config = SamplingConfig(klass=klass, cfg=guidance_scale, steps=num_inference_steps, scheduler=self._scheduler_name(),
                                device=str(self.device))
        return open_session(self.as_model(), config, **kwargs)

    def _scheduler_name(self) -> str:
        for name, (cls, _) in SCHEDULERS.items():
            if isinstance(self.scheduler, cls) or issubclass(cls, type(self.scheduler)):
                return name
        return type(self.scheduler).__name__

    def _scheduler_factory(self, steps: int):
        base = self.scheduler
        if type(base) is DDIMScheduler:  # the same steps with noveltynets' guard against a negative variance (eta > 0)
            base = SCHEDULERS["ddim"][0].from_config(base.config)

        def make():
            s = copy.deepcopy(base)
            s.set_timesteps(steps)
            return s
        return make

    @torch.no_grad()
    def __call__(self, class_labels: int | list[int] | None = None, seeds=None, generator=None, num_inference_steps: int = 50,
                 guidance_scale: float = 2.0, eta: float = 0.0, novelty=None, guidance=(), batch_size: int = 16,
                 output_type: str = "pil", return_dict: bool = True):
        """``class_labels``: one class for all, one per image, or None (unconditional); ``seeds`` (or ``generator``:
        a list of ``torch.Generator``, one per image, whose initial seeds are used) fix each image's noise;
        ``novelty``: a session whose terms guide and whose history learns the images; ``guidance``: further terms.
        ``output_type``: "pil", "np" (N, H, W, C) in [0, 1] or "pt" (N, C, H, W) in [-1, 1]."""
        seeds = _seeds(seeds, generator, class_labels)
        labels = class_labels if isinstance(class_labels, (list, tuple)) else [class_labels] * len(seeds)
        if len(labels) != len(seeds):
            raise NoveltynetsError(f"{len(labels)} class labels for {len(seeds)} seeds")
        classes = [NULL_CLASS if c is None else int(c) for c in labels]
        cfg = guidance_scale if any(c != NULL_CLASS for c in classes) else 1.0
        eps_model = CFGDenoiser(self.unet, cfg)
        terms = [*(novelty.terms if novelty is not None else ()), *guidance]
        if terms:
            eps_model = GuidedModel(eps_model, terms, self.scheduler.alphas_cumprod)
        c = self.unet.config
        run = generate(eps_model, self._scheduler_factory(num_inference_steps), seeds, classes,
                       (c.in_channels, c.sample_size, c.sample_size), batch_size, eta=eta, device=self.device)
        images = run.images
        if output_type == "pt":
            out = images
        else:
            out = ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
            if output_type == "pil":
                out = self.numpy_to_pil(out)
            elif output_type != "np":
                raise NoveltynetsError(f"output_type must be pil, np or pt, got {output_type!r}")
        return ImagePipelineOutput(images=out) if return_dict else (out,)


def _seeds(seeds, generator, class_labels) -> list[int]:
    if seeds is not None and generator is not None:
        raise NoveltynetsError("give seeds or generator, not both")
    if generator is not None:
        gens = generator if isinstance(generator, (list, tuple)) else [generator]
        return [int(g.initial_seed()) for g in gens]
    if seeds is not None:
        return [int(s) for s in seeds]
    n = len(class_labels) if isinstance(class_labels, (list, tuple)) else 1
    return [int(s) for s in np.random.SeedSequence().generate_state(n)]  # fresh, like diffusers without a generator
