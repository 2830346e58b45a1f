"""noveltynets in diffusers: any pipeline's denoiser guided by a session, and a native pipeline for the shipped model.

Any pipeline (a UNet or a transformer denoiser whose first two arguments are the latents and the timestep)::

    from noveltynets.integrations.diffusers import NoveltyPipelineWrapper
    nv = NoveltyPipelineWrapper(pipe)                           # e.g. a StableDiffusionPipeline
    nv.open_session(memory="faces", store="memories.sqlite", reference_kwargs=dict(prompt_embeds=...))  # guide: novelty, memory part
    images = nv(prompt_embeds=..., num_inference_steps=30).images   # guided; the memory learns the final latents

The wrapper patches the denoiser's ``forward`` for the duration of each call only; its correction is made in
the equivalent variance-preserving coordinates (:class:`SchedulerAdapter`: ε-, v- and sample-prediction
DDPM-family schedulers, and flow matching, x̂0 = x_t − σ·v) and added once to both halves of the pipeline's CFG
batch, so the combined prediction carries it once.

The shipped model, diffusers-native:

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

import contextlib
import copy
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DModel

from ..errors import NoveltynetsError
from ..models.unet import NULL_CLASS, DiffusionModel, load_model
from ..sampling import CFGDenoiser, GuidedModel, SamplingConfig, generate
from ..sampling.loop import SCHEDULERS, clean_of, make_scheduler
from ..spec import in_range


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
            train = {k: v for k, v in self.scheduler.config.items() if not k.startswith("_")}
            path = Path(str(getattr(self.config, "_name_or_path", "") or "diffusers-pipeline"))
            model = DiffusionModel(self.unet, train, _pipeline_id(self, "diffusers-pipeline"), path)
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
                 output_type: str = "pil", return_dict: bool = True, clean: float = 0.0):
        """``class_labels``: one class for all, one per image, or None (unconditional); ``seeds`` (or ``generator``:
        a list of ``torch.Generator``, one per image, whose initial seeds are used) fix each image's noise;
        ``novelty``: a session whose terms guide and whose history learns the images; ``guidance``: further terms.
        ``output_type``: "pil", "np" (N, H, W, C) in [0, 1] or "pt" (N, C, H, W) in [-1, 1]; ``clean`` > 0: an unguided
        clean-up of each finished image below ``clean``·T (the CLI's ``--clean``, :func:`noveltynets.sampling.loop.clean_up`);
        0: the one the terms ask for (novelty's, after its late memory push: 0.05)."""
        if output_type not in ("pil", "np", "pt"):  # before any sampling
            raise NoveltynetsError(f"output_type must be pil, np or pt, got {output_type!r}")
        in_range("clean", clean, 0, 1)
        seeds = _seeds(seeds, generator, class_labels)
        labels = class_labels if isinstance(class_labels, (list, tuple)) else [class_labels] * len(seeds)
        if len(labels) != len(seeds):
            raise NoveltynetsError(f"{len(labels)} class labels for {len(seeds)} seeds")
        classes = [NULL_CLASS if c is None else int(c) for c in labels]
        cfg = guidance_scale if any(c != NULL_CLASS for c in classes) else 1.0
        eps_model = CFGDenoiser(self.unet, cfg)
        terms = [*(novelty.terms if novelty is not None else ()), *guidance]
        for term in guidance:  # a session's terms were checked when it opened
            term.check_model(self.as_model())
        schedulers = self._scheduler_factory(num_inference_steps)
        clean = clean_of(clean, terms, schedulers())  # before any sampling
        if terms:
            eps_model = GuidedModel(eps_model, terms, self.scheduler.alphas_cumprod)
        run = generate(eps_model, schedulers, seeds, classes, self.as_model().image_shape, batch_size, eta=eta, device=self.device,
                       clean=clean)
        images = run.images
        if output_type == "pt":
            out = images
        else:
            out = ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
            if output_type == "pil":
                out = self.numpy_to_pil(out)
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


class SchedulerAdapter:
    """What guidance needs from a diffusers scheduler: the prediction ↔ eps conversion at x_t in variance-preserving
    coordinates (x_vp = sqrt(ᾱ)·x̂0 + sqrt(1 − ᾱ)·eps) and ᾱ_t. Flow matching (x_t = (1 − σ)·x0 + σ·n, v = n − x0)
    maps to ᾱ = (1 − σ)² / ((1 − σ)² + σ²) with x_vp = x_t / sqrt((1 − σ)² + σ²) and eps = n."""

    def __init__(self, scheduler):
        name = type(scheduler).__name__
        self.flow = "FlowMatch" in name
        if self.flow:
            self.n_train = int(scheduler.config.get("num_train_timesteps", 1000))
        elif hasattr(scheduler, "alphas_cumprod") and scheduler.config.get("prediction_type", "epsilon") in ("epsilon", "v_prediction", "sample"):
            self.alphas_cumprod, self.prediction = scheduler.alphas_cumprod.float(), scheduler.config.get("prediction_type", "epsilon")
        else:
            raise NoveltynetsError(f"{name} ({scheduler.config.get('prediction_type', '?')} prediction) is not served: "
                                   "DDPM-family schedulers with epsilon, v_prediction or sample prediction, or flow matching")

    def _coords(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ᾱ_t, the scale s with x_vp = x / s), each (B, 1, ...)."""
        shape = (-1, *[1] * (x.dim() - 1))
        if self.flow:
            sigma = self._sigma(t).view(shape).clamp(max=1 - 1e-4)  # σ = 1 (pure noise, ᾱ = 0) has no x̂0 direction to correct along
            s = ((1 - sigma) ** 2 + sigma ** 2).sqrt()
            return ((1 - sigma) / s) ** 2, s
        ac = self.alphas_cumprod.to(x.device)
        lo = t.float().clamp(0, len(ac) - 1)  # a fractional timestep (Karras sigmas) interpolates ᾱ
        i = lo.floor().long()
        a = ac[i] + (ac[(i + 1).clamp(max=len(ac) - 1)] - ac[i]) * (lo - i)
        return a.view(shape), torch.ones_like(a).view(shape)

    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        """σ of flow-matching timesteps given as σ (Flux's denoiser call) or as σ·1000 (SD3's, and every scheduler's)."""
        t = t.float()
        return t if float(t.max()) <= 1 + 1e-6 else t / self.n_train

    def step_index(self, t: torch.Tensor, timesteps: torch.Tensor) -> int:
        """The index of the denoiser's timestep ``t`` among the scheduler's ``timesteps``, in the same units."""
        ts = timesteps.to(t.device).float()
        if self.flow:
            t, ts = self._sigma(t), self._sigma(ts)
        return int((ts - float(t[0])).abs().argmin())

    def to_eps(self, pred: torch.Tensor, x: torch.Tensor, t: torch.Tensor):
        """(eps, x_vp, ᾱ) for the denoiser's prediction ``pred`` at ``x``."""
        a, s = self._coords(x, t)
        if self.flow:  # n = x_t + (1 − σ)·v, and 1 − σ = sqrt(ᾱ)·s
            eps = x + a.sqrt() * s * pred
        elif self.prediction == "epsilon":
            eps = pred
        elif self.prediction == "v_prediction":
            eps = a.sqrt() * pred + (1 - a).sqrt() * x
        else:
            eps = (x - a.sqrt() * pred) / (1 - a).sqrt()
        return eps, x / s, a

    def from_eps(self, eps: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The denoiser's kind of prediction for ``eps`` at ``x`` (the inverse of :meth:`to_eps`)."""
        a, s = self._coords(x, t)
        x_vp = x / s
        x0 = (x_vp - (1 - a).sqrt() * eps) / a.sqrt()
        if self.flow:
            return eps - x0
        if self.prediction == "epsilon":
            return eps
        if self.prediction == "v_prediction":
            return a.sqrt() * eps - (1 - a).sqrt() * x0
        return x0


class NoveltyPipelineWrapper:
    """A diffusers pipeline whose denoiser's predictions carry a session's guidance terms, call after call.

    ``nv(**pipeline_kwargs)`` runs the pipeline with the denoiser (``pipe.unet`` or ``pipe.transformer``) patched for
    that call: at each step its prediction is turned into eps at x_t (:class:`SchedulerAdapter`), corrected by
    :meth:`noveltynets.sampling.GuidedModel.correct` (the cheap x̂0 mode; no backward pass through the denoiser) and
    turned back. Terms see latents as (B, C, H, W): Flux's packed (B, tokens, 4C) latents are unpacked for them.
    Under the pipeline's classifier-free guidance (``pipe.do_classifier_free_guidance``) the correction is computed
    on the conditional half and added to both halves; a further call at the same step and latents (Flux's true CFG,
    SD3's skip-layer guidance) gets the same correction, computed once. CADS noises the conditional rows'
    ``encoder_hidden_states`` and ``pooled_projections``. After the call the terms see the final latents
    (``on_samples_end``): the memory learns them. Re-noising terms are refused (the scheduler's steps are its own)."""

    def __init__(self, pipe, session=None, terms=()):
        self.pipe, self.session = pipe, session
        self.denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        if self.denoiser is None:
            raise NoveltynetsError(f"{type(pipe).__name__} has neither a unet nor a transformer to guide")
        self.extra_terms = list(terms)
        for term in self.extra_terms:  # e.g. a minority classifier trained for another model
            term.check_model(_PipelineModel(pipe, self.denoiser))

    @property
    def terms(self) -> list:
        return [*(self.session.terms if self.session is not None else ()), *self.extra_terms]

    def decoded_embedder(self, image_embedder, id: str, dim: int):
        """An embedder of decoded images for this pipeline's latents: ``image_embedder`` (CLIP, DINO...: differentiable,
        (B, 3, H, W) in [−1, 1] → (B, ``dim``)) after the pipeline's VAE decoder. Pass it as ``open_session(embedder=)``:
        the memory learns (and guidance reads) the decoded images, at the cost of a decode per guided step."""
        from ..embed import DecodedImages

        vae = getattr(self.pipe, "vae", None)
        if vae is None:
            raise NoveltynetsError(f"{type(self.pipe).__name__} has no vae to decode latents with")
        scale, shift = vae.config.get("scaling_factor", 1.0) or 1.0, vae.config.get("shift_factor", 0.0) or 0.0

        def decode(latents):
            return vae.decode((latents / scale + shift).to(vae.dtype)).sample.float()
        return DecodedImages(decode, image_embedder, id, dim)

    def open_session(self, guide=("novelty:batch_weight=0,memory_stop=0.5",), memory: str | None = None, store=None,
                     embedder="pooled-latents:8", reference_n: int = 32, reference_kwargs: dict | None = None, **kwargs):
        """A session for this pipeline (latent embedder by default, no decode per step; or an :class:`Embedder`, e.g.
        :meth:`decoded_embedder`). A new novelty memory's reference is ``reference_n`` of the pipeline's own unguided
        final latents (``reference_kwargs`` for its calls, seeds 10¹²…), made only when the memory does not exist yet.
        The default guide is the memory part alone (the in-batch part's strength is calibrated for pixels), in the run's
        first half: the pipeline's own loop ends the run, so no clean-up can repair a push to the end (novelty's default)."""
        from ..embed import embedder_from_spec
        from ..memory.store import MemoryStore
        from ..session import POOL_SEED_BASE, open_session

        model = _PipelineModel(self.pipe, self.denoiser)
        emb = embedder_from_spec(embedder, model) if isinstance(embedder, str) else embedder
        st = store if isinstance(store, MemoryStore) else MemoryStore(store)
        reference = None
        if memory is None or not st.exists(memory):  # reference_kwargs must ask for reference_n images (batch_size, prompts...)
            call = {**(reference_kwargs or {}), "generator": [torch.Generator(device="cpu").manual_seed(POOL_SEED_BASE + i)
                                                              for i in range(reference_n)]}
            with torch.no_grad():
                reference = emb(self._final_latents(lambda: self.pipe(**call), _Layout(self.pipe, call)))
        self.session = open_session(model, SamplingConfig(device=str(self.denoiser.device)), guide, memory=memory, store=st,
                                    embedder=emb, reference=reference, **kwargs)
        return self.session

    def __call__(self, *args, **kwargs):
        terms = self.terms
        if not terms:
            return self.pipe(*args, **kwargs)
        step = _GuidedStep(self.pipe, terms, kwargs)
        original = self.denoiser.forward

        def forward(*a, **kw):  # UNets take (sample, timestep, ...), SD3/Flux transformers hidden_states=, timestep= by keyword
            return step(original, a, kw)

        step.guided.start_batch()
        out = {}
        with _patched(self.denoiser, "forward", forward):
            latents = self._final_latents(lambda: out.setdefault("out", self.pipe(*args, **kwargs)), step.layout)
        step.guided.end_batch(latents, {"seeds": step.seeds if len(step.seeds) == len(latents) else [None] * len(latents)})
        return out["out"]

    def _final_latents(self, call, layout: "_Layout") -> torch.Tensor:
        """Run ``call()`` (a pipeline call) and return the latents its scheduler's last step made, as (B, C, H, W)."""
        scheduler, final = self.pipe.scheduler, {}
        step = scheduler.step

        def record_step(*a, **kw):
            res = step(*a, **kw)
            final["latents"] = res[0] if isinstance(res, tuple) else res.prev_sample
            return res

        with _patched(scheduler, "step", record_step):
            call()
        if "latents" not in final:
            raise NoveltynetsError(f"{type(self.pipe).__name__} made no scheduler step: nothing to observe")
        return layout.unpack(final["latents"].float())


@contextlib.contextmanager
def _patched(obj, name: str, value):
    """``obj.name = value`` for the block; then what was there before (an instance's own patch, e.g. accelerate's
    offload hook on ``forward``, is put back; else the class's method shows again)."""
    own = name in vars(obj)
    before = vars(obj).get(name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if own:
            setattr(obj, name, before)
        else:
            delattr(obj, name)


class _GuidedStep:
    """One wrapped call's denoiser patch: the prediction plus the terms' correction, one correction per step."""

    def __init__(self, pipe, terms, kwargs):
        self.pipe, self.terms = pipe, terms
        needy = [term.name for term in terms if term.needs_denoiser]
        if needy:  # the pipeline calls its denoiser itself, at its own timesteps
            raise NoveltynetsError(f"{', '.join(needy)} calls the denoiser at timesteps of its own: served by noveltynets' "
                                   "sampler and NoveltyDDIMPipeline, not in a wrapped pipeline")
        self.guided = GuidedModel(None, terms, torch.ones(1))
        self.adapter, self.layout = SchedulerAdapter(pipe.scheduler), _Layout(pipe, kwargs)
        gens = kwargs.get("generator")
        gens = gens if isinstance(gens, (list, tuple)) else [gens] if gens is not None else []
        self.seeds = [int(g.initial_seed()) for g in gens]  # CADS's noise per image (a single generator: the same for all)
        self.conditioners = [t for t in terms if t.changes_condition()]
        self.last: dict = {}  # the latest step's index, conditional latents and correction

    def __call__(self, original, a, kw):
        sample = kw["hidden_states"] if "hidden_states" in kw else kw["sample"] if "sample" in kw else a[0]
        timestep = kw["timestep"] if "timestep" in kw else a[1]
        t = torch.as_tensor(timestep, device=sample.device).float().flatten().expand(len(sample))
        timesteps = self.pipe.scheduler.timesteps
        i = self.adapter.step_index(t, timesteps)
        halves = bool(getattr(self.pipe, "do_classifier_free_guidance", False)) and len(sample) % 2 == 0
        reuse = self._cached(i, sample, halves)
        n = len(sample) // 2 if halves else 0
        if self.conditioners and reuse is None:  # the first call of a step is the conditional one (Flux's true CFG)
            kw = self._condition(kw, i, len(timesteps), n)
        out = original(*a, **kw)
        if not any(term.active(i / len(timesteps)) for term in self.terms):
            return out  # nothing acts at this step: the prediction as it is, bit for bit
        pred = out[0] if isinstance(out, tuple) else out.sample
        if reuse is None:
            reuse = self._correction(sample[n:], pred[n:], t[n:], i, len(timesteps))
            reuse = torch.cat([reuse, reuse]) if halves else reuse
        pred = pred + reuse.to(pred.dtype)
        return (pred, *out[1:]) if isinstance(out, tuple) else type(out)(sample=pred)

    def _cached(self, i, sample, halves):
        """The correction already made at step ``i`` for these latents (all of them, or the conditional half), else None."""
        if self.last.get("i") != i:
            return None
        x, delta = self.last["x"], self.last["delta"]
        if sample.shape == x.shape and torch.equal(sample, x):
            return delta
        if halves and sample[len(sample) // 2:].shape == x.shape and torch.equal(sample[len(sample) // 2:], x):
            return torch.cat([delta, delta])
        return None

    def _correction(self, x_t, pred, t, i, num_steps):
        x, p = self.layout.unpack(x_t.float()), self.layout.unpack(pred.float())
        eps, x_vp, a = self.adapter.to_eps(p, x, t)
        info = {"i": i, "num_steps": num_steps, "x": x_vp, "t": t, "alpha_bar": a, "seeds": self.seeds or [None] * len(x)}
        new = self.guided.correct(x_vp, eps, a, info)
        if isinstance(new, tuple):  # (eps, ρ): a term asks to re-noise, which only the sampler's own steps can do
            names = ", ".join(t.name for t in self.terms if t.renoises(i / num_steps))
            raise NoveltynetsError(f"re-noising ({names}: renoise_rho > 0) is not served in a wrapped pipeline")
        # the difference of two conversions of the same kind: a term that changes nothing changes no bit
        delta = self.layout.pack(self.adapter.from_eps(new, x, t) - self.adapter.from_eps(eps, x, t))
        self.last = {"i": i, "x": x_t, "delta": delta}
        return delta

    def _condition(self, kw, i, num_steps, n):
        """``kw`` with the conditional rows (from ``n`` on) of the text condition changed by the terms (CADS)."""
        keys = [k for k in ("encoder_hidden_states", "pooled_projections") if isinstance(kw.get(k), torch.Tensor)]
        if not keys:
            raise NoveltynetsError(f"{', '.join(t.name for t in self.conditioners)} changes the condition: this denoiser is "
                                   "called without encoder_hidden_states")
        if not self.seeds:
            self.seeds = [int(s) for s in torch.randint(0, 2**62, (len(kw[keys[0]]) - n,))]
        kw = dict(kw)
        for k in keys:
            y = kw[k].clone()
            rows = y[n:]
            info = {"i": i, "num_steps": num_steps, "seeds": [self.seeds[r % len(self.seeds)] for r in range(len(rows))]}
            for term in self.conditioners:
                rows = term.condition(rows.float(), info).to(y.dtype)
            y[n:] = rows
            kw[k] = y
        return kw


class _Layout:
    """Between a pipeline's latents and the (B, C, H, W) that guidance terms see: Flux-style pipelines pack 2×2
    patches into tokens (B, H·W/4, 4C); others pass latents as they are."""

    def __init__(self, pipe, kwargs):
        self.pipe = pipe
        self.packed = hasattr(pipe, "_unpack_latents") and hasattr(pipe, "_pack_latents")
        if self.packed:
            size = getattr(pipe, "default_sample_size", 128) * pipe.vae_scale_factor
            self.hw = (kwargs.get("height") or size, kwargs.get("width") or size)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        if not self.packed or x.dim() != 3:
            return x
        return self.pipe._unpack_latents(x, *self.hw, self.pipe.vae_scale_factor)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        if not self.packed or x.dim() != 4:
            return x
        return self.pipe._pack_latents(x, *x.shape)


class _PipelineModel:
    """What a session needs to know of a pipeline's model: an id and its denoiser."""

    trained_here = False

    def __init__(self, pipe, denoiser):
        self.unet, self.model_id = denoiser, _pipeline_id(pipe, type(pipe).__name__)
        vae = getattr(pipe, "vae", None)  # the latents' channels (a Flux transformer's in_channels are its packed tokens')
        self.latent_channels = int(vae.config.latent_channels) if vae is not None else int(denoiser.config.in_channels)


def _pipeline_id(pipe, fallback: str) -> str:
    """``<folder the pipeline was loaded from, else fallback>@pipeline``: the model id of a pipeline's memories."""
    return f"{Path(str(getattr(pipe.config, '_name_or_path', '') or fallback)).name}@pipeline"
