"""The diffusers-native pipeline of the shipped model: the images of ``noveltynets sample``, a session's memory, save/load."""

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from noveltynets.errors import NoveltynetsError
from noveltynets.integrations.diffusers import NoveltyDDIMPipeline
from noveltynets.models import load_model
from noveltynets.sampling import SamplingConfig, sample
from noveltynets.guidance import PointGuidance
from noveltynets.session import open_session, parse_guide

STEPS = 6


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def pipe(model):
    return NoveltyDDIMPipeline.from_noveltynets(model)


def test_plain_images_are_those_of_the_sampler(pipe, model):
    got = pipe(class_labels=7, seeds=[3, 4, 5], num_inference_steps=STEPS, output_type="pt").images
    want = sample(model, [3, 4, 5], SamplingConfig(klass=7, steps=STEPS)).images
    assert torch.equal(got, want)
    one = pipe(class_labels=[7], generator=[torch.Generator().manual_seed(4)], num_inference_steps=STEPS, output_type="pt").images
    # a generator's seed is the image's seed, whatever the batch: equal up to the float-level difference a CPU's
    # kernels make between a batch of 3 and of 1 (2e-5 to 3e-5 on some machines; another seed differs by ~1)
    assert torch.allclose(one[0], want[1], atol=1e-4)
    assert not torch.allclose(one[0], want[2], atol=0.1)


def test_a_session_guides_and_learns_through_the_pipeline(pipe, model, tmp_path):
    store = tmp_path / "m.sqlite"
    kw = dict(class_labels=7, num_inference_steps=STEPS, batch_size=2, output_type="pt")
    with pipe.open_session(klass=7, num_inference_steps=STEPS, guide=["novelty"], memory="m", store=store) as s:
        first = pipe(seeds=[0, 1, 2, 3], novelty=s, **kw).images
        assert s.info()["n_seen"] == 4
        second = pipe(seeds=[0, 1, 2, 3], novelty=s, **kw).images
        assert s.info()["n_seen"] == 8
    config = SamplingConfig(klass=7, steps=STEPS, batch_size=2)
    with open_session(model, config, ["novelty"], memory="m2", store=store) as s2:  # the sampler, the same way, twice:
        assert torch.equal(first, sample(model, [0, 1, 2, 3], config, s2.terms).images)  # so run after run (the keep
        assert torch.equal(second, sample(model, [0, 1, 2, 3], config, s2.terms).images)  # protocol) gives the CLI's numbers
    # on the same seeds a fresh memory makes the first call's images again; this one remembers them and moves every image
    assert ((second - first).flatten(1).norm(dim=1) > 1.0).all(), (second - first).flatten(1).norm(dim=1)


def test_the_clean_up_is_the_samplers(pipe, model):
    kw = dict(class_labels=7, seeds=[0, 1], num_inference_steps=STEPS, output_type="pt")
    term = parse_guide("minority-self:scale=0.5")
    got = pipe(guidance=[term], clean=0.4, **kw).images  # two unguided steps, 332 and 166, after the run
    assert torch.equal(got, sample(model, [0, 1], SamplingConfig(klass=7, steps=STEPS, clean=0.4), [term]).images)
    assert not torch.allclose(got, pipe(guidance=[term], **kw).images, atol=1e-2)


def test_the_native_pipeline_serves_terms_that_call_the_denoiser(pipe, model):
    kw = dict(class_labels=7, seeds=[0, 1], num_inference_steps=STEPS, output_type="pt")
    term = parse_guide("minority-self:scale=0.5")
    got = pipe(guidance=[term], **kw).images
    assert torch.equal(got, sample(model, [0, 1], SamplingConfig(klass=7, steps=STEPS), [term]).images)
    assert not torch.allclose(got, pipe(**kw).images, atol=1e-2)


