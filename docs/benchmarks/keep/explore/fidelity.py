"""How close the net's proximity field comes to the exact one, per training setting, offline (no sampling).

Replays the update sequence a keep run gave a continued memory (its replay rows, in the order they
were observed: per batch 16 finished samples, then their x̂0 at the observed steps) into a fresh
net of each setting, with the same reference and projection, and after runs 1..R_TRAIN measures on
queries near history (the next run's finished samples, and history rows moved 0.3–1.5 ℓ):
AUC of the logit for "exactly within 1 ℓ of history", the cosine of the push direction with the
exact "away from the nearest row", and the update time.

    OMP_NUM_THREADS=1 python fidelity.py STORE NAME R_TRAIN '{"steps_per_observe": 40}' ...
"""

import json
import sys
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from noveltynets.memory.novelty import MemoryConfig, NoveltyMemory
from noveltynets.memory.store import MemoryStore

BATCH, PER_RUN = 16, 128


def main():
    store, name, r_train = MemoryStore(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    done, _ = store.load(name)
    rows_per_batch = len(done.replay) // (done.n_seen // BATCH)
    n_train = r_train * PER_RUN // BATCH
    seq = done.replay.split(rows_per_batch)
    for spec in sys.argv[4:] or ["{}"]:
        cfg = MemoryConfig.from_dict({**json.loads(json.dumps(done.config.__dict__)), **json.loads(spec)})
        mem = NoveltyMemory(cfg)
        for k in ("negatives", "n_ref_final", "mean", "std", "centre", "basis"):
            setattr(mem, k, getattr(done, k))
        t0 = time.perf_counter()
        for rows in seq[:n_train]:
            mem.replay = torch.cat([mem.replay, rows])
            mem.replay_final = torch.cat([mem.replay_final, rows[:BATCH]])
            mem.n_seen += BATCH
            mem.n_offered += len(rows)
            mem.rehearse(None, rows, BATCH)
        update_ms = 1000 * (time.perf_counter() - t0) / n_train
        hist = torch.cat(seq[:n_train])
        ell = mem.neighbour_distance()
        g = torch.Generator().manual_seed(1)
        nxt = torch.cat([r[:BATCH] for r in seq[n_train:n_train + PER_RUN // BATCH]])
        base = hist[torch.randint(len(hist), (512,), generator=g)]
        step = torch.randn(base.shape, generator=g)
        step = step / step.norm(dim=1, keepdim=True) * ell * (0.3 + 1.2 * torch.rand(len(base), 1, generator=g))
        q = torch.cat([nxt, base + step])
        d, idx = torch.cdist(q, hist).min(1)
        z = q.clone().requires_grad_(True)
        logit = mem._smooth_logit(z)
        grad = torch.autograd.grad(logit.sum(), z)[0]
        away = (q - hist[idx]) / d[:, None].clamp_min(1e-9)
        cos = torch.nn.functional.cosine_similarity(-grad, away, dim=1)
        near = (d / ell < 1.0).numpy()
        lg = logit.detach().numpy()
        close = (d / ell < 1.5)
        out = {"setting": spec, "update_ms": round(update_ms), "auc_within_1l": round(roc_auc_score(near, lg), 3),
               "auc_next_run": round(roc_auc_score(near[:len(nxt)], lg[:len(nxt)]), 3) if 0 < near[:len(nxt)].sum() < len(nxt) else None,
               "cos_away_near": round(float(cos[close].mean()), 3), "n_near": int(near.sum()),
               "p_err": round(float((torch.sigmoid(logit.detach()) - torch.exp(-(d / ell) ** 2 / (2 * cfg.proximity_radius ** 2))).abs().mean()), 3)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
