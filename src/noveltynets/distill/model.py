"""The rank embedding of a distilled model, and how it is stored as a plain diffusers ``UNet2DModel``.

While fine-tuning, the UNet's class embedding is a :class:`RankedClassEmbedding`: the class's vector
(from the shipped model) plus a learnt vector of the rank bin, rank 0 ("no rank") adding nothing.
It reads one integer label per sample, ``class + stride·rank`` (stride = the number of class
embeddings, 11: digits 0–9 and the null class), so the diffusers UNet runs unchanged.

Saved, the sum is written out as one ordinary class-embedding table of ``stride·(bins + 1)`` rows
(row ``class + stride·rank`` = class vector + rank vector): the folder is a diffusers
``UNet2DModel`` any diffusers user can load, and ``ranks.json`` beside it says how to read its labels.
Labels ``0..stride − 1`` (rank 0) are the plain model's classes, the null class included.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import NoveltynetsError
from ..models.unet import RANKS_FILE, UNET_CONFIG, build_unet, read_ranks, save_model

__all__ = ["RANKS_FILE", "RankedClassEmbedding", "add_rank_embedding", "read_ranks", "save_ranked"]


class RankedClassEmbedding(nn.Module):
    """``label = class + stride·rank`` → class vector + rank vector (rank 0: no rank, a fixed zero)."""

    def __init__(self, class_table: torch.Tensor, bins: int):
        super().__init__()
        self.stride, self.bins = class_table.shape[0], bins
        self.classes = nn.Embedding.from_pretrained(class_table.detach().clone(), freeze=False)
        self.ranks = nn.Embedding(bins, class_table.shape[1])
        nn.init.zeros_(self.ranks.weight)  # at the start every rank is the plain model

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        c, r = labels % self.stride, labels // self.stride
        rank = self.ranks(r.clamp_min(1) - 1) * (r > 0).unsqueeze(-1).to(self.ranks.weight.dtype)
        return self.classes(c) + rank

    def table(self) -> torch.Tensor:
        """(stride·(bins + 1), dim): the embedding of every label, row ``class + stride·rank``."""
        labels = torch.arange(self.stride * (self.bins + 1), device=self.classes.weight.device)
        return self(labels)


def add_rank_embedding(unet, bins: int, stride: int | None = None) -> RankedClassEmbedding:
    """Give a class-conditional UNet (in place) a rank embedding of ``bins`` bins; returns it. A UNet that already has
    one, stored as a table of ``stride·(bins + 1)`` rows (a distilled model), is factored back into its class and rank
    vectors, so fine-tuning goes on from where it was."""
    if getattr(unet, "class_embedding", None) is None or not isinstance(unet.class_embedding, nn.Embedding):
        raise NoveltynetsError("distillation needs a class-conditional UNet (an nn.Embedding class embedding)")
    table = unet.class_embedding.weight.detach().float()
    if stride is None:
        emb = RankedClassEmbedding(table, bins)
    else:
        rows = table.view(bins + 1, stride, -1)  # row class + stride·rank
        emb = RankedClassEmbedding(rows[0], bins)
        with torch.no_grad():
            emb.ranks.weight.copy_((rows[1:] - rows[:1]).mean(1))  # the same vector for every class, up to rounding
    unet.class_embedding = emb.to(unet.class_embedding.weight.device)
    return emb


def save_ranked(unet, path: str | Path, info: dict, dtype: torch.dtype = torch.float16) -> None:
    """Write a UNet with a :class:`RankedClassEmbedding` as a plain diffusers model (see the module doc) + ``ranks.json``."""
    path = Path(path)
    emb = unet.class_embedding
    plain = build_unet(**{**{k: unet.config[k] for k in UNET_CONFIG}, "num_class_embeds": emb.stride * (emb.bins + 1)})
    state = {k: v for k, v in unet.state_dict().items() if not k.startswith("class_embedding.")}
    with torch.no_grad():
        state["class_embedding.weight"] = emb.table().detach().cpu()
    plain.load_state_dict(state)
    save_model(plain, path, dtype)
    (path / RANKS_FILE).write_text(json.dumps({"bins": emb.bins, "stride": emb.stride, **info}, indent=2))
