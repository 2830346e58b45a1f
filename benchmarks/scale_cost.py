"""The cost of novelty guidance beside a realistic denoiser, as ratios in one run (issue 24, item 3).

    python benchmarks/scale_cost.py --device cpu --batches 2 --steps 4 > docs/benchmarks/capacity/cost_cpu.log
    python benchmarks/scale_cost.py --device cuda --batches 16 64 256 --steps 25 > docs/benchmarks/capacity/cost_gpu.log

A StableDiffusionPipeline whose UNet2DConditionModel has SD's layout at a smaller width (block channels
128-256-512-512, one layer per block, cross-attention 768: about 100M parameters, random weights) and 4×64×64
latents, CFG 7.5, DDIM; plain against guided through NoveltyPipelineWrapper by a novelty memory (the memory part,
``novelty:batch_weight=0``) that does not learn and one that learns each call's latents, best of 4
interleaved rounds on the same seeds (benchmarks/diffusers_overhead.py's protocol). Then the shipped model
(NoveltyDDIMPipeline) at the same batch sizes. Random weights: the numbers are costs, not images.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from benchmarks.diffusers_overhead import _Call, _row, wrapped  # noqa: E402
from tests.test_diffusers import _tiny_sd  # noqa: E402


def realistic_sd(device: str):
    """_tiny_sd's pipeline with a ~100M-parameter SD-layout UNet at 64×64 latents (random weights)."""
    from diffusers import DDIMScheduler, UNet2DConditionModel

    pipe = _tiny_sd(DDIMScheduler)
    torch.manual_seed(0)
    pipe.unet = UNet2DConditionModel(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(128, 256, 512, 512),
                                     layers_per_block=1, cross_attention_dim=768, attention_head_dim=8).eval()
    pipe.text_encoder = None  # prompts come as embeddings of the UNet's width
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", type=int, nargs="+", default=[2])
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(2)
    pipe = realistic_sd(args.device)
    params = sum(q.numel() for q in pipe.unet.parameters())
    print(json.dumps({"unet_params": params, "device": args.device, "steps": args.steps}), flush=True)
    scale = pipe.vae_scale_factor
    with tempfile.TemporaryDirectory() as d:
        for n in args.batches:
            emb = torch.randn(n, 77, 768, generator=torch.Generator().manual_seed(0)).to(args.device)
            call = dict(prompt_embeds=emb, negative_prompt_embeds=torch.zeros_like(emb), num_inference_steps=args.steps,
                        height=64 * scale, width=64 * scale, guidance_scale=7.5, output_type="latent")
            row = wrapped(f"~{params / 1e6:.0f}M-parameter SD-layout UNet, 4x64x64 latents, CFG 7.5, {n} x {args.steps} steps", pipe,
                          call, n, Path(d) / f"sd{n}.sqlite")
            print(json.dumps({"batch": n, **{k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}}), flush=True)
        from noveltynets.integrations.diffusers import NoveltyDDIMPipeline

        shipped = NoveltyDDIMPipeline.from_noveltynets().to(args.device)
        for n in args.batches:
            kw = dict(class_labels=7, seeds=range(n), num_inference_steps=max(args.steps, 25), output_type="pt")
            session = shipped.open_session(klass=7, num_inference_steps=kw["num_inference_steps"], guide=["novelty"], memory=None,
                                           store=Path(d) / f"s{n}.sqlite")
            guided = lambda: shipped(novelty=session, **kw)  # noqa: E731
            row = _row(f"shipped model (NoveltyDDIMPipeline), {n} x {kw['num_inference_steps']} steps", lambda: shipped(**kw), guided,
                       _Call(session, guided))
            print(json.dumps({"batch": n, **{k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}}), flush=True)


if __name__ == "__main__":
    main()
