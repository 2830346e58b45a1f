"""Exploration for the keep-sampling issue (in-process, no store): R runs of N per method, each run
judged against every earlier sample of its own history, in the evaluation embedder's space.

    OMP_NUM_THREADS=1 python keep_explore.py CLASS R N STEPS METHODS [TERM_JSON] [MEMORY_JSON]

METHODS: comma-separated of plain, cont (continued memory), fresh (a fresh memory per run), unrel
(memory fed as many unrelated plain samples as cont has observed, never the guided ones), exact
(continued, the memory replaced by the exact proximity to every remembered row), batch (memory
part off), repel (SPELL, exact history of every earlier sample). Rows go to stdout as JSON.
Env GRAD=exact: the guided methods' gradients through the denoiser (default x0). Env SEED_POOL=K: before run 1, cont and unrel (and fresh, each run) observe K plain samples of the class (with their
trajectories; seeds apart from every other), so each memory also knows where plain sampling goes; unrel is still
topped up with as many plain samples as cont has observed since. Env EMB=SPEC: the memory's
embedder (a library spec, or twin:DIR for the judge's twin, a ceiling measurement only). Env SAVE=DIR: each run's images go to
DIR/METHOD_cCLASS_runR.pt (uint8), so that another judge can score the same samples later. Env CLEAN=FRAC: every
guided method's samples get the sampler's clean-up (``SamplingConfig(clean=FRAC)``: re-noised to FRAC·T, denoised
unguided) before the memory and the judge see them; plain and the controls' plain samples are left as they are. Env SEED0=S: run r on seeds
S + (r − 1)·N .. S + r·N − 1 and the unrelated control's plain samples S further on (default 0: the bench's seeds), another draw of the protocol. Env PUSH=all:
every sample gets the memory's push at its full length ℓ·memory_weight, P(seen) setting only its direction (the controls
and the continued memory then push equally far: only where to differs). Env BOOST=K (BOOST_FROM=F, default 0.5): from F of
the run to the memory's stop, each sample's CFG scale is cfg·(1 + K·p), p the weight P(seen) of its memory push at the
step before (the push is nearly orthogonal to CFG's class direction, cfg_align.py: a stronger class pull where the
memory pushes, to keep the pushed samples on the class).
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from noveltynets import metrics
from noveltynets.bench.runner import Judge
from noveltynets.data import from_uint8, load_mnist5k, to_uint8
from noveltynets.guidance import NoveltyGuidance, RepelGuidance
from noveltynets.embed import DEFAULT_EMBEDDER, embedder_from_spec
from noveltynets.embed.embedders import CallableEmbedder
from noveltynets.models.embedder import load_eval_embedder
from noveltynets.memory.store import new_memory
from noveltynets.models import load_model
from noveltynets.sampling import SamplingConfig, sample
from noveltynets.sampling import guided as guided_module
from noveltynets.session import POOL_SEED_BASE, pool_run, real_reference

UNREL_SEEDS = 2 * 10**12
SEED_SEEDS = 3 * 10**12


class ExactProximity:
    """The oracle: logit of exp(-d^2/2r^2), d the exact distance (in units of l) to the nearest remembered row."""

    def __init__(self, like, radius=0.7, softmin=0.0):
        self.like = like
        self.negatives, self.n_ref_final, self.config = like.negatives, like.n_ref_final, like.config
        self.device, self.radius, self.softmin = like.device, radius, softmin
        self._l = like.neighbour_distance()
        self.rows = torch.zeros(0, like.config.dim)
        self.n_seen = 0

    def neighbour_distance(self):
        return self._l

    def observe(self, embeddings, trajectory=None):
        new = [embeddings.detach().float().cpu()] + ([trajectory.detach().float().cpu()] if trajectory is not None else [])
        self.rows = torch.cat([self.rows.view(-1, self.like.config.space_dim)] + [self.like.project(x).detach() for x in new])
        self.n_seen += len(embeddings)

    def logit(self, e):
        if len(self.rows) == 0:
            return torch.full((len(e),), -30.0)
        d = torch.cdist(self.like.project(e.float()), self.rows) / self._l
        dmin = d.min(1).values if not self.softmin else -self.softmin * torch.logsumexp(-d / self.softmin, 1)
        logp = -dmin.pow(2) / (2 * self.radius ** 2)
        return logp - torch.log1p(-logp.exp().clamp(max=1 - 1e-6))


class FullPush(NoveltyGuidance):
    """The memory's push at full length on every sample (``PUSH=all``): the direction is the memory's, the length is not."""

    def memory_step(self, emb):
        with torch.enable_grad():
            e = emb.detach().to(self.memory.device).requires_grad_(True)
            g = torch.autograd.grad(self.memory.logit(e).sum(), e)[0]
        unit = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (-self.memory.neighbour_distance() * unit).to(emb.device, emb.dtype)


class BoostCFG(guided_module.CFGDenoiser):
    """CFG with a per-sample scale cfg·(1 + K·p_i) at the step after the memory pushed sample i with weight p_i (BOOST=K)."""

    kappa, last = 0.0, None  # last: (step, p) from BoostPush

    def __call__(self, x, t, extra):
        last = BoostCFG.last
        if last is None or extra.get("i") != last[0] + 1 or len(last[1]) != len(x) or self.cfg_scale == 1.0:
            return super().__call__(x, t, extra)
        BoostCFG.last = None  # used once: the next push leaves its own
        classes = extra["classes"]
        out = self.unet(torch.cat([x, x]), torch.cat([t, t]),
                        class_labels=torch.cat([classes, torch.full_like(classes, self.null_class)])).sample
        eps_c, eps_u = out.chunk(2)
        s = (self.cfg_scale * (1 + BoostCFG.kappa * last[1])).view(-1, *[1] * (x.dim() - 1)).to(x)
        return eps_u + s * (eps_c - eps_u)


class BoostPush(NoveltyGuidance):
    """The default push, leaving its weights P(seen) (from BOOST_FROM of the run) for BoostCFG's next step."""

    def grad(self, x0_hat, info):
        self._step = info.get("i", 0) / max(info.get("num_steps", 1), 1)
        self._i = info.get("i")
        return super().grad(x0_hat, info)

    def memory_step(self, emb):
        out = super().memory_step(emb)
        if self._step >= float(os.environ.get("BOOST_FROM", 0.5)):  # ‖Δe‖ = ℓ·P(seen): the weight, without another pass
            BoostCFG.last = (self._i, (out.norm(dim=1) / self.memory.neighbour_distance()).detach().cpu())
        return out

    def reset(self):
        super().reset()
        BoostCFG.last = None


