"""The evaluation embedder: a small CNN digit classifier used by metrics, never by guidance.

``features(images)`` gives (N, 128) penultimate-layer features; ``predict(images)`` the
digit. Trained on the MNIST-5k train split with random ±2-pixel shifts; shipped in
``assets/eval-embedder`` (config.json + model.safetensors + train_log.jsonl).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..data import load_split
from ..errors import NoveltynetsError
from ..progress import progress_bar

DEFAULT_EMBEDDER_DIR = Path(__file__).resolve().parent.parent / "assets" / "eval-embedder"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))


class EvalEmbedder(nn.Module):
    """CNN on (N, 1, 32, 32) images in [-1, 1]: three conv blocks, global pooling, a linear head."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), num_classes: int = 10):
        super().__init__()
        self.config = {"widths": list(widths), "num_classes": num_classes}
        chans = (1, *widths)
        self.body = nn.Sequential(*[_block(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(widths[-1], num_classes))

    @property
    def dim(self) -> int:
        return self.config["widths"][-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images).mean(dim=(2, 3)))

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """(N, D) features, computed in eval mode in batches."""
        dev = next(self.parameters()).device
        return torch.cat([self.body(b.to(dev)).mean(dim=(2, 3)).cpu() for b in images.split(batch_size)]) if len(images) else torch.zeros(0, self.dim)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        dev = next(self.parameters()).device
        return torch.cat([self(b.to(dev)).argmax(1).cpu() for b in images.split(batch_size)]) if len(images) else torch.zeros(0, dtype=torch.long)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, path / "model.safetensors")
        (path / "config.json").write_text(json.dumps(self.config, indent=2))


def load_eval_embedder(path: str | Path | None = None, device: str = "cpu") -> EvalEmbedder:
    path = Path(path) if path is not None else DEFAULT_EMBEDDER_DIR
    try:
        cfg = json.loads((path / "config.json").read_text())
        model = EvalEmbedder(tuple(cfg["widths"]), cfg["num_classes"])
        model.load_state_dict(load_file(path / "model.safetensors"))
    except Exception as e:
        raise NoveltynetsError(f"cannot load evaluation embedder from {path}: {type(e).__name__}: {e}") from e
    return model.eval().requires_grad_(False).to(device)


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (pad with background, crop)."""
    n, _, h, w = x.shape
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, n), generator=gen, device=gen.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (n, w)
    return padded[torch.arange(n, device=x.device)[:, None, None], 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


def train_embedder(out: str | Path, epochs: int = 30, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                   device: str = "cpu", show_progress: bool = True) -> dict:
    """Train on the train split; returns {"heldout_accuracy": ...} and writes the model to ``out``."""
    dev = torch.device(device)
    torch.manual_seed(seed)
    train, held = load_split("train"), load_split("heldout")
    x, y = train.images.to(dev), train.labels.to(dev)
    model = EvalEmbedder().to(dev)
    steps_per_epoch = len(x) // batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    gen = torch.Generator(dev).manual_seed(seed)
    log, t0 = [], time.time()
    with progress_bar(epochs, "train-embedder", enabled=show_progress) as advance:
        for epoch in range(epochs):
            model.train()
            perm = torch.randperm(len(x), generator=gen, device=dev)
            for i in range(steps_per_epoch):
                idx = perm[i * batch_size:(i + 1) * batch_size]
                loss = F.cross_entropy(model(_shift(x[idx], gen)), y[idx], label_smoothing=0.05)
                opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); sched.step()
            model.eval()
            acc = (model.predict(held.images) == held.labels).float().mean().item()
            log.append({"epoch": epoch + 1, "loss": round(loss.item(), 4), "heldout_accuracy": round(acc, 4), "elapsed_s": round(time.time() - t0, 1)})
            advance(loss=loss.item(), acc=acc)
    model.cpu().save(out)
    (Path(out) / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return {"heldout_accuracy": log[-1]["heldout_accuracy"]}
