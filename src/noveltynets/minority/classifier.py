"""The minority classifier (Um & Ye 2024, §3.2): a noise-conditioned classifier p(l | x_t, t) over
the quantile classes of the minority score, as in ADM's classifier guidance: the encoder half
of a small U-Net (diffusers' down and mid blocks, timestep-embedded), mean-pooled, a linear head.
It is trained on the forward process: x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε at uniform t.

With ``num_conditions`` = C > 0 it is the paper's class-conditional form p(l̃ | x_t, t, c): an
embedding of the class c (C + 1 rows, the last one "no class", as the diffusion model's null
class) is added to the timestep embedding; during training the class is dropped to "no class"
with probability ``cond_dropout``, so the same classifier also serves unconditional sampling.
Saved as config.json + model.safetensors (+ train_log.jsonl), like the shipped models.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block
from safetensors.torch import load_file, save_file

from ..errors import NoveltynetsError
from ..progress import progress_bar
from .score import timestep_at

DEFAULT_CLASSIFIER_DIR = Path(__file__).resolve().parent.parent / "assets" / "minority-classifier"


class NoiseClassifier(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 1, sample_size: int = 32,
                 block_out_channels: tuple[int, ...] = (32, 64, 64), layers_per_block: int = 1, norm_num_groups: int = 8,
                 num_train_timesteps: int = 1000, num_conditions: int = 0):
        super().__init__()
        if num_classes < 2:
            raise NoveltynetsError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.config = dict(num_classes=num_classes, in_channels=in_channels, sample_size=sample_size,
                           block_out_channels=list(block_out_channels), layers_per_block=layers_per_block,
                           norm_num_groups=norm_num_groups, num_train_timesteps=num_train_timesteps,
                           num_conditions=num_conditions)
        ch = list(block_out_channels)
        temb = 4 * ch[0]
        self.time_proj = Timesteps(ch[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        self.class_embedding = nn.Embedding(num_conditions + 1, temb) if num_conditions else None
        self.conv_in = nn.Conv2d(in_channels, ch[0], 3, padding=1)
        self.down = nn.ModuleList([
            get_down_block("DownBlock2D", num_layers=layers_per_block, in_channels=a, out_channels=b, temb_channels=temb,
                           add_downsample=i < len(ch) - 1, resnet_eps=1e-5, resnet_act_fn="silu",
                           resnet_groups=norm_num_groups, downsample_padding=1, attention_head_dim=b)
            for i, (a, b) in enumerate(zip([ch[0]] + ch[:-1], ch))])
        self.mid = UNetMidBlock2D(ch[-1], temb, resnet_eps=1e-5, resnet_groups=norm_num_groups, attention_head_dim=ch[-1])
        self.head = nn.Sequential(nn.GroupNorm(norm_num_groups, ch[-1]), nn.SiLU())
        self.out = nn.Linear(ch[-1], num_classes)

    @property
    def num_classes(self) -> int:
        return self.config["num_classes"]

    @property
    def num_conditions(self) -> int:
        """C: classes c it is conditioned on (0: unconditional); index C means "no class"."""
        return self.config.get("num_conditions", 0)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, num_classes) of noisy images x_t (B, C, H, W) at timesteps t (B,), given classes
        ``cond`` (B,) if the classifier is conditional (None, or index ``num_conditions``: no class)."""
        t = torch.as_tensor(t, device=x.device).expand(len(x))
        temb = self.time_embedding(self.time_proj(t).to(x.dtype))
        if self.class_embedding is not None:
            null = torch.full((len(x),), self.num_conditions, device=x.device, dtype=torch.long)
            cond = null if cond is None else torch.as_tensor(cond, device=x.device).long().clamp(0, self.num_conditions)
            temb = temb + self.class_embedding(cond)
        h = self.conv_in(x)
        for block in self.down:
            h, _ = block(h, temb)
        h = self.head(self.mid(h, temb))
        return self.out(h.mean(dim=(2, 3)))

    def save(self, path: str | Path, log: list[dict] | None = None) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, path / "model.safetensors")
        (path / "config.json").write_text(json.dumps(self.config, indent=2))
        if log is not None:
            (path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))


def load_classifier(path: str | Path, device: str = "cpu") -> NoiseClassifier:
    path = Path(path)
    try:
        cfg = json.loads((path / "config.json").read_text())
        known = inspect.signature(NoiseClassifier.__init__).parameters
        model = NoiseClassifier(**{k: v for k, v in cfg.items() if k in known} | {"block_out_channels": tuple(cfg["block_out_channels"])})
        model.load_state_dict(load_file(path / "model.safetensors"))
        model.config = cfg  # with what it was trained for (model_id, scores, t), where recorded
    except NoveltynetsError:
        raise
    except Exception as e:
        raise NoveltynetsError(f"cannot load minority classifier from {path}: {type(e).__name__}: {e}") from e
    return model.eval().requires_grad_(False).to(device)


