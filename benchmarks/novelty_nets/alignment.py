"""``alignment``: which guidance embedder sees the evaluation's near-duplicates as near?"""

from __future__ import annotations

import numpy as np
import torch

from noveltynets.bench.runner import Judge
from noveltynets.embed import DenoiserFeatures, MultiScalePooled, PooledPixels
from noveltynets.models import load_model
from noveltynets.sampling import sample

from .common import emit, roc_auc, sampling_config


def run(args) -> dict:
    """Over all pairs of ``--n`` samples: ROC-AUC of −distance in the embedding (one scale for all dims, as the
    memory sees it, so the ranking is that of raw distances) for "the pair is a near-dup by the evaluation embedder"."""
    model, klass = load_model(device=args.device), args.classes[0]
    images = sample(model, range(args.n), sampling_config(args, klass)).images.to(args.device)
    judge = Judge(klass, args.device)
    f = judge.ev.features(images).numpy()
    iu = np.triu_indices(len(f), 1)
    near = np.linalg.norm(f[:, None] - f[None], axis=-1)[iu] < judge.tau
    embedders = {f"pooled-pixels:{s}": PooledPixels(s) for s in (2, 4, 8, 16)}
    embedders["multiscale-pooled:2,4,8"] = MultiScalePooled()
    embedders.update({f"denoiser-mid:t={t}": DenoiserFeatures(model.unet, model.model_id, t) for t in (0, 20, 100, 300)})
    rows = []
    with torch.no_grad():
        for name, e in embedders.items():
            z = e(images).float()
            d = torch.cdist(z, z).cpu().numpy()[iu]
            auc = roc_auc(-d[near], -d[~near]) if 0 < near.sum() < len(near) else None  # None: no near-dup pair (or only)
            rows.append(emit(args, {"embedder": name, "auc": auc, "near_dup_pairs": int(near.sum())}))
    return {"alignment": rows}
