"""The default model: a small class-conditional diffusers UNet2DModel and its scheduler.

Class ids 0–9 are digits; ``NULL_CLASS`` (10) means "no class" and is what classifier-free
guidance uses for the unconditional pass. The model is stored in diffusers format:
``DIR/unet`` (config.json + fp16 safetensors) and ``DIR/scheduler`` (scheduler_config.json).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.utils import logging as diffusers_logging

from ..errors import NoveltynetsError

NULL_CLASS = 10
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "mnist5k-unet"
RANKS_FILE = "ranks.json"  # a distilled model's rank index: {"bins": K, "stride": S}, label = class + S·rank

UNET_CONFIG = dict(
    sample_size=32,
    in_channels=1,
    out_channels=1,
    num_class_embeds=NULL_CLASS + 1,
    block_out_channels=(32, 64, 96, 128),
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    norm_num_groups=8,
    attention_head_dim=32,
)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)


@contextmanager
def _quiet_diffusers():
    """diffusers warns about fp16 casts and a missing ``accelerate``; neither matters here."""
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def build_unet(**overrides) -> UNet2DModel:
    return UNet2DModel(**{**UNET_CONFIG, **overrides})


def build_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULER_CONFIG)


@dataclass
class DiffusionModel:
    """A loaded eps-prediction model: the UNet, its training scheduler's config and an id."""

    unet: UNet2DModel
    scheduler_config: dict
    model_id: str
    path: Path
    num_ranks: int = 0  # rank bins of a distilled model (noveltynets.distill); 0: none
    rank_stride: int = 0  # a distilled model's label is class + rank_stride·rank

    @property
    def num_classes(self) -> int:
        embeds = self.rank_stride if self.num_ranks else int(self.unet.config.num_class_embeds or 0)
        return embeds - 1  # the last id is NULL_CLASS

    @property
    def trained_here(self) -> bool:
        """Whether noveltynets trained it (``train-model`` writes ``train_config.json``): then its training set is the
        shipped MNIST-5k train split, whose images are at hand (e.g. as a novelty memory's reference)."""
        return (Path(self.path) / "train_config.json").is_file()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c = self.unet.config
        return (c.in_channels, c.sample_size, c.sample_size)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ_t of the training schedule, indexed by timestep."""
        return DDPMScheduler.from_config(self.scheduler_config).alphas_cumprod

    def to(self, device: str | torch.device) -> "DiffusionModel":
        self.unet.to(device)
        return self


def save_model(unet: UNet2DModel, path: str | Path, dtype: torch.dtype = torch.float16) -> None:
    """Write ``path/unet`` (config.json + safetensors in ``dtype``) and ``path/scheduler``."""
    path = Path(path)
    copy = build_unet(**{k: unet.config[k] for k in UNET_CONFIG})
    copy.load_state_dict(unet.state_dict())
    with _quiet_diffusers():
        copy.to(dtype).save_pretrained(path / "unet", safe_serialization=True)
    build_scheduler().save_pretrained(path / "scheduler")


def model_id(path: str | Path) -> str:
    """``<folder name>@<first 12 hex digits of the weights' sha256>``: names a model exactly."""
    path = Path(path)
    weights = path / "unet" / "diffusion_pytorch_model.safetensors"
    return f"{path.name}@{hashlib.sha256(weights.read_bytes()).hexdigest()[:12]}"


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> DiffusionModel:
    """Load a diffusers-format model folder (default: the shipped MNIST-5k model) in float32."""
    path = Path(path) if path is not None else DEFAULT_MODEL_DIR
    if not (path / "unet" / "config.json").is_file():
        raise NoveltynetsError(f"no model at {path}: expected {path / 'unet' / 'config.json'}")
    for config in (path / "unet" / "config.json", path / "scheduler" / "scheduler_config.json"):
        try:  # checked here, so that diffusers never goes looking elsewhere (e.g. the hub) for a config it cannot read
            if not isinstance(json.loads(config.read_text()), dict):
                raise ValueError("not a JSON object")
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise NoveltynetsError(f"cannot load model from {path}: {config.relative_to(path)} is not a readable JSON config "
                                   f"({type(e).__name__})") from None
    try:
        unet = UNet2DModel.from_pretrained(path / "unet", torch_dtype=torch.float32, local_files_only=True, low_cpu_mem_usage=False)
        scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
        mid = model_id(path)
    except Exception as e:  # corrupt or truncated files surface as many exception types
        raise NoveltynetsError(f"cannot load model from {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if unet.config.num_class_embeds is None:
        raise NoveltynetsError(f"model at {path} is not class-conditional (num_class_embeds is unset)")
    bins, stride = read_ranks(path, unet.config.num_class_embeds)
    unet.eval().requires_grad_(False)
    return DiffusionModel(unet.to(device), scheduler_config, mid, path, bins, stride if bins else 0)


def read_ranks(path: str | Path, num_class_embeds: int) -> tuple[int, int]:
    """(bins, stride) of a model folder's rank index (``ranks.json``, written by :mod:`noveltynets.distill`):
    (0, num_class_embeds) without one; refused if it does not fit the UNet's class embeddings."""
    file = Path(path) / RANKS_FILE
    if not file.is_file():
        return 0, num_class_embeds
    try:
        info = json.loads(file.read_text())
        bins, stride = int(info["bins"]), int(info["stride"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise NoveltynetsError(f"cannot load model from {path}: {RANKS_FILE} is not readable ({type(e).__name__})") from None
    if bins < 1 or stride < 2 or stride * (bins + 1) != num_class_embeds:
        raise NoveltynetsError(f"cannot load model from {path}: {RANKS_FILE} says {bins} rank bins of {stride} classes, "
                               f"but the UNet has {num_class_embeds} class embeddings")
    return bins, stride
