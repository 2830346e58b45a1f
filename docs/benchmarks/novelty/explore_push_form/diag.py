"""Diagnostics: guide specs (as --guide, '+'-joined), with optional '|emb=NAME' embedder overrides for terms with _embed."""
import json, math, sys, time, torch, torch.nn.functional as F
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from noveltynets.models import load_model
from noveltynets.bench.runner import Judge
from noveltynets.sampling import sample
from noveltynets.guidance import parse_guide
from noveltynets.embed.embedders import CallableEmbedder

def gauss_pool(size, sigma):
    r = torch.arange(32).float() + 0.5
    c = (torch.arange(size).float() + 0.5) * 32 / size
    w = torch.exp(-((r[None] - c[:, None]) ** 2) / (2 * sigma ** 2)); w = w / w.sum(1, keepdim=True)  # (size, 32)
    return CallableEmbedder(lambda x: torch.einsum("ph,bchw,qw->bpq", w, x.clamp(-1, 1), w).flatten(1), f"gauss{size}", size * size)

EMB = {"gauss8": lambda: gauss_pool(8, 2.0), "gauss8w": lambda: gauss_pool(8, 3.0), "gauss16": lambda: gauss_pool(16, 1.2)}

klass = int(sys.argv[1]); n = int(sys.argv[2]); model = load_model(); judge = Judge(klass)
for spec in sys.argv[3:]:
    terms = []
    for part in spec.split("+"):
        g, _, emb = part.partition("|emb=")
        if g.startswith("hparticle"):
            from hparticle_term import HParticle
            kv = dict(a.split("=") for a in g.partition(":")[2].split(",") if a)
            t = HParticle(**{k: float(v) for k, v in kv.items()})
        else:
            t = parse_guide(g)
        if emb:
            t._embed = EMB[emb]()
        terms.append(t)
    t0 = time.time(); run = sample(model, list(range(n)), klass, 2.0, 50, guidance=terms, batch_size=16); m = judge(run.images)
    print(json.dumps({"class": klass, "spec": spec, "s": round(time.time() - t0), **{k: round(m[k], 4) for k in ("near_dup", "precision", "recall", "adherence", "vendi")}}), flush=True)