def main():
    klass, R, N, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    names = sys.argv[5].split(",")
    tc = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
    mc = json.loads(sys.argv[7]) if len(sys.argv) > 7 else {}
    tag = os.environ.get("TAG", "")
    seed0 = int(os.environ.get("SEED0", 0))  # run r on seeds seed0 + (r − 1)·N ..: another draw on disjoint seeds
    if os.environ.get("BOOST"):
        BoostCFG.kappa = float(os.environ["BOOST"])
        guided_module.CFGDenoiser = BoostCFG  # sample() imports it at call time
    model = load_model()
    emb = guidance_embedder(os.environ.get("EMB", DEFAULT_EMBEDDER), model)
    judge = Judge(klass)
    config = SamplingConfig(klass=klass, cfg=2.0, steps=steps, batch_size=16)
    guided_config = config.replace(grad_mode=os.environ.get("GRAD", "x0"), clean=float(os.environ.get("CLEAN", 0)))  # the guided methods' gradient mode and clean-up
    term0 = NoveltyGuidance(**tc)
    traj = term0.observed_steps(steps) if term0.trajectory else []
    pool_n = int(os.environ.get("POOL", 128))
    t0 = time.time()
    if os.environ.get("REF") == "real":  # the class's real training images: no sampling at all
        ref = real_reference(emb, klass)
        pool_n = len(ref)
    else:
        ref = pool_run(model, emb, range(POOL_SEED_BASE, POOL_SEED_BASE + pool_n), config.replace(batch_size=64), traj)
    pool_s = time.time() - t0

    def memory():
        m = new_memory(emb, model.model_id, trajectory=bool(traj), **mc)
        m.set_reference(ref, n_final=pool_n)
        return m

    # the real-data floor: the class's real images in a fixed random order, N per run
    real = load_mnist5k().of_class(klass)
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    feats_real = judge.ev.features(real[order]).numpy()
    d_real = metrics.nearest_earlier_distance(feats_real)
    for r in range(R):
        seg = d_real[max(1, r * N):(r + 1) * N]
        if r * N < len(real):
            print(json.dumps({"tag": tag, "class": klass, "method": "real", "run": r + 1, "n": len(seg),
                              "near_dup": float((seg < judge.tau).mean())}), flush=True)

    seed_n = int(os.environ.get("SEED_POOL", 0))
    seed_plain = None
    if seed_n:  # plain samples every memory starts from (and their trajectories)
        e = pool_run(model, emb, range(SEED_SEEDS, SEED_SEEDS + seed_n), config.replace(batch_size=64), traj)
        seed_plain = e.view(1 + len(traj), seed_n, -1)

    def seeded(m):
        if seed_plain is not None:
            for c in seed_plain.split(16, dim=1):
                m.observe(c[0], trajectory=c[1:].flatten(0, 1) if len(c) > 1 else None)
        return m

    unrel_plain = None
    if "unrel" in names:  # unrelated plain samples (and their trajectories), made once
        e = pool_run(model, emb, range(UNREL_SEEDS + seed0, UNREL_SEEDS + seed0 + (R - 1) * N), config.replace(batch_size=64), traj)
        unrel_plain = e.view(1 + len(traj), (R - 1) * N, -1)

    state = {}
    for r in range(R):
        seeds = list(range(seed0 + r * N, seed0 + (r + 1) * N))
        for name in names:
            st = state.setdefault(name, {"images": []})
            terms = []
            if name in ("cont", "fresh", "unrel", "exact", "batch"):
                if name == "batch":
                    term = NoveltyGuidance(**{**tc, "memory_weight": 0}, embedder=emb)
                else:
                    if "mem" not in st or name == "fresh":
                        st["mem"] = seeded(memory()) if name != "exact" else ExactProximity(
                            memory(), mc.get("proximity_radius", 0.7), float(os.environ.get("SOFTMIN", 0)))
                    mem = st["mem"]
                    if name == "unrel" and r > 0:  # top up to as many as cont has observed: N per earlier run
                        chunk = unrel_plain[:, (r - 1) * N:r * N]
                        for c in chunk.split(16, dim=1):
                            mem.observe(c[0], trajectory=c[1:].flatten(0, 1) if len(c) > 1 else None)
                    term = (FullPush if os.environ.get("PUSH") == "all" else BoostPush if os.environ.get("BOOST")
                            else NoveltyGuidance)(**tc, memory=mem, embedder=emb)
                    if name == "unrel":
                        term.observer = lambda e, info: None
                terms = [term]
            elif name == "repel":
                if "term" not in st:
                    st["term"] = RepelGuidance(**json.loads(os.environ.get("REPEL", "{}")))
                terms = [st["term"]]
            t1 = time.time()
            run = sample(model, seeds, guided_config if terms else config, terms)
            secs = time.time() - t1
            hist = torch.cat(st["images"]) if st["images"] else None
            m = judge(run.images, hist)
            st["images"].append(run.images)
            if os.environ.get("SAVE"):
                os.makedirs(os.environ["SAVE"], exist_ok=True)
                torch.save(torch.from_numpy(to_uint8(run.images)), os.path.join(os.environ["SAVE"], f"{name}_c{klass}_run{r + 1}.pt"))
            allf = judge.ev.features(torch.cat(st["images"])).numpy()
            row = {"tag": tag, "class": klass, "method": name, "run": r + 1, "seconds": round(secs, 1),
                   "pool_s": round(pool_s, 1) if r == 0 and name not in ("plain", "repel", "batch") else 0,
                   **{k: round(m[k], 4) for k in ("near_dup", "novelty", "precision", "adherence", "recall", "coverage", "memorization")},
                   "modes": metrics_cover(allf, judge.tau)}
            print(json.dumps(row), flush=True)