def test_save_and_load_round_trip_and_scheduler_swap(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    again = NoveltyDDIMPipeline.from_pretrained(tmp_path / "p")
    kw = dict(class_labels=[1, 2], seeds=[8, 9], num_inference_steps=STEPS, output_type="np")
    a, b = pipe(**kw).images, again(**kw).images
    assert a.shape == (2, 32, 32, 1) and np.abs(a - b).max() < 2e-3  # the shipped weights are fp16 on disk
    again.scheduler = DPMSolverMultistepScheduler.from_config(again.scheduler.config)
    c = again(**kw).images
    assert np.isfinite(c).all() and not np.allclose(a, c)  # another scheduler: other images, the pipeline still runs
    pil = pipe(class_labels=None, seeds=[0], num_inference_steps=STEPS).images  # unconditional, PIL by default
    assert pil[0].size == (32, 32)


def test_bad_calls_are_clear(pipe):
    with pytest.raises(NoveltynetsError, match="class labels for"):
        pipe(class_labels=[1, 2], seeds=[0], num_inference_steps=STEPS)
    with pytest.raises(NoveltynetsError, match="seeds or generator"):
        pipe(class_labels=1, seeds=[0], generator=[torch.Generator()], num_inference_steps=STEPS)
    with pytest.raises(NoveltynetsError, match="output_type"):
        pipe(class_labels=1, seeds=[0], num_inference_steps=STEPS, output_type="jpeg")
    with pytest.raises(NoveltynetsError, match=r"clean must be a number in \[0, 1\]"):
        pipe(class_labels=1, seeds=[0], num_inference_steps=STEPS, clean=2.0)
    with pytest.raises(NoveltynetsError, match="below the run's last timestep"):
        pipe(class_labels=1, seeds=[0], num_inference_steps=STEPS, clean=0.1)


# -- any pipeline: tiny random components built in code -------------------------------------------------------------
from diffusers import DDIMPipeline, DDIMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, UNet2DModel  # noqa: E402

from noveltynets.integrations.diffusers import NoveltyPipelineWrapper, SchedulerAdapter  # noqa: E402


def _unet(num_class_embeds=None, channels=4):
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=channels, out_channels=channels, block_out_channels=(8, 16), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       num_class_embeds=num_class_embeds).eval().requires_grad_(False)


class TinyCFGPipeline(DDIMPipeline):
    """Class-conditional latent loop in the shape of StableDiffusionPipeline's: [uncond, cond] in one batch of 2B."""

    @property
    def do_classifier_free_guidance(self):
        return self._guidance_scale > 1

    @torch.no_grad()
    def __call__(self, labels, generator, guidance_scale=3.0, num_inference_steps=5):
        self._guidance_scale, self.preds = guidance_scale, []
        latents = torch.stack([torch.randn(4, 8, 8, generator=g) for g in generator]) * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps)
        labels = torch.tensor(labels)
        for t in self.scheduler.timesteps:
            cfg = self.do_classifier_free_guidance
            x = torch.cat([latents] * 2) if cfg else latents
            x = self.scheduler.scale_model_input(x, t)
            y = torch.cat([torch.full_like(labels, 10), labels]) if cfg else labels
            pred = self.unet(x, t, class_labels=y).sample
            if cfg:
                u, c = pred.chunk(2)
                pred = u + guidance_scale * (c - u)
            self.preds = [*getattr(self, "preds", []), pred]
            latents = self.scheduler.step(pred, t, latents).prev_sample
        return type("Out", (), {"images": latents})()


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("scheduler", [DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler])
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_any_pipeline_novelty_changes_output_scale_0_changes_nothing_memory_grows(tmp_path, scheduler, cfg):
    pipe = TinyCFGPipeline(_unet(11), scheduler())
    call = dict(labels=[1, 2], guidance_scale=cfg, num_inference_steps=5)
    plain = pipe(generator=_gens([0, 1]), **call).images
    zero = NoveltyPipelineWrapper(pipe, terms=[parse_guide("novelty:scale=0")])
    assert torch.equal(zero(generator=_gens([0, 1]), **call).images, plain)  # scale 0: bit for bit
    nv = NoveltyPipelineWrapper(pipe)
    s = nv.open_session(memory="m", store=tmp_path / "s.sqlite", reference_n=8, reference_kwargs={**call, "labels": [1] * 8})
    first = nv(generator=_gens([0, 1]), **call).images
    assert s.info()["n_seen"] == 2 and s.info()["embedder"] == "pooled-latents:8"
    second = nv(generator=_gens([0, 1]), **call).images
    assert s.info()["n_seen"] == 4
    # the default guide is the memory part alone: an empty memory pushes nothing, a memory of the first call does
    assert torch.equal(first, plain) and ((second - first).flatten(1).norm(dim=1) > 0).all()
    assert torch.isfinite(second).all()
    assert pipe.unet.forward.__func__ is UNet2DModel.forward  # the patch is gone after the call
    batch = NoveltyPipelineWrapper(pipe)  # the in-batch part, asked for, acts from the first call
    batch.open_session(guide=["novelty:batch_weight=1"], store=tmp_path / "s.sqlite", reference_n=8, reference_kwargs={**call, "labels": [1] * 8})
    assert not torch.allclose(batch(generator=_gens([0, 1]), **call).images, plain)


