"""Overhead of noveltynets inside diffusers pipelines, as ratios in one run (issue 21).

    python benchmarks/diffusers_overhead.py > docs/benchmarks/diffusers/overhead.log

Best of 4 interleaved rounds, same seeds: plain; guided by a memory that does not learn (``learn=False``: the cost
of the wrapper and the guidance per step); guided by a memory that learns each call's latents (the full
cost: the memory's training after the call is a fixed cost per call, whatever the denoiser costs). The
shipped-model pipeline (NoveltyDDIMPipeline, 32 sevens, 25 DDIM steps), and through NoveltyPipelineWrapper
a tiny random latent UNet, a tiny random StableDiffusionPipeline, a small one (a 32×32 latent UNet of
64-128-128 channels: a denoiser that costs something per step) and a tiny random FluxPipeline. Random
weights: the numbers are costs, not images."""

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.test_diffusers import TinyCFGPipeline, _gens, _text, _tiny_flux, _tiny_sd, _unet  # noqa: E402

from noveltynets.integrations.diffusers import NoveltyDDIMPipeline, NoveltyPipelineWrapper  # noqa: E402
from diffusers import DDIMScheduler  # noqa: E402


def interleaved(fns, reps=4):
    """The best time of each of ``fns`` over ``reps`` rounds, one call of each per round (slow drift hits all alike)."""
    best = [float("inf")] * len(fns)
    for _ in range(reps):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def _row(name, plain, guided, learning):
    """plain: no guidance; guided: a memory that does not learn; learning: one that learns each call (the session's
    ``learn`` flag is switched around each call)."""
    def learn(flag, fn):
        def call():
            learning.session.learn = flag
            fn()
        return call
    learn(True, learning.call)()  # the memory knows a call's latents before any timing (an empty one pushes nothing)
    p, g, lrn = interleaved([plain, learn(False, guided), learn(True, learning.call)])
    return {"pipeline": name, "plain_s": p, "guided_s": g, "guided_learning_s": lrn, "ratio_guided": g / p, "ratio_guided_learning": lrn / p}


class _Call:
    def __init__(self, session, call):
        self.session, self.call = session, call


def _small_sd():
    """A StableDiffusionPipeline whose UNet costs something per step (random weights, 32×32 latents)."""
    from diffusers import UNet2DConditionModel

    pipe = _tiny_sd(DDIMScheduler)
    torch.manual_seed(0)
    pipe.unet = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4, block_out_channels=(64, 128, 128), layers_per_block=1,
                                     down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                     attention_head_dim=8).eval()
    return pipe


def wrapped(name, pipe, call, n, store, guide=("novelty:batch_weight=0",)):
    """plain / guided without learning / guided and learning, for one wrapped pipeline."""
    nv = NoveltyPipelineWrapper(pipe)
    session = nv.open_session(guide=list(guide), memory=None, store=store, reference_n=n, reference_kwargs=call)
    guided = lambda: nv(generator=_gens(range(n)), **call)
    return _row(name, lambda: pipe(generator=_gens(range(n)), **call), guided, _Call(session, guided))


def main():
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        pipe = NoveltyDDIMPipeline.from_noveltynets()
        kw = dict(class_labels=7, seeds=range(32), num_inference_steps=25, output_type="pt")
        session = pipe.open_session(klass=7, num_inference_steps=25, guide=["novelty"], memory=None, store=Path(d) / "s.sqlite")
        guided = lambda: pipe(novelty=session, **kw)
        rows.append(_row("shipped model (NoveltyDDIMPipeline), 32 x 25 steps", lambda: pipe(**kw), guided, _Call(session, guided)))
        rows.append(wrapped("tiny random latent UNet with CFG 3, 16 x 25 steps", TinyCFGPipeline(_unet(11), DDIMScheduler()),
                            dict(labels=[1] * 16, guidance_scale=3.0, num_inference_steps=25), 16, Path(d) / "t.sqlite"))
        emb = torch.randn(16, 5, 16, generator=torch.Generator().manual_seed(0))
        sd_call = dict(prompt_embeds=emb, negative_prompt_embeds=torch.zeros(16, 5, 16), num_inference_steps=25, height=16, width=16,
                       output_type="latent")
        sd = _tiny_sd(DDIMScheduler)
        sd.set_progress_bar_config(disable=True)
        rows.append(wrapped("tiny random StableDiffusionPipeline, CFG 7.5, 16 x 25 steps", sd, sd_call, 16, Path(d) / "sd.sqlite"))
        small = _small_sd()
        small.set_progress_bar_config(disable=True)
        small_call = {**sd_call, "prompt_embeds": emb[:4], "negative_prompt_embeds": torch.zeros(4, 5, 16), "height": 64, "width": 64,
                      "num_inference_steps": 15}
        rows.append(wrapped("small random StableDiffusionPipeline (32x32 latents, 64-128-128 UNet), CFG 7.5, 4 x 15 steps", small,
                            small_call, 4, Path(d) / "small.sqlite"))
        flux = _tiny_flux()
        rows.append(wrapped("tiny random FluxPipeline (packed latents), 16 x 25 steps", flux,
                            dict(**_text(16, 0), num_inference_steps=25, height=16, width=16, output_type="latent"), 16, Path(d) / "f.sqlite"))
    for r in rows:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True)


if __name__ == "__main__":
    main()
