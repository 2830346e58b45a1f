"""Does a push through the denoiser (grad_mode="exact": ∇_{x_t} = (∂x̂0/∂x_t)ᵀ∇_{x̂0}, which near the data
projects the push onto the directions the model can realise) keep a late memory push's precision? One continued
memory learns runs 1..H of N (x0 mode, TERM_JSON); run H+1 is then made from copies of that memory in each
mode and weight, on the same seeds, and judged against the same history. A variant [mode, weight, clean] also gets the
sampler's clean-up (``SamplingConfig(clean=...)``); weight null: plain sampling (no memory), for reference.

    OMP_NUM_THREADS=2 python exact_check.py CLASS N STEPS H '[[mode, weight(, clean)], ...]' [TERM_JSON] > logs/exact_check_cC.jsonl
"""
import copy
import json
import sys
import time

import torch

from noveltynets.guidance import NoveltyGuidance
from noveltynets.sampling import sample

from keep_explore import one_memory

klass, N, steps, H = (int(a) for a in sys.argv[1:5])
variants = json.loads(sys.argv[5])
tc = {"memory_stop": 0.95, **(json.loads(sys.argv[6]) if len(sys.argv) > 6 else {})}
model, emb, judge, config, mem = one_memory(klass, steps)
history = []
for r in range(H):
    run = sample(model, range(r * N, (r + 1) * N), config, [NoveltyGuidance(**tc, memory=mem, embedder=emb)])
    history.append(run.images)
hist = torch.cat(history)
for mode, weight, *clean in variants:
    t0 = time.time()
    terms = [] if weight is None else [NoveltyGuidance(**{**tc, "memory_weight": weight}, memory=copy.deepcopy(mem), embedder=emb)]
    run = sample(model, range(H * N, (H + 1) * N), config.replace(grad_mode=mode, clean=clean[0] if clean else 0.0), terms)
    m = judge(run.images, hist)
    print(json.dumps({"class": klass, "run": H + 1, "history": len(hist), "method": "plain" if weight is None else "cont",
                      "mode": mode, **tc, "memory_weight": weight, "clean": clean[0] if clean else 0.0,
                      "seconds": round(time.time() - t0, 1),
                      **{k: round(m[k], 4) for k in ("near_dup", "novelty", "precision", "adherence", "recall")}}), flush=True)