def test_under_cfg_the_combined_prediction_carries_the_correction_once():
    def first_pred(wrapped: bool, cfg: float):
        pipe = TinyCFGPipeline(_unet(11), DDIMScheduler())
        run = NoveltyPipelineWrapper(pipe, terms=[PointGuidance(scale=1.0, target=1.0)]) if wrapped else pipe
        run(labels=[3], generator=_gens([5]), guidance_scale=cfg, num_inference_steps=3)
        return pipe.preds[0]  # the combined prediction of the first step (the same x_t in all four runs)

    with_cfg = first_pred(True, 3.0) - first_pred(False, 3.0)
    without = first_pred(True, 1.0) - first_pred(False, 1.0)
    # u + w(c − u) with both halves corrected by δ is the plain combination plus δ: the correction acts once
    assert torch.allclose(with_cfg, without, atol=1e-5) and with_cfg.abs().max() > 1e-3


def test_scheduler_adapter_round_trips_every_prediction_and_flow_matching():
    from diffusers import DDPMScheduler

    x0, n = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    sig = torch.tensor([0.9, 0.5, 0.1]).view(-1, 1, 1, 1)
    xt, v = (1 - sig) * x0 + sig * n, n - x0
    ad = SchedulerAdapter(FlowMatchEulerDiscreteScheduler())
    for t in (sig.flatten(), sig.flatten() * 1000):  # Flux passes σ, SD3 σ·1000
        eps, x_vp, a = ad.to_eps(v, xt, t)
        assert torch.allclose(eps, n, atol=1e-5) and torch.allclose((x_vp - (1 - a).sqrt() * eps) / a.sqrt(), x0, atol=1e-4)
        assert torch.allclose(ad.from_eps(eps, xt, t), v, atol=1e-4)
    for kind in ("epsilon", "v_prediction", "sample"):
        sch = DDPMScheduler(prediction_type=kind)
        t = torch.tensor([900, 500, 100])
        a = sch.alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * n
        pred = {"epsilon": n, "v_prediction": a.sqrt() * n - (1 - a).sqrt() * x0, "sample": x0}[kind]
        ad = SchedulerAdapter(sch)
        assert torch.allclose(ad.to_eps(pred, xt, t)[0], n, atol=1e-4) and torch.allclose(ad.from_eps(n, xt, t), pred, atol=1e-4)
    with pytest.raises(NoveltynetsError, match="not served"):
        SchedulerAdapter(type("Odd", (), {"config": {"prediction_type": "epsilon"}})())


class TinyFlowPipeline(DDIMPipeline):
    """A flow-matching loop in the shape of SD3's: the denoiser predicts v at timestep σ·1000."""

    @torch.no_grad()
    def __call__(self, generator, num_inference_steps=5):
        latents = torch.stack([torch.randn(4, 8, 8, generator=g) for g in generator])
        self.scheduler.set_timesteps(num_inference_steps)
        for t in self.scheduler.timesteps:
            v = self.unet(latents, t.expand(len(latents))).sample
            latents = self.scheduler.step(v, t, latents).prev_sample
        return type("Out", (), {"images": latents})()


