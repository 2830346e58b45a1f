"""Prototype: the shipped push form with the proximity memory (prox.ProxMem): run 1, its continuation, and the
continuation with a memory of as many unrelated samples instead of run 1 (judged against run 1)."""
import json, os, sys, time, torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dataclasses import dataclass
from prox import ProxMem
from noveltynets.models import load_model
from noveltynets.bench.runner import Judge
from noveltynets.sampling import sample
from noveltynets.guidance import NoveltyGuidance
from noveltynets.guidance.base import embedding_step
from noveltynets.guidance.particle import rbf_repulsion
from noveltynets.memory import embedder_from_spec
from noveltynets.memory.setup import POOL_SEED_BASE, pool_run

@dataclass
class Nov5(NoveltyGuidance):
    name = "novelty5"
    def _knows(self): return self.memory is not None and len(self.memory.hist) > 0
    def memory_step(self, e):
        d = self.memory.direction(e).detach()
        with torch.no_grad():
            p = torch.sigmoid(self.memory.logit(e))
        return self.memory.ell * p[:, None] * d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    def on_samples_end(self, x0, info):
        with torch.no_grad(): e = self.embedder(x0)
        traj = torch.cat(self._trajectory) if self._trajectory else None; self._trajectory = []
        if self.observer: self.observer(e, traj)
        else: self.memory.observe(e, traj)
    def _observes_trajectory(self): return True

klass = int(sys.argv[1]); tc = json.loads(sys.argv[2]); mc = json.loads(sys.argv[3]); tag = sys.argv[4] if len(sys.argv) > 4 else ""
model = load_model(); judge = Judge(klass); emb = embedder_from_spec("pooled-pixels:32")
steps = NoveltyGuidance().observed_steps(50); K = len(steps)
ref = pool_run(model, emb, range(POOL_SEED_BASE, POOL_SEED_BASE + 128), klass, 2.0, 50, "ddim", steps)
def mem(): return ProxMem(ref.shape[1], ref, 128, **mc)
def show(name, run, hist=None):
    m = judge(run.images, hist)
    print(json.dumps({"class": klass, "tag": tag, "run": name, "tc": tc, "mc": mc, **{k: round(m[k], 4) for k in ("near_dup", "precision", "recall", "adherence", "vendi")}}), flush=True)
t = Nov5(**tc, memory=mem(), embedder=emb)
r1 = sample(model, list(range(256)), klass, 2.0, 50, guidance=[t], batch_size=16); show("novelty", r1)
r2 = sample(model, list(range(256, 512)), klass, 2.0, 50, guidance=[t], batch_size=16); show("novelty-continued", r2, r1.images)
if os.environ.get("UNREL", "1") == "1":
    other = pool_run(model, emb, range(2 * 10**12, 2 * 10**12 + 256), klass, 2.0, 50, "ddim", steps).view(1 + K, 256, -1)
    u = Nov5(**tc, memory=mem(), embedder=emb)
    for c in other.split(16, dim=1):
        u.memory.observe(c[0], c[1:].flatten(0, 1))
    r3 = sample(model, list(range(256, 512)), klass, 2.0, 50, guidance=[u], batch_size=16); show("unrelated-continued", r3, r1.images)
