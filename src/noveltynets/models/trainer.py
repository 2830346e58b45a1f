"""Trains the default model: eps-prediction DDPM loss, classifier-free condition dropout, EMA.

Resumable: ``OUT/checkpoint.pt`` (model, EMA, optimiser, step, RNG) is written atomically
every ``checkpoint_every`` steps; rerunning the same command continues from it. The
finished EMA weights are written in diffusers format by :func:`save_model`, with one JSON
line per logged step in ``OUT/train_log.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel

from ..data import load_split
from ..progress import progress_bar
from .unet import NULL_CLASS, build_scheduler, build_unet, save_model


@dataclass
class TrainConfig:
    steps: int = 20_000
    batch_size: int = 256
    lr: float = 1e-3
    warmup: int = 500
    ema_decay: float = 0.9995
    p_uncond: float = 0.1  # share of the batch trained as NULL_CLASS, for classifier-free guidance
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int = 2_000


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_model(out: str | Path, cfg: TrainConfig = TrainConfig(), device: str = "cpu", show_progress: bool = True) -> Path:
    """Train (or resume training) the default UNet on the MNIST-5k train split; returns ``out``."""
    dev = torch.device(device)
    torch.manual_seed(cfg.seed)
    labels = load_split("train").labels.to(dev)

    def draw_labels(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:  # some classes dropped to NULL_CLASS
        y = labels[idx].clone()
        y[torch.rand(len(idx), device=dev, generator=gen) < cfg.p_uncond] = NULL_CLASS
        return y

    unet = train_loop(out, build_unet().to(dev), cfg, dev, draw_labels, {"device": device}, show_progress)
    save_model(unet.cpu(), out)
    return Path(out)


def train_loop(out: str | Path, unet, cfg: TrainConfig, dev: torch.device, draw_labels, record: dict, show_progress: bool = True,
               name: str = "train-model", lr_scales: dict | None = None):
    """The eps-prediction training loop on the MNIST-5k train split, resumable from ``OUT/checkpoint.pt``; returns ``unet``
    with the EMA weights. ``draw_labels(idx, generator)`` gives the class labels of a batch of image indices;
    ``record`` goes into ``train_config.json`` beside the config; ``lr_scales`` maps a parameter-name prefix to a factor
    of the learning rate (e.g. a new embedding learnt faster than the weights it is fine-tuned with)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = load_split("train").images.to(dev)
    unet.train().requires_grad_(True)
    scheduler = build_scheduler()
    alphas_cumprod = scheduler.alphas_cumprod.to(dev)
    groups: dict[float, list] = {}
    for pname, p in unet.named_parameters():
        scale = next((f for prefix, f in (lr_scales or {}).items() if pname.startswith(prefix)), 1.0)
        groups.setdefault(scale, []).append(p)
    opt = torch.optim.AdamW([{"params": ps, "lr": cfg.lr * s} for s, ps in groups.items()], lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=3 / 4)
    gen = torch.Generator(dev).manual_seed(cfg.seed)
    step = 0

    ckpt_path, log_path = out / "checkpoint.pt", out / "train_log.jsonl"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=dev, weights_only=False)
        unet.load_state_dict(ckpt["unet"]); opt.load_state_dict(ckpt["opt"]); sched.load_state_dict(ckpt["sched"])
        ema.load_state_dict(ckpt["ema"]); ema.to(dev); gen.set_state(ckpt["gen"].cpu() if dev.type == "cpu" else ckpt["gen"])
        step = ckpt["step"]
    (out / "train_config.json").write_text(json.dumps({**asdict(cfg), **record}, indent=2))

    t0, log = time.time(), open(log_path, "a")
    with progress_bar(cfg.steps, name, enabled=show_progress) as advance:
        advance(step)
        while step < cfg.steps:
            # 1. a batch of clean images, their labels, timesteps, noise
            idx = torch.randint(len(images), (cfg.batch_size,), device=dev, generator=gen)
            x0, y = images[idx], draw_labels(idx, gen)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), device=dev, generator=gen)
            noise = torch.randn(x0.shape, device=dev, generator=gen)
            a = alphas_cumprod[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            # 2. eps-prediction loss, bf16 autocast on GPU
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                pred = unet(xt, t, class_labels=y).sample
            loss = F.mse_loss(pred.float(), noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step(); sched.step(); ema.step(unet.parameters())
            step += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                rec = {"step": step, "loss": round(loss.item(), 5), "lr": sched.get_last_lr()[0], "elapsed_s": round(time.time() - t0, 1)}
                log.write(json.dumps(rec) + "\n"); log.flush()
                advance(cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every, loss=rec["loss"])
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                _atomic_torch_save({"unet": unet.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                                    "ema": ema.state_dict(), "gen": gen.get_state(), "step": step}, ckpt_path)
    log.close()
    ema.copy_to(unet.parameters())
    return unet.eval().requires_grad_(False)
