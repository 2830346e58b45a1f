"""Diagnostic: novelty as an x̂0 displacement (like particle): Δe = (h/2)·[∇ log P(unseen) · mem + particle batch force]."""
import json, math, sys, time, torch
from dataclasses import dataclass
from noveltynets.models import load_model
from noveltynets.bench.runner import Judge
from noveltynets.sampling import sample
from noveltynets.guidance import NoveltyGuidance
from noveltynets.guidance.base import embedding_step
from noveltynets.guidance.particle import rbf_repulsion
from noveltynets.memory import embedder_from_spec
from noveltynets.memory.setup import POOL_SEED_BASE, pool_run
from noveltynets.memory.store import new_memory

@dataclass
class Nov4(NoveltyGuidance):
    name = "novelty4"
    mem_weight: float = 1.0
    particle: float = 0.0
    prior: float = 0.0
    def _ell(self):
        if not hasattr(self, "_ell_v"):
            ref = self.memory.negatives[: self.memory.n_ref_final].double()
            d = torch.cdist(ref, ref); d.fill_diagonal_(float("inf")); self._ell_v = float(d.min(1).values.median())
        return self._ell_v
    def grad(self, x0, info):
        with torch.no_grad():
            e = self.embedder(x0)
        self._record(x0, e, info)
        b = len(e)
        d2 = torch.cdist(e.double(), e.double()).pow(2); off = ~torch.eye(b, dtype=torch.bool)
        h = float(d2[off].median() / math.log(b)) if b > 2 else 1.0
        delta = torch.zeros_like(e)
        if self._knows() and self.mem_weight:
            with torch.enable_grad():
                ee = e.detach().requires_grad_(True)
                logit = self.memory.logit(ee)
                g = torch.autograd.grad(logit.sum(), ee)[0]
            p = torch.sigmoid(logit.detach() + self.prior * math.log(max(self.memory.n_seen, 1) / self.memory.n_ref_final))
            ell = self._ell()
            delta = delta - self.mem_weight * ell * p[:, None] * g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if self.particle and b > 1:
            delta = delta + self.particle * rbf_repulsion(e.double()).float()
        return embedding_step(self.embedder, x0, delta, info.get("alpha_bar"))

def run_novelty(model, klass, n, spec, pools):
    kv = dict(a.split("=") for a in spec.split(",") if a)
    emb_spec = kv.pop("embedder", "pooled-pixels:8"); pool = int(kv.pop("pool", 128)); frozen_unrelated = kv.pop("unrelated", "0") == "1"
    mc = {k[3:]: (v if k == "mc_negatives" else float(v)) for k, v in list(kv.items()) if k.startswith("mc_")}
    kv = {k: v for k, v in kv.items() if not k.startswith("mc_")}
    cast = {f: type(getattr(Nov4, f)) for f in kv}
    term = Nov4(**{k: (v.lower() == "true" if cast[k] is bool else cast[k](v)) for k, v in kv.items()})
    emb = embedder_from_spec(emb_spec, model)
    if mc.get("negatives") == "real":
        term.trajectory = False
    traj = term.observed_steps(50) if term.trajectory else []
    key = (emb_spec, pool, tuple(traj))
    if key not in pools:
        pools[key] = pool_run(model, emb, range(POOL_SEED_BASE, POOL_SEED_BASE + pool), klass, 2.0, 50, "ddim", traj)
    mem = new_memory(emb, model.model_id, "cpu", trajectory=bool(traj), **mc); mem.set_reference(pools[key], n_final=pool)
    if mc.get("negatives") == "real":
        from noveltynets.memory.setup import real_reference
        mem.set_reference(real_reference(emb, klass))
    term.memory, term.embedder = mem, emb
    if frozen_unrelated:  # a memory of as many unrelated plain samples, frozen
        other = pool_run(model, emb, range(2 * 10**12, 2 * 10**12 + n), klass, 2.0, 50, "ddim", traj).view(1 + len(traj), n, -1)
        for chunk in other.split(16, dim=1):
            mem.observe(chunk[0], trajectory=chunk[1:].flatten(0, 1) if traj else None)
        term.on_samples_end = lambda x0, info: None
    run = sample(model, list(range(n)), klass, 2.0, 50, guidance=[term], batch_size=16)
    run.term = term
    return run

import os
CONT = os.environ.get("CONT") == "1"
if __name__ == "__main__":
    klass, n = int(sys.argv[1]), int(sys.argv[2]); model = load_model(); judge = Judge(klass); pools = {}
    for spec in sys.argv[3:]:
        t0 = time.time(); run = run_novelty(model, klass, n, spec, pools); m = judge(run.images)
        print(json.dumps({"class": klass, "spec": spec, "s": round(time.time() - t0), **{k: round(m[k], 4) for k in ("near_dup", "precision", "recall", "adherence", "vendi")}}), flush=True)
        if "unrelated=1" not in spec and CONT:
            r2 = sample(model, list(range(n, 2 * n)), klass, 2.0, 50, guidance=[run.term], batch_size=16); m = judge(r2.images, run.images)
            print(json.dumps({"class": klass, "spec": spec + " CONTINUED", **{k: round(m[k], 4) for k in ("near_dup", "precision", "recall", "adherence", "vendi")}}), flush=True)