def train_classifier(images: torch.Tensor, labels: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int = 3000,
                     batch_size: int = 128, lr: float = 1e-3, seed: int = 0, device: str = "cpu", show_progress: bool = False,
                     held_out: float = 0.1, conditions: torch.Tensor | None = None, num_conditions: int | None = None,
                     cond_dropout: float = 0.1, **model_kw) -> tuple[NoiseClassifier, list[dict]]:
    """Train on (x_t, t) → label with the forward process (t uniform over the schedule), AdamW,
    cosine decay. ``held_out`` of the images (a fixed random share) are kept out for the log's
    accuracy, measured at three noise levels. With ``conditions`` (N,) (e.g. each image's digit)
    the classifier is class-conditional over ``num_conditions`` classes (default: max + 1), the
    class dropped with probability ``cond_dropout``. Returns the model (eval mode) and the log."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if images.ndim != 4 or len(images) != len(labels) or len(images) < 10:
        raise NoveltynetsError(f"need (N >= 10, C, H, W) images and N labels, got {tuple(images.shape)} and {tuple(labels.shape)}")
    if conditions is not None:
        conditions = torch.as_tensor(conditions, dtype=torch.long)
        num_conditions = num_conditions or int(conditions.max()) + 1
        if len(conditions) != len(labels) or int(conditions.min()) < 0 or int(conditions.max()) >= num_conditions:
            raise NoveltynetsError(f"need N conditions in [0, {num_conditions}), got {tuple(conditions.shape)}")
        model_kw["num_conditions"] = num_conditions
    n_classes = int(labels.max()) + 1
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    perm = torch.randperm(len(images), generator=g)
    n_test = int(len(images) * held_out)
    test, train = perm[:n_test], perm[n_test:]
    model = NoiseClassifier(n_classes, in_channels=images.shape[1], sample_size=images.shape[-1],
                            num_train_timesteps=len(alphas_cumprod), **model_kw).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    abar = alphas_cumprod.to(device)
    log, t0 = [], time.time()

    with progress_bar(steps, "minority classifier", enabled=show_progress) as advance:
        for step in range(1, steps + 1):
            idx = train[torch.randint(len(train), (batch_size,), generator=g)]
            x, y = images[idx].to(device), labels[idx].to(device)
            t = torch.randint(len(abar), (batch_size,), generator=g).to(device)
            cond = None
            if conditions is not None:
                drop = torch.rand(batch_size, generator=g) < cond_dropout
                cond = torch.where(drop, num_conditions, conditions[idx]).to(device)
            loss = F.cross_entropy(model(_noised(x, abar[t], g), t, cond), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss = float(loss.detach())
            advance(loss=loss)
            if step % max(1, steps // 10) == 0 or step == steps:
                row = {"step": step, "loss": loss, "seconds": round(time.time() - t0, 1)}
                if n_test:
                    row.update(held_out_accuracy(model, images[test], labels[test], abar, device, seed,
                                                 None if conditions is None else conditions[test]))
                log.append(row)
                model.train()
    return model.eval().requires_grad_(False), log


@torch.no_grad()
def held_out_accuracy(model: NoiseClassifier, images, labels, alphas_cumprod, device="cpu", seed=0, conditions=None) -> dict:
    """Accuracy at t = 0.1T, 0.5T, 0.9T (fixed noise), given ``conditions`` if any (and without, for
    a conditional classifier: ``acc_nocond_t0.5``)."""
    model.eval()
    g = torch.Generator().manual_seed(seed + 1)
    abar, out = alphas_cumprod.to(device), {}
    for frac in (0.1, 0.5, 0.9):
        t = torch.full((len(images),), timestep_at(frac, len(abar)), device=device)
        x = _noised(images.to(device), abar[t], g)
        out[f"acc_t{frac}"] = float((model(x, t, conditions).argmax(1).cpu() == labels).float().mean())
        if conditions is not None and frac == 0.5:
            out["acc_nocond_t0.5"] = float((model(x, t).argmax(1).cpu() == labels).float().mean())
    return out


def _noised(x0: torch.Tensor, abar_t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The forward process: x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε, ε from ``gen`` (one ᾱ_t per row)."""
    a = abar_t.view(-1, *[1] * (x0.dim() - 1))
    return a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=gen).to(x0.device)
