"""Does a clean-up pass (``SamplingConfig(clean=FRAC)``: re-noise to FRAC·T, denoise unguided) keep a late memory push's near-dup cut and
give back its precision? One continued memory learns runs 1..H of N (TERM_JSON, default weight 2 pushed to 0.95);
run H+1 is then made from copies of that memory with each FRAC (0: no clean-up), same seeds, same history.

    OMP_NUM_THREADS=2 python clean_check.py CLASS N STEPS H '[frac, ...]' [TERM_JSON] > logs/clean_check_cC.jsonl
"""
import copy
import json
import os
import sys
import time

import torch

from noveltynets.bench.runner import Judge
from noveltynets.embed import DEFAULT_EMBEDDER, embedder_from_spec
from noveltynets.guidance import NoveltyGuidance
from noveltynets.memory.store import new_memory
from noveltynets.models import load_model
from noveltynets.sampling import SamplingConfig, sample
from noveltynets.session import real_reference

klass, N, steps, H = (int(a) for a in sys.argv[1:5])
fracs = json.loads(sys.argv[5])
tc = {"memory_weight": 2, "memory_stop": 0.95, **(json.loads(sys.argv[6]) if len(sys.argv) > 6 else {})}
model = load_model()
emb = embedder_from_spec(DEFAULT_EMBEDDER, model)
judge = Judge(klass)
config = SamplingConfig(klass=klass, cfg=2.0, steps=steps, batch_size=16)
mem = new_memory(emb, model.model_id, trajectory=True, negatives="real")
mem.set_reference(real_reference(emb, klass))
history = []
for r in range(H):
    history.append(sample(model, range(r * N, (r + 1) * N), config, [NoveltyGuidance(**tc, memory=mem, embedder=emb)]).images)
hist = torch.cat(history)
seeds = range(H * N, (H + 1) * N)
for name, terms in ([] if os.environ.get("NOPLAIN") else [("plain", lambda: [])]) + [("cont", lambda: [NoveltyGuidance(**tc, memory=copy.deepcopy(mem), embedder=emb)])]:
    for frac in fracs:
        t0 = time.time()
        run = sample(model, seeds, config.replace(clean=frac), terms())
        m = judge(run.images, hist)
        print(json.dumps({"class": klass, "run": H + 1, "history": len(hist), "method": name, "clean": frac, **tc,
                          "seconds": round(time.time() - t0, 1),
                          **{k: round(m[k], 4) for k in ("near_dup", "novelty", "precision", "adherence", "recall")}}), flush=True)