def test_a_flow_matching_pipeline_is_guided_and_learns(tmp_path):
    pipe = TinyFlowPipeline(_unet(), FlowMatchEulerDiscreteScheduler())
    plain = pipe(generator=_gens([0, 1]), num_inference_steps=4).images
    assert torch.equal(NoveltyPipelineWrapper(pipe, terms=[parse_guide("novelty:scale=0")])(generator=_gens([0, 1]),
                                                                                                num_inference_steps=4).images, plain)
    nv = NoveltyPipelineWrapper(pipe)
    s = nv.open_session(memory=None, store=tmp_path / "s.sqlite", reference_n=8, reference_kwargs={"num_inference_steps": 4})
    first = nv(generator=_gens([0, 1]), num_inference_steps=4).images
    second = nv(generator=_gens([0, 1]), num_inference_steps=4).images
    assert s.info()["n_seen"] == 4 and torch.isfinite(second).all()
    assert torch.equal(first, plain) and ((second - first).flatten(1).norm(dim=1) > 0).all()


def _tiny_sd(scheduler):
    """A real StableDiffusionPipeline of tiny random components (no tokenizer: prompts come as embeddings)."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=16, norm_num_groups=4, attention_head_dim=2).eval()
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4, sample_size=16).eval()
    text = CLIPTextModel(CLIPTextConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
                                        vocab_size=100)).eval()
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=None, unet=unet, scheduler=scheduler.from_config(
        {"clip_sample": False}), safety_checker=None, feature_extractor=None, requires_safety_checker=False)


@pytest.mark.parametrize("scheduler", [DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler])
@pytest.mark.parametrize("cfg", [1.0, 7.5])
def test_a_real_stable_diffusion_pipeline_is_guided_call_after_call(tmp_path, scheduler, cfg):
    pipe = _tiny_sd(scheduler)
    embeds = lambda n, seed: torch.randn(n, 5, 16, generator=torch.Generator().manual_seed(seed))
    call = dict(prompt_embeds=embeds(2, 0), negative_prompt_embeds=torch.zeros(2, 5, 16), num_inference_steps=3, height=16,
                width=16, guidance_scale=cfg, output_type="latent", return_dict=True)  # latents: a random VAE saturates
    run = lambda p: p(generator=_gens([0, 1]), **call).images
    plain = run(pipe)
    assert torch.equal(run(NoveltyPipelineWrapper(pipe, terms=[parse_guide("novelty:scale=0")])), plain)  # bit for bit
    nv = NoveltyPipelineWrapper(pipe)
    # the memory part alone (the batch part's default strength is calibrated for pixels in [-1, 1], see docs/DIFFUSERS.md)
    s = nv.open_session(guide=["novelty:batch_weight=0"], memory="sd", store=tmp_path / "s.sqlite", reference_n=4,
                        reference_kwargs={**call, "prompt_embeds": embeds(4, 1), "negative_prompt_embeds": torch.zeros(4, 5, 16)})
    first, second = run(nv), run(nv)
    assert torch.equal(first, plain)  # an empty memory pushes nothing
    assert s.info()["n_seen"] == 4 and torch.isfinite(second).all()
    assert ((second - first).flatten(1).norm(dim=1) > 1).all()  # the second call is pushed from the first's latents


def test_a_failed_call_leaves_the_pipeline_as_it_was_and_odd_schedulers_are_refused():
    pipe = TinyCFGPipeline(_unet(11), DDIMScheduler())
    nv = NoveltyPipelineWrapper(pipe, terms=[PointGuidance(scale=1.0, target=1.0)])
    with pytest.raises(TypeError):
        nv(labels=[1], generator=_gens([0]), no_such_argument=1)
    assert "forward" not in vars(pipe.unet) and "step" not in vars(pipe.scheduler)  # no patch left behind
    own = lambda *a, **kw: UNet2DModel.forward(pipe.unet, *a, **kw)  # an instance's own forward (accelerate's offload hook)
    pipe.unet.forward = own
    nv(labels=[1], generator=_gens([0]))
    assert vars(pipe.unet)["forward"] is own  # is put back, not dropped
    del pipe.unet.forward
    assert torch.equal(pipe(labels=[1], generator=_gens([0])).images, TinyCFGPipeline(_unet(11), DDIMScheduler())(
        labels=[1], generator=_gens([0])).images)
    from diffusers import DDPMScheduler

    odd = TinyCFGPipeline(_unet(11), DDPMScheduler(prediction_type="v_prediction"))
    odd.scheduler.register_to_config(prediction_type="flow")  # a prediction the adapter does not know
    with pytest.raises(NoveltynetsError, match="not served"):
        NoveltyPipelineWrapper(odd, terms=[PointGuidance()])(labels=[1], generator=_gens([0]))
    with pytest.raises(NoveltynetsError, match="neither a unet nor a transformer"):
        NoveltyPipelineWrapper(object())
    with pytest.raises(NoveltynetsError, match="trained for model"):  # the shipped minority classifier is the shipped model's
        NoveltyPipelineWrapper(pipe, terms=[parse_guide("minority")])


def _tiny_vae(latent_channels=4):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                         latent_channels=latent_channels, norm_num_groups=4, sample_size=16).eval()


def _tiny_sd3():
    """A real StableDiffusion3Pipeline of tiny random components (no text encoders: prompts come as embeddings)."""
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=4,
                                        num_attention_heads=2, joint_attention_dim=8, caption_projection_dim=8, pooled_projection_dim=8,
                                        pos_embed_max_size=8).eval()
    none = dict.fromkeys(["text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3"])
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_tiny_vae(), **none)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_flux():
    """A real FluxPipeline of tiny random components: packed (B, tokens, 4C) latents, σ as the timestep."""
    from diffusers import FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=4,
                                         num_attention_heads=2, joint_attention_dim=8, pooled_projection_dim=8, axes_dims_rope=(0, 2, 2)).eval()
    none = dict.fromkeys(["text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"])
    pipe = FluxPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=_tiny_vae(), **none)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _text(n, seed, length=3, dim=8):
    g = torch.Generator().manual_seed(seed)
    return dict(prompt_embeds=torch.randn(n, length, dim, generator=g), pooled_prompt_embeds=torch.randn(n, dim, generator=g))


def _negative(n, length=3, dim=8):
    return dict(negative_prompt_embeds=torch.zeros(n, length, dim), negative_pooled_prompt_embeds=torch.zeros(n, dim))


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_a_real_sd3_pipeline_is_guided_call_after_call(tmp_path, cfg):
    pipe = _tiny_sd3()
    call = dict(**_text(2, 0), **_negative(2), guidance_scale=cfg, num_inference_steps=4, height=16, width=16, output_type="latent")
    run = lambda p: p(generator=_gens([0, 1]), **call).images
    plain = run(pipe)
    assert torch.equal(run(NoveltyPipelineWrapper(pipe, terms=[parse_guide("novelty:scale=0")])), plain)
    nv = NoveltyPipelineWrapper(pipe)
    s = nv.open_session(memory=None, store=tmp_path / "s.sqlite", reference_n=4,
                        reference_kwargs={**call, **_text(4, 1), **_negative(4)})
    first, second = run(nv), run(nv)
    assert torch.equal(first, plain) and s.info()["n_seen"] == 4 and torch.isfinite(second).all()
    assert ((second - first).flatten(1).norm(dim=1) > 0).all()


def _first_prediction(scheduler, call) -> torch.Tensor:
    """The model output the scheduler's first step gets in ``call()``."""
    seen, step = [], scheduler.step
    scheduler.step = lambda out, *a, **kw: (seen.append(out.clone()), step(out, *a, **kw))[1]
    try:
        call()
    finally:
        del scheduler.step
    return seen[0]


