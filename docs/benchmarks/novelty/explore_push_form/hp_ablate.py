"""Oracle ablations: exact history particles with (a) the real history, (b) a frozen unrelated history, (c) continuation."""
import json, sys, time, torch
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from hparticle_term import HParticle
from noveltynets.models import load_model
from noveltynets.bench.runner import Judge
from noveltynets.sampling import sample

klass, hw, scale = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
model = load_model(); judge = Judge(klass)
def show(tag, run, history=None):
    m = judge(run.images, history)
    print(json.dumps({"class": klass, "tag": tag, "hw": hw, "scale": scale, **{k: round(m[k], 4) for k in ("near_dup", "precision", "recall", "adherence", "vendi")}}), flush=True)
t = HParticle(scale=scale, hist_weight=hw, size=16)
r1 = sample(model, list(range(256)), klass, 2.0, 50, guidance=[t], batch_size=16); show("real", r1)
r2 = sample(model, list(range(256, 512)), klass, 2.0, 50, guidance=[t], batch_size=16); show("continued", r2, r1.images)
u = HParticle(scale=scale, hist_weight=hw, size=16)
other = sample(model, list(range(2 * 10**9, 2 * 10**9 + 256)), klass, 2.0, 50, batch_size=16).images
with torch.no_grad(): u.hist = u._embed(other)
u.on_samples_end = lambda x0, info: None
show("unrelated", sample(model, list(range(256)), klass, 2.0, 50, guidance=[u], batch_size=16))
