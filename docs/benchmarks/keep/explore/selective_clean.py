"""Does a deeper clean-up, given only to the finished samples the model itself reconstructs worst, give back the
precision a continued memory's late push costs, and at what novelty? One continued memory (today's default: push to
0.95, clean-up 0.05) learns runs 1..H of N; runs H+1..H+K are made by it (it goes on learning) and, on the same seeds,
by a fresh memory; each run's finished samples are then scored by the model's one-shot reconstruction at t
(minority score, L2, 2 draws) and the top share q of them re-cleaned from depth D (``sampling.loop.clean_up``), or
a random share q (the score's control). Every variant is judged against the same history.

    OMP_NUM_THREADS=2 python selective_clean.py CLASS N STEPS H K > logs/selective_clean_cC.jsonl
"""
import copy
import json
import sys

import torch

from noveltynets.guidance import NoveltyGuidance
from noveltynets.minority.score import minority_score
from noveltynets.sampling import sample
from noveltynets.sampling.guided import CFGDenoiser
from noveltynets.sampling.loop import clean_up, make_scheduler

from keep_explore import one_memory

klass, N, steps, H, K = (int(a) for a in sys.argv[1:6])
model, emb, judge, config, mem = one_memory(klass, steps)
fresh = copy.deepcopy(mem)
history = []
for r in range(H):
    history.append(sample(model, range(r * N, (r + 1) * N), config, [NoveltyGuidance(memory=mem, embedder=emb)]).images)
sched = make_scheduler(config.scheduler, model.scheduler_config, steps)
denoiser = CFGDenoiser(model.unet, config.cfg_used)


def deeper(images, seeds, idx, frac):
    """Re-clean ``images[idx]`` from ``frac``·T along this run's timesteps (the guided model's denoiser, CFG as sampled)."""
    out = images.clone()
    if len(idx):
        out[idx] = clean_up(denoiser, images[idx], [seeds[i] for i in idx.tolist()], {"classes": torch.full((len(idx),), klass)},
                            sched.alphas_cumprod, sched.timesteps, frac, int(sched.config.num_train_timesteps))
    return out


for r in range(H, H + K):
    seeds = list(range(r * N, (r + 1) * N))
    hist = torch.cat(history)
    runs = {"cont": sample(model, seeds, config, [NoveltyGuidance(memory=mem, embedder=emb)]).images,
            "fresh": sample(model, seeds, config, [NoveltyGuidance(memory=copy.deepcopy(fresh), embedder=emb)]).images}
    for name, x in runs.items():
        score = minority_score(model, x, torch.full((N,), klass), t=0.1, draws=2)
        order = torch.argsort(score, descending=True)
        rand = torch.randperm(N, generator=torch.Generator().manual_seed(r))
        for frac in (0.1, 0.2):
            for q in (0.0, 0.1, 0.2, 0.3, 1.0):
                for pick, idx in (("score", order[:round(q * N)]), ("random", rand[:round(q * N)])):
                    if pick == "random" and q in (0.0, 1.0):
                        continue
                    if q == 0.0 and frac != 0.1:
                        continue
                    m = judge(deeper(x, seeds, idx, frac), hist)
                    print(json.dumps({"class": klass, "run": r + 1, "history": len(hist), "method": name, "depth": frac, "share": q,
                                      "pick": pick, **{k: round(m[k], 4) for k in ("near_dup", "novelty", "precision", "adherence")}}),
                          flush=True)
    history.append(runs["cont"])
