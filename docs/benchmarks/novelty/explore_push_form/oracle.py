"""Diagnostic only (never shipped): guidance in the evaluation embedder's own space, as an upper bound on alignment."""
import json, sys, time, torch
from noveltynets.models import load_model
from noveltynets.models.embedder import load_eval_embedder
from noveltynets.bench.runner import Judge
from noveltynets.sampling import sample
from noveltynets.guidance.particle import ParticleGuidance
from noveltynets.guidance.repel import RepelGuidance
from noveltynets.embed.embedders import CallableEmbedder
from noveltynets.embed.history import KnnHistory

klass = int(sys.argv[1]); specs = sys.argv[2:]
model = load_model(); ev = load_eval_embedder()
emb = CallableEmbedder(lambda x: ev.body(x.clamp(-1, 1)).mean(dim=(2, 3)), "eval", 128)
judge = Judge(klass, evaluator=ev)
for spec in specs:
    kind, _, arg = spec.partition(":")
    kv = dict(a.split("=") for a in arg.split(",") if a)
    if kind == "plain":
        terms = []
    elif kind == "particle":
        t = ParticleGuidance(scale=float(kv.get("scale", 1)), stop=float(kv.get("stop", 0.95))); t._embed = emb; terms = [t]
    elif kind == "repel":
        t = RepelGuidance(scale=1.0, radius=float(kv["radius"]), stop=float(kv.get("stop", 1.0)))
        t._embed = emb; t._history = KnnHistory(128); terms = [t]
    t0 = time.time()
    run = sample(model, list(range(256)), klass, 2.0, 50, guidance=terms, batch_size=16)
    m = judge(run.images)
    print(json.dumps({"class": klass, "spec": spec, "s": round(time.time() - t0), **{k: round(m[k], 4) for k in ("near_dup", "precision", "recall", "adherence", "vendi")}}), flush=True)
