"""The shipped NoveltyGuidance + memory (defaults unless given): run 1, its continuation, and the continuation with a
memory of as many unrelated samples instead of run 1 (UNREL=1), judged against run 1."""
import json, os, sys, torch
from noveltynets.models import load_model
from noveltynets.bench.runner import Judge
from noveltynets.sampling import sample
from noveltynets.guidance import NoveltyGuidance
from noveltynets.memory import embedder_from_spec
from noveltynets.embed.embedders import DEFAULT_EMBEDDER
from noveltynets.memory.setup import POOL_SEED_BASE, pool_run
from noveltynets.memory.store import new_memory

klass = int(sys.argv[1]); tc = json.loads(sys.argv[2]); mc = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
model = load_model(); judge = Judge(klass); emb = embedder_from_spec(DEFAULT_EMBEDDER)
steps = NoveltyGuidance().observed_steps(50); K = len(steps)
ref = pool_run(model, emb, range(POOL_SEED_BASE, POOL_SEED_BASE + 128), klass, 2.0, 50, "ddim", steps)
def mem():
    m = new_memory(emb, model.model_id, "cpu", trajectory=True, **mc); m.set_reference(ref, n_final=128); return m
def show(name, run, hist=None):
    m = judge(run.images, hist)
    print(json.dumps({"class": klass, "run": name, "tc": tc, "mc": mc, **{k: round(m[k], 4) for k in ("near_dup", "precision", "recall", "adherence", "vendi")}}), flush=True)
t = NoveltyGuidance(**tc, memory=mem(), embedder=emb)
r1 = sample(model, list(range(256)), klass, 2.0, 50, guidance=[t], batch_size=16); show("novelty", r1)
r2 = sample(model, list(range(256, 512)), klass, 2.0, 50, guidance=[t], batch_size=16); show("novelty-continued", r2, r1.images)
if os.environ.get("UNREL", "1") == "1":
    other = pool_run(model, emb, range(2 * 10**12, 2 * 10**12 + 256), klass, 2.0, 50, "ddim", steps).view(1 + K, 256, -1)
    m = mem()
    for c in other.split(16, dim=1):
        m.observe(c[0], trajectory=c[1:].flatten(0, 1))
    u = NoveltyGuidance(**tc, memory=m, embedder=emb)
    r3 = sample(model, list(range(256, 512)), klass, 2.0, 50, guidance=[u], batch_size=16); show("unrelated-continued", r3, r1.images)
