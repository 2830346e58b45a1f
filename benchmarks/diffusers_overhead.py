"""Overhead of noveltynets inside diffusers pipelines, as a ratio in one run (issue 21).

    python benchmarks/diffusers_overhead.py > docs/benchmarks/diffusers/overhead.log

Interleaved repetitions of plain vs guided calls on the same seeds: the shipped-model pipeline
(NoveltyDDIMPipeline, 32 sevens, 25 DDIM steps, a session memory learning each call), a tiny
random latent pipeline and a tiny random StableDiffusionPipeline through NoveltyPipelineWrapper (where
the denoiser costs almost nothing, so the ratio is an upper bound)."""

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.test_diffusers import TinyCFGPipeline, _gens, _tiny_sd, _unet  # noqa: E402

from noveltynets.integrations.diffusers import NoveltyDDIMPipeline, NoveltyPipelineWrapper  # noqa: E402
from diffusers import DDIMScheduler  # noqa: E402


def timed(fn, reps=3):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        pipe = NoveltyDDIMPipeline.from_noveltynets()
        session = pipe.open_session(klass=7, num_inference_steps=25, guide=["novelty"], memory=None, store=Path(d) / "s.sqlite")
        kw = dict(class_labels=7, seeds=range(32), num_inference_steps=25, output_type="pt")
        plain = timed(lambda: pipe(**kw))
        guided = timed(lambda: pipe(novelty=session, **kw))
        rows.append({"pipeline": "shipped model (NoveltyDDIMPipeline), 32 x 25 steps", "plain_s": plain, "novelty_s": guided,
                     "ratio": guided / plain})
        tiny = TinyCFGPipeline(_unet(11), DDIMScheduler())
        nv = NoveltyPipelineWrapper(tiny)
        call = dict(labels=[1] * 16, guidance_scale=3.0, num_inference_steps=25)
        nv.open_session(memory=None, store=Path(d) / "t.sqlite", reference_n=16, reference_kwargs=call)
        plain = timed(lambda: tiny(generator=_gens(range(16)), **call))
        guided = timed(lambda: nv(generator=_gens(range(16)), **call))
        rows.append({"pipeline": "tiny random latent UNet with CFG (wrapper), 16 x 25 steps", "plain_s": plain, "novelty_s": guided,
                     "ratio": guided / plain})
        sd = _tiny_sd(DDIMScheduler)
        nv = NoveltyPipelineWrapper(sd)
        emb = torch.randn(16, 5, 16, generator=torch.Generator().manual_seed(0))
        call = dict(prompt_embeds=emb, negative_prompt_embeds=torch.zeros(16, 5, 16), num_inference_steps=25, height=16, width=16,
                    output_type="latent")
        nv.open_session(guide=["novelty:batch_weight=0"], memory=None, store=Path(d) / "sd.sqlite", reference_n=16, reference_kwargs=call)
        sd.set_progress_bar_config(disable=True)
        plain = timed(lambda: sd(generator=_gens(range(16)), **call))
        guided = timed(lambda: nv(generator=_gens(range(16)), **call))
        rows.append({"pipeline": "tiny random StableDiffusionPipeline, CFG 7.5 (wrapper, memory part), 16 x 25 steps", "plain_s": plain,
                     "novelty_s": guided, "ratio": guided / plain})
    for r in rows:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}))


if __name__ == "__main__":
    main()