def one_memory(klass, steps):
    """The single-history checks' set-up (exact_check.py, selective_clean.py): the model, the default embedder, the
    judge, the protocol's sampling config and a new trajectory memory with the class's real reference."""
    model = load_model()
    emb = embedder_from_spec(DEFAULT_EMBEDDER, model)
    mem = new_memory(emb, model.model_id, trajectory=True, negatives="real")
    mem.set_reference(real_reference(emb, klass))
    return model, emb, Judge(klass), SamplingConfig(klass=klass, cfg=2.0, steps=steps, batch_size=16), mem


def saved_runs(out, method, klass) -> list:
    """The runs of ``method`` that ``SAVE=out`` kept for ``klass``, in run order, as float images in [-1, 1]."""
    paths = sorted(Path(out).glob(f"{method}_c{klass}_run*.pt"), key=lambda p: int(p.stem.split("run")[1]))
    return [from_uint8(torch.load(p).numpy()) for p in paths]


def guidance_embedder(spec, model):
    """A library embedder spec, or ``twin:DIR``: the pooled features of another network of the judge's own kind
    (``judge_ceiling.py twin 1``): a ceiling measurement of how far a better-aimed space moves the memory's worth,
    never a guidance space to ship (it shares the judge's recipe, so the judge reads its pushes favourably)."""
    if not spec.startswith("twin:"):
        return embedder_from_spec(spec, model)
    net = load_eval_embedder(spec[5:])
    return CallableEmbedder(lambda x0: net.body(x0.clamp(-1, 1)).mean(dim=(2, 3)), "judge-twin", net.dim)


def metrics_cover(f, tau):
    """Greedy cover at radius tau: how many balls of radius tau, centred on samples in order, cover all."""
    centers = []
    for x in f:
        if not centers or np.min(np.linalg.norm(np.array(centers) - x, axis=1)) >= tau:
            centers.append(x)
    return len(centers)


if __name__ == "__main__":
    main()
