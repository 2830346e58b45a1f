"""Differentiable embedders of x̂0 for novelty memories: pooled pixels, multi-scale, denoiser features, any callable.

Every embedder has an ``id`` that names it exactly; a memory records the id it was trained
with and refuses to be used with another embedder.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.attention
import torch.nn.functional as F

from ..errors import NoveltynetsError

DEFAULT_EMBEDDER = "pooled-pixels:32"  # of novelty memories (full resolution for 32×32 images): 8×8 pooling made blocky pushes and missed most near-duplicates, 16×16 cost class 1 more precision for the same cut (measured)


class Embedder:
    """``embedder(x0) -> (B, dim)``, differentiable in ``x0`` (B, C, H, W) in [-1, 1]."""

    id: str = ""
    dim: int = 0
    clamps_input: bool = False  # True: it clips x0 to [-1, 1] itself, so clipping first changes no value

    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class PooledPixels(Embedder):
    """Average-pool x̂0 to ``size``×``size`` (default 8×8 = 64-d for one channel): the default."""

    clamps_input = True

    def __init__(self, size: int = 8, channels: int = 1):
        self.size, self.dim, self.id = size, channels * size * size, f"pooled-pixels:{size}"

    def __call__(self, x0):
        return F.adaptive_avg_pool2d(x0.clamp(-1, 1), self.size).flatten(1)


class PooledLatents(Embedder):
    """Average-pool latents (any range, ``channels`` of them) to ``size``×``size``: a latent-diffusion pipeline's
    memory without a VAE decode per step."""

    def __init__(self, size: int = 8, channels: int = 4):
        self.size, self.dim, self.id = size, channels * size * size, f"pooled-latents:{size}"

    def __call__(self, x0):
        return F.adaptive_avg_pool2d(x0, self.size).flatten(1)


class MultiScalePooled(Embedder):
    """Pooled pixels at several sizes, concatenated (coarse layout and finer strokes)."""

    clamps_input = True

    def __init__(self, sizes: tuple[int, ...] = (2, 4, 8), channels: int = 1):
        self.sizes = tuple(sizes)
        self.dim = channels * sum(s * s for s in self.sizes)
        self.id = "multiscale-pooled:" + ",".join(map(str, self.sizes))

    def __call__(self, x0):
        x0 = x0.clamp(-1, 1)
        return torch.cat([F.adaptive_avg_pool2d(x0, s).flatten(1) for s in self.sizes], dim=1)


class DenoiserFeatures(Embedder):
    """The denoiser's own mid-block features of x̂0 seen at a small timestep ``t`` (no noise added), pooled."""

    clamps_input = True

    def __init__(self, unet, model_id: str, t: int = 20, null_class: int = 10):
        self.unet, self.t, self.null_class = unet, t, null_class
        self.dim = unet.config.block_out_channels[-1]
        self.id = f"denoiser-mid:t={t}:{model_id}"
        self._last: torch.Tensor | None = None  # the mid-block's latest output (the hook fires on every UNet call)
        unet.mid_block.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self._last = output

    def __call__(self, x0):
        t = torch.full((len(x0),), self.t, device=x0.device, dtype=torch.long)
        self.unet(x0.clamp(-1, 1), t, class_labels=torch.full_like(t, self.null_class))
        features, self._last = self._last, None
        return features.mean(dim=(2, 3))


class CallableEmbedder(Embedder):
    """Wrap any differentiable ``fn(x0) -> (B, dim)``; ``id`` must name it uniquely."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], id: str, dim: int):
        if not id:
            raise NoveltynetsError("a callable embedder needs a non-empty id")
        self.fn, self.id, self.dim = fn, f"callable:{id}", dim

    def __call__(self, x0):
        return self.fn(x0)


class DecodedImages(Embedder):
    """An image embedder (CLIP, DINO...: differentiable ``fn(images) -> (B, dim)``, images (B, 3, H, W) in [−1, 1])
    seen through a latent pipeline's decoder ``decode(latents) -> images``: a memory of decoded images in the user's
    own feature space. It costs a decode (and its backward pass) per guided step."""

    def __init__(self, decode: Callable[[torch.Tensor], torch.Tensor], fn: Callable[[torch.Tensor], torch.Tensor], id: str, dim: int):
        if not id:
            raise NoveltynetsError("a decoded-image embedder needs a non-empty id naming the image embedder")
        self.decode, self.fn, self.id, self.dim = decode, fn, f"decoded:{id}", dim

    def __call__(self, latents):
        # guidance differentiates twice (the Gauss–Newton step): attention must take the kernel that allows it
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            return self.fn(self.decode(latents).clamp(-1, 1))


def spec_of(embedder_id: str) -> str:
    """The spec that rebuilds the embedder with this id (a denoiser's id also names its model)."""
    if embedder_id.startswith("denoiser-mid:"):
        return ":".join(embedder_id.split(":")[:2])
    return embedder_id


def embedder_from_spec(spec: str, model=None) -> Embedder:
    """``pooled-pixels[:8]``, ``multiscale-pooled[:2,4,8]`` or ``denoiser-mid[:t=20]`` (needs ``model``)."""
    kind, _, arg = spec.partition(":")
    try:
        if kind == "pooled-pixels":
            return PooledPixels(int(arg) if arg else 8)
        if kind == "pooled-latents":  # the channels are the denoiser's
            channels = (getattr(model, "latent_channels", None) or model.unet.config.in_channels) if model is not None else 4
            return PooledLatents(int(arg) if arg else 8, channels)
        if kind == "multiscale-pooled":
            return MultiScalePooled(tuple(int(s) for s in arg.split(",")) if arg else (2, 4, 8))
        if kind == "denoiser-mid":
            if model is None:
                raise NoveltynetsError("the denoiser-mid embedder needs the diffusion model")
            t = int(arg.partition("=")[2]) if arg else 20
            return DenoiserFeatures(model.unet, model.model_id, t)
    except ValueError:
        raise NoveltynetsError(f"bad embedder spec {spec!r}") from None
    raise NoveltynetsError(f"unknown embedder {spec!r}; known: pooled-pixels[:N], pooled-latents[:N], multiscale-pooled[:a,b,c], "
                           "denoiser-mid[:t=T]")