def test_a_real_flux_pipeline_packed_latents_true_cfg_carries_the_correction_once(tmp_path):
    pipe = _tiny_flux()
    call = dict(**_text(2, 0), num_inference_steps=3, height=16, width=16, output_type="latent")
    run = lambda p, **kw: p(generator=_gens([0, 1]), **call, **kw).images
    plain = run(pipe)
    assert plain.shape == (2, 16, 16)  # packed: 4×4 tokens of 2×2 patches of 4 channels
    assert torch.equal(run(NoveltyPipelineWrapper(pipe, terms=[parse_guide("novelty:scale=0")])), plain)
    nv = NoveltyPipelineWrapper(pipe)
    s = nv.open_session(memory="flux", store=tmp_path / "s.sqlite", reference_n=4, reference_kwargs={**call, **_text(4, 1)})
    assert s.info()["embedder"] == "pooled-latents:8" and s.history.config.dim == 4 * 8 * 8  # unpacked: 4 channels
    first, second = run(nv), run(nv)
    assert torch.equal(first, plain) and s.info()["n_seen"] == 4 and ((second - first).flatten(1).norm(dim=1) > 0).all()
    # true CFG calls the transformer twice a step (prompt, then negative prompt) at the same latents: both get the one
    # correction, so neg + w·(pos − neg) carries it once, as without CFG
    point = NoveltyPipelineWrapper(pipe, terms=[PointGuidance(scale=1.0, target=1.0)])
    true_cfg = dict(**_negative(2), true_cfg_scale=3.0)
    shift = lambda **kw: _first_prediction(pipe.scheduler, lambda: run(point, **kw)) - _first_prediction(pipe.scheduler, lambda: run(pipe, **kw))
    with_cfg, without = shift(**true_cfg), shift()
    assert torch.allclose(with_cfg, without, atol=1e-5) and with_cfg.abs().max() > 1e-3


def test_cads_noises_the_text_condition_of_a_wrapped_pipeline_and_renoising_is_refused(tmp_path):
    pipe = _tiny_sd3()
    call = dict(**_text(2, 0), **_negative(2), guidance_scale=4.0, num_inference_steps=4, height=16, width=16, output_type="latent")
    run = lambda p: p(generator=_gens([0, 1]), **call).images
    plain = run(pipe)
    cads = parse_guide("cads")
    assert cads.changes_condition() and not PointGuidance().changes_condition()
    noisy = run(NoveltyPipelineWrapper(pipe, terms=[cads]))
    assert not torch.allclose(noisy, plain) and torch.equal(noisy, run(NoveltyPipelineWrapper(pipe, terms=[cads])))  # seeded
    assert torch.equal(run(NoveltyPipelineWrapper(pipe, terms=[parse_guide("cads:scale=0")])), plain)  # bit for bit
    nv = NoveltyPipelineWrapper(pipe)
    nv.open_session(guide=["novelty:renoise_rho=0.5"], store=tmp_path / "s.sqlite", reference_n=2, reference_kwargs=call)
    with pytest.raises(NoveltynetsError, match="re-noising"):
        run(nv)
    with pytest.raises(NoveltynetsError, match="minority-self calls the denoiser at timesteps of its own"):
        run(NoveltyPipelineWrapper(pipe, terms=[parse_guide("minority-self")]))
    unet = TinyCFGPipeline(_unet(11), DDIMScheduler())  # a class-label UNet has no text condition for CADS to noise
    with pytest.raises(NoveltynetsError, match="encoder_hidden_states"):
        NoveltyPipelineWrapper(unet, terms=[cads])(labels=[1], generator=_gens([0]), num_inference_steps=2)


def test_a_decoded_image_embedder_guides_and_learns_through_the_vae(tmp_path):
    pipe = _tiny_sd3()
    torch.manual_seed(1)
    features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.SiLU(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    nv = NoveltyPipelineWrapper(pipe)
    emb = nv.decoded_embedder(features, "tiny-conv", dim=32)
    call = dict(**_text(2, 0), num_inference_steps=4, guidance_scale=1.0, height=16, width=16, output_type="latent")
    s = nv.open_session(memory="pixels", embedder=emb, store=tmp_path / "s.sqlite", reference_n=4, reference_kwargs={**call, **_text(4, 1)})
    assert s.info()["embedder"] == "decoded:tiny-conv"
    first = nv(generator=_gens([0, 1]), **call).images
    second = nv(generator=_gens([0, 1]), **call).images
    assert s.info()["n_seen"] == 4 and torch.isfinite(second).all() and ((second - first).flatten(1).norm(dim=1) > 0).all()
    with pytest.raises(NoveltynetsError, match="no vae"):
        NoveltyPipelineWrapper(TinyCFGPipeline(_unet(11), DDIMScheduler())).decoded_embedder(features, "x", 32)
