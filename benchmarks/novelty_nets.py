"""Novelty-nets benchmark (issue: novelty nets), protocol of shared/BENCHMARK.md.

    python benchmarks/novelty_nets.py protocol --device cuda --out docs/benchmarks/novelty
    python benchmarks/novelty_nets.py auc --device cuda --out docs/benchmarks/novelty
    python benchmarks/novelty_nets.py protocol --quick          # CPU smoke run

``protocol``: per class, plain CFG-2 sampling vs novelty guidance on the same seeds (256
samples, 16 per batch, one memory per class), the batch-repulsion-only and the
unrelated-memory ablations, and a second run continuing the same memory.
``auc``: how well a memory tells observed from fresh samples at growing history.
``trajectory``: how well it tells them apart from x̂0 at each sampling step (what guidance sees).
``alignment``: how well distances in each guidance embedder find the evaluation's near-dup pairs.
``renoise``: re-noising triggered by the memory vs by an exact kNN oracle over the trajectories.
Metrics use the evaluation embedder's features, never the guidance embedder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from noveltynets import metrics
from noveltynets.bench.runner import Judge  # every metric of the benchmark, in the evaluation embedder's space
from noveltynets.guidance import NoveltyGuidance
from noveltynets.embed import embedder_from_spec
from noveltynets.embed.embedders import DEFAULT_EMBEDDER
from noveltynets.memory.setup import pool_run
from noveltynets.memory.store import new_memory
from noveltynets.models import load_model
from noveltynets.models.embedder import load_eval_embedder
from noveltynets.sampling import sample

POOL_SEEDS, UNRELATED_SEEDS, FRESH_SEEDS = 10**12, 2 * 10**12, 3 * 10**12


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties half."""
    s = np.concatenate([pos, neg])
    ranks = s.argsort().argsort().astype(float) + 1
    for v in np.unique(s):  # average ranks of ties
        m = s == v
        ranks[m] = ranks[m].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _kw(args) -> dict:
    """Sampling settings shared by every run of a command (grad_mode only matters for guided runs)."""
    return dict(cfg=2.0, steps=args.steps, batch_size=args.batch, device=args.device, grad_mode=args.grad_mode)


def _trajectory_steps(args) -> list[int]:
    """The steps whose x̂0 a trajectory memory observes (those where the term acts), or none."""
    term = NoveltyGuidance(**args.term_config)
    return term.observed_steps(args.steps) if term.trajectory else []


def _embedded_run(model, emb, seeds, klass: int, args, kw: dict) -> torch.Tensor:
    """(1 + K, N, dim): unguided samples' embeddings, then their x̂0's at the K trajectory steps."""
    traj = _trajectory_steps(args)
    e = pool_run(model, emb, seeds, klass, kw["cfg"], kw["steps"], "ddim", traj, args.device, batch_size=256)
    return e.view(1 + len(traj), len(seeds), -1)


def _reference(model, emb, klass: int, args, kw: dict) -> torch.Tensor:
    """Embeddings of the reference pool: ``--pool`` unguided samples from the pool seeds (and their trajectories)."""
    return _embedded_run(model, emb, range(POOL_SEEDS, POOL_SEEDS + args.pool), klass, args, kw).flatten(0, 1)


def _memory(model, emb, ref: torch.Tensor, args):
    """A fresh memory with reference ``ref``, whose first ``--pool`` rows are finished samples (then their trajectories)."""
    mem = new_memory(emb, model.model_id, args.device, **{"trajectory": bool(_trajectory_steps(args)), **args.memory_config})
    mem.set_reference(ref, n_final=min(args.pool, len(ref)))
    return mem


def _observe(mem, chunk: torch.Tensor) -> None:
    """Observe one (1 + K, B, dim) chunk of an embedded run: B finished samples, then their x̂0 at K steps."""
    mem.observe(chunk[0], trajectory=chunk[1:].flatten(0, 1) if len(chunk) > 1 else None)


def _frozen(term: NoveltyGuidance) -> NoveltyGuidance:
    """The term with a memory that no longer learns from the samples it guides."""
    term.on_samples_end = lambda x0, info: None
    return term


def protocol(args) -> dict:
    """Per class: plain, novelty (every --scales × --batch-weights), and for the first setting the
    ablations, each with a memory of the same size at every batch, only its content differs:
    - novelty-continued: a second run (the next seeds) continuing the memory of the first;
    - unrelated-memory: a memory that learns, after each guided batch, as many unrelated plain
      samples of the same class (other seeds) instead of the batch (other-class-memory: of class
      (k + 5) mod 10);
    - unrelated-continued: the second run with a memory that learnt as many unrelated samples
      instead of the first run (then learns the second run's batches as novelty-continued does);
    - batch-only(-continued): the batch part alone, no memory; plain-continued: plain's second run.
    Second runs are judged against the first run's samples too."""
    dev, model = args.device, load_model(device=args.device)
    emb, kw = embedder_from_spec(args.embedder, model), _kw(args)
    rows = []
    for klass in args.classes:
        judge = Judge(klass, dev)
        seeds, later = list(range(args.n)), list(range(args.n, 2 * args.n))
        ref = _reference(model, emb, klass, args, kw)

        def record(method, setting, run, history=None):
            row = {"class": klass, "method": method, "setting": setting, "seconds": run.seconds, **judge(run.images, history)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                with open(args.out / "protocol_rows.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
            return run

        def unrelated(tc, of_class):
            """The term with a memory that learns, after each batch it guides, the next ``--batch``
            of ``args.n`` plain samples of ``of_class`` (other seeds) instead of that batch."""
            other = _embedded_run(model, emb, range(UNRELATED_SEEDS, UNRELATED_SEEDS + args.n), of_class, args, kw)
            chunks = iter(other.split(args.batch, dim=1))
            mem = _memory(model, emb, ref, args)

            def observe_unrelated(_emb, _info):
                _observe(mem, next(chunks))
            return NoveltyGuidance(**tc, memory=mem, embedder=emb, observer=observe_unrelated), other

        def taught(tc, embedded):
            """The term with a fresh memory that has observed ``embedded`` (1 + K, N, dim) batch by batch, and learns on."""
            mem = _memory(model, emb, ref, args)
            for chunk in embedded.split(args.batch, dim=1):
                _observe(mem, chunk)
            return NoveltyGuidance(**tc, memory=mem, embedder=emb)

        plain = record("plain", "cfg2", sample(model, seeds, klass, **kw))
        if args.ablations:  # the baseline for the continuation: plain sampling's next seeds against its first run
            record("plain-continued", "cfg2", sample(model, later, klass, **kw), history=plain.images)
        for scale in args.scales:
            for bw in args.batch_weights:
                tc = dict(scale=scale, batch_weight=bw, **args.term_config)
                setting = ",".join(f"{k}={v}" for k, v in tc.items())
                term = NoveltyGuidance(**tc, memory=_memory(model, emb, ref, args), embedder=emb)
                run = record("novelty", setting, sample(model, seeds, klass, guidance=[term], **kw))
                if not (args.ablations and scale == args.scales[0] and bw == args.batch_weights[0]):
                    continue
                record("novelty-continued", setting, sample(model, later, klass, guidance=[term], **kw), history=run.images)
                term_u, other = unrelated(tc, klass)
                record("unrelated-memory", setting, sample(model, seeds, klass, guidance=[term_u], **kw))
                record("unrelated-continued", setting, sample(model, later, klass, guidance=[taught(tc, other)], **kw),
                       history=run.images)
                record("other-class-memory", setting, sample(model, seeds, klass, guidance=[unrelated(tc, (klass + 5) % 10)[0]], **kw))
                if bw:  # the batch part alone: the same term without a memory
                    batch = NoveltyGuidance(**tc, embedder=emb)
                    first = record("batch-only", setting, sample(model, seeds, klass, guidance=[batch], **kw))
                    record("batch-only-continued", setting, sample(model, later, klass, guidance=[batch], **kw), history=first.images)
    return {"rows": rows}


def auc(args) -> dict:
    dev, model = args.device, load_model(device=args.device)
    emb = embedder_from_spec(args.embedder, model)
    klass, kw = args.classes[0], dict(cfg=2.0, steps=args.steps, device=dev, batch_size=args.sample_batch)
    biggest = max(args.histories)
    t0 = time.time()
    if args.embeddings and args.embeddings.exists():
        saved = torch.load(args.embeddings)
        history, fresh, ref = (saved[k].float().to(dev) for k in ("history", "fresh", "pool"))
        if len(history) < biggest or len(fresh) < args.n_test or len(ref) < args.pool:
            raise SystemExit(f"{args.embeddings} holds {len(history)}/{len(fresh)}/{len(ref)} history/fresh/pool embeddings; "
                             f"this run needs {biggest}/{args.n_test}/{args.pool}: delete it to sample afresh")
        history, fresh, ref = history[:biggest], fresh[:args.n_test], ref[:args.pool]
    else:
        history = emb(sample(model, range(biggest), klass, **kw).images.to(dev))
        fresh = emb(sample(model, range(FRESH_SEEDS, FRESH_SEEDS + args.n_test), klass, **kw).images.to(dev))
        ref = emb(sample(model, range(POOL_SEEDS, POOL_SEEDS + args.pool), klass, **kw).images.to(dev))
        print(f"sampled {biggest + args.n_test + args.pool} in {time.time() - t0:.0f} s", flush=True)
        if args.embeddings:
            torch.save({"history": history.half().cpu(), "fresh": fresh.half().cpu(), "pool": ref.half().cpu()}, args.embeddings)
    out = []
    for h in args.histories:
        mem = _memory(model, emb, ref, args)
        t1 = time.time()
        for chunk in history[:h].split(args.observe_chunk):
            mem.observe(chunk)
        seen = history[torch.randperm(h, generator=torch.Generator().manual_seed(0))[: args.n_test].to(history.device)]
        with torch.no_grad():  # the recall head (seen_probability) and the smooth head guidance follows
            a = roc_auc(mem.recall_logit(seen).cpu().numpy(), mem.recall_logit(fresh).cpu().numpy())
            a_steer = roc_auc(mem.logit(seen).cpu().numpy(), mem.logit(fresh).cpu().numpy())
        nets = [n for n in (mem.net, mem.recall_net) if n is not None]
        row = {"history": h, "auc": a, "auc_smooth_head": a_steer, "train_steps": mem.train_steps, "train_seconds": time.time() - t1,
               "params": sum(p.numel() for n in nets for p in n.parameters()), "replay": len(mem.replay)}
        out.append(row)
        print(json.dumps(row), flush=True)
    return {"auc": out}


def trajectory(args) -> dict:
    """Does the memory know a seen sample *during* sampling? After observing ``--n`` samples
    (and, with ``--observe-steps``, their x̂0 at those steps, against the reference pool's x̂0 at
    the same steps), replay their trajectories and as many fresh ones; per step: ROC-AUC of the
    memory's logit on x̂0 for seen vs fresh, and the early-warning AUC: among the fresh
    trajectories, those whose finished sample is a near-dup of a seen one (evaluation embedder)
    vs the rest. The second is what guidance needs: to know, while the layout is still open,
    which trajectories are heading for history."""
    from noveltynets.sampling.guided import CFGDenoiser
    from noveltynets.sampling.loop import generate, make_scheduler

    dev, model, klass = args.device, load_model(device=args.device), args.classes[0]
    emb = embedder_from_spec(args.embedder, model)

    def x0_hats(seeds):
        """x̂0 at every step, then the finished samples: a list of (N, C, H, W)."""
        per_step: list[list[torch.Tensor]] = [[] for _ in range(args.steps)]
        run = generate(CFGDenoiser(model.unet, 2.0), lambda: make_scheduler("ddim", model.scheduler_config, args.steps),
                       seeds, [klass] * len(seeds), model.image_shape, args.batch, device=dev,
                       callback=lambda d: per_step[d["i"]].append(d["x0_hat"].cpu()))
        return [torch.cat(s) for s in per_step] + [run.images]

    def embed(traj, steps):  # the finished samples' embeddings, then those of x̂0 at ``steps``
        with torch.no_grad():
            return torch.cat([emb(traj[-1].to(dev))] + [emb(traj[k].to(dev)) for k in steps])

    if args.trajectories and args.trajectories.exists():  # x̂0 trajectories cached by an earlier run with these settings
        pool, seen, fresh = torch.load(args.trajectories)
    else:
        pool, seen, fresh = (x0_hats(list(range(base, base + n))) for base, n in
                             ((POOL_SEEDS, args.pool), (0, args.n), (FRESH_SEEDS, args.n)))
        if args.trajectories:
            torch.save((pool, seen, fresh), args.trajectories)
    mem = _memory(model, emb, embed(pool, args.observe_steps), args)
    per_sample = embed(seen, args.observe_steps).view(1 + len(args.observe_steps), args.n, -1)
    for chunk in per_sample.split(args.batch, dim=1):  # batch by batch, as a sampling run observes
        _observe(mem, chunk)
    judge = Judge(klass, dev)
    fs, ff = judge.ev.features(seen[-1]).numpy(), judge.ev.features(fresh[-1]).numpy()
    heading = np.linalg.norm(ff[:, None] - fs[None], axis=-1).min(1) < judge.tau  # fresh finals that are near-dups of seen ones
    rows = []
    with torch.no_grad():
        for i, (a, b) in enumerate(zip(seen, fresh)):
            ea, eb = emb(a.to(dev)), emb(b.to(dev))
            la, lb = mem.logit(ea).cpu().numpy(), mem.logit(eb).cpu().numpy()
            ra, rb = mem.recall_logit(ea).cpu().numpy(), mem.recall_logit(eb).cpu().numpy()
            knn = -torch.cdist(eb, ea).min(1).values.cpu().numpy()  # oracle: nearest seen x̂0 of the same step
            rows.append({"step": i if i < args.steps else "final", "auc": roc_auc(la, lb), "recall_auc": roc_auc(ra, rb),
                         "early_auc": roc_auc(lb[heading], lb[~heading]) if 0 < heading.sum() < len(heading) else None,
                         "knn_early_auc": roc_auc(knn[heading], knn[~heading]) if 0 < heading.sum() < len(heading) else None,
                         "p_seen": float(torch.tensor(la).sigmoid().mean()), "p_fresh": float(torch.tensor(lb).sigmoid().mean()),
                         "p_fresh_heading": float(torch.tensor(lb[heading]).sigmoid().mean()), "n_heading": int(heading.sum())})
            print(json.dumps(rows[-1]), flush=True)
    return {"trajectory": rows}


def alignment(args) -> dict:
    """Which guidance embedder sees the evaluation's near-duplicates as near? Over all pairs of
    ``--n`` samples: ROC-AUC of −distance in the embedding (one scale for all dims, as the memory
    sees it, so the ranking is that of raw distances) for "the pair is a near-dup by the evaluation
    embedder"."""
    from noveltynets.embed import DenoiserFeatures, MultiScalePooled, PooledPixels

    model, klass = load_model(device=args.device), args.classes[0]
    images = sample(model, range(args.n), klass, **_kw(args)).images.to(args.device)
    judge = Judge(klass, args.device)
    f = judge.ev.features(images).numpy()
    iu = np.triu_indices(len(f), 1)
    near = np.linalg.norm(f[:, None] - f[None], axis=-1)[iu] < judge.tau
    embedders = {f"pooled-pixels:{s}": PooledPixels(s) for s in (2, 4, 8, 16)}
    embedders["multiscale-pooled:2,4,8"] = MultiScalePooled()
    embedders.update({f"denoiser-mid:t={t}": DenoiserFeatures(model.unet, model.model_id, t) for t in (0, 20, 100, 300)})
    rows = []
    with torch.no_grad():
        for name, e in embedders.items():
            z = e(images).float()
            d = torch.cdist(z, z).cpu().numpy()[iu]
            rows.append({"embedder": name, "auc": roc_auc(-d[near], -d[~near]), "near_dup_pairs": int(near.sum())})
            print(json.dumps(rows[-1]), flush=True)
    return {"alignment": rows}


def overhead(args) -> dict:
    """Wall time of novelty-guided vs plain sampling (batch ``--batch``, ``--n`` samples), interleaved, median."""
    model, klass, kw = load_model(device=args.device), args.classes[0], _kw(args)
    emb = embedder_from_spec(args.embedder, model)
    ref = _reference(model, emb, klass, args, kw)
    times: dict[str, list[float]] = {"plain": [], "novelty": []}
    observe: list[float] = []
    for _ in range(args.repeats):
        for method in times:
            terms = []
            if method == "novelty":
                mem = _memory(model, emb, ref, args)
                terms = [NoveltyGuidance(**args.term_config, memory=mem, embedder=emb)]
                def timed(e, info, mem=mem):
                    t = time.perf_counter()
                    mem.observe(e, trajectory=info.get("trajectory"))
                    observe.append(time.perf_counter() - t)
                terms[0].observer = timed
            t0 = time.perf_counter()
            sample(model, range(args.n), klass, guidance=terms, **kw)
            times[method].append(time.perf_counter() - t0)
            print(method, round(times[method][-1], 2), flush=True)
    med = {k: float(np.median(v)) for k, v in times.items()}
    row = {"n": args.n, "batch": args.batch, "steps": args.steps, "repeats": args.repeats, "seconds": times,
           "median_seconds": med, "ratio": med["novelty"] / med["plain"],
           "observe_seconds_median": float(np.median(observe)), "torch_threads": torch.get_num_threads()}
    print(json.dumps(row), flush=True)
    return {"overhead": row}


def memorization(args) -> dict:
    """Service-wide prior: does guidance with a memory pretrained on the training images echo them less?

    Per class: plain CFG 2; a memory pretrained on that class's training images (as
    ``noveltynets memory pretrain --from-dataset --class C``), frozen; the same, still observing
    new samples; and the control, a memory pretrained on as many of the model's own samples.
    """
    from noveltynets.data import load_split
    from noveltynets.memory.setup import pretrain

    dev, model, kw = args.device, load_model(device=args.device), _kw(args)
    emb = embedder_from_spec(args.embedder, model)
    train = load_split("train")
    train_px = train.images.flatten(1).numpy()
    train_feats = load_eval_embedder(device=dev).features(train.images).numpy()
    rows = []
    for klass in args.classes:
        judge, seeds = Judge(klass, dev), list(range(args.n))
        ref = _reference(model, emb, klass, args, kw)
        own = train.of_class(klass)
        other = sample(model, range(UNRELATED_SEEDS, UNRELATED_SEEDS + len(own)), klass, **{**kw, "batch_size": 256}).images

        def term(images):
            mem = pretrain(_memory(model, emb, ref, args), emb(images.to(dev)), args.epochs)
            return NoveltyGuidance(**{"batch_weight": 0.0, **args.term_config}, memory=mem, embedder=emb)

        runs = {"plain": [], "train-prior frozen": [_frozen(term(own))], "train-prior observing": [term(own)],
                "own-samples prior frozen": [_frozen(term(other))]}
        for method, terms in runs.items():
            run = sample(model, seeds, klass, guidance=terms, **kw)
            px = run.images.flatten(1).numpy()
            row = {"class": klass, "method": method, "seconds": run.seconds, **judge(run.images),
                   "memorization": metrics.memorization_rate(px, train_px),
                   "nearest_train_l2": metrics.nearest_train_distance(px, train_px),
                   "nearest_train_cosine": metrics.nearest_train_similarity(judge.ev.features(run.images).numpy(), train_feats)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"rows": rows}


class KnnRenoise:
    """Oracle trigger for re-noising: sample i is re-noised at step k when its x̂0 embedding lies
    closer to some earlier sample's x̂0 *at the same step* than τ_k (the ``q``-quantile of
    nearest-neighbour distances among the reference pool's x̂0 at step k): exact kNN over the
    whole history of trajectories, what the memory's re-noising check approximates."""

    name, scale = "knn-renoise", 0.0

    def __init__(self, embedder, taus: dict[int, torch.Tensor], stop: float):
        self.embedder, self.taus, self.stop = embedder, taus, stop
        self.history: dict[int, torch.Tensor] = {}
        self.current: dict[int, torch.Tensor] = {}
        self.flags = 0

    def active(self, progress):  # no gradient
        return False

    def renoises(self, progress):
        return progress < self.stop

    def reset(self):
        self.current = {}

    @torch.no_grad()
    def renoise(self, x0_hat, info):
        i, e = info["i"], self.embedder(x0_hat)
        self.current[i] = e
        if i not in self.history:
            return torch.zeros(len(e))
        flag = torch.cdist(e, self.history[i]).min(1).values < self.taus[i]
        self.flags += int(flag.sum())
        return flag.float()

    def on_samples_end(self, x0, info):
        for i, e in self.current.items():
            self.history[i] = torch.cat([self.history[i], e]) if i in self.history else e


def renoise(args) -> dict:
    """Re-noising (``novelty:scale=0,renoise_rho=1``) triggered by the memory vs by the exact kNN
    oracle (:class:`KnnRenoise`), against plain sampling, on the same seeds."""
    dev, model = args.device, load_model(device=args.device)
    emb, kw = embedder_from_spec(args.embedder, model), _kw(args)
    steps = [i for i in range(args.steps) if i / args.steps < args.renoise_stop]
    rows = []
    for klass in args.classes:
        judge, seeds = Judge(klass, dev), list(range(args.n))
        pool = pool_run(model, emb, range(POOL_SEEDS, POOL_SEEDS + args.pool), klass, kw["cfg"], args.steps, "ddim", steps, dev,
                        batch_size=64).view(1 + len(steps), args.pool, -1)[1:]
        nn = {k: torch.cdist(e, e).fill_diagonal_(float("inf")).min(1).values for k, e in zip(steps, pool)}
        runs = [("plain", [])]
        for q in args.quantiles:
            runs.append((f"knn-oracle q={q}", [KnnRenoise(emb, {k: d.quantile(q) for k, d in nn.items()}, args.renoise_stop)]))
        tc = {"scale": 0.0, "renoise_rho": 1.0, "renoise_stop": args.renoise_stop, **args.term_config}
        runs.append(("memory " + json.dumps(tc), [NoveltyGuidance(**tc, memory=_memory(model, emb, _reference(
            model, emb, klass, argparse.Namespace(**{**vars(args), "term_config": tc}), kw), args), embedder=emb)]))
        for label, terms in runs:
            run = sample(model, seeds, klass, guidance=terms, **kw)
            flags = terms[0].flags / args.n if terms and hasattr(terms[0], "flags") else None
            rows.append({"class": klass, "method": label, "flags_per_sample": flags, "seconds": run.seconds, **judge(run.images)})
            print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["protocol", "auc", "trajectory", "alignment", "overhead", "memorization", "renoise"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--classes", type=int, nargs="+", default=[1, 3, 7])
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--pool", type=int, default=128)
    p.add_argument("--scales", type=float, nargs="+", default=[NoveltyGuidance.scale])
    p.add_argument("--batch-weights", type=float, nargs="+", default=[NoveltyGuidance.batch_weight])
    p.add_argument("--embedder", default=DEFAULT_EMBEDDER, help="guidance embedder spec, e.g. denoiser-mid:t=20")
    p.add_argument("--memory-config", type=json.loads, default={},
                   help='MemoryConfig fields as JSON, e.g. \'{"fourier": 0, "negative_jitter": 0}\' for the plain-MLP ablation')
    p.add_argument("--term-config", type=json.loads, default={},
                   help='further NoveltyGuidance settings as JSON, e.g. \'{"stop": 0.5, "memory_weight": 1}\'')
    p.add_argument("--grad-mode", choices=["x0", "exact"], default="x0")
    p.add_argument("--no-ablations", dest="ablations", action="store_false",
                   help="protocol: only plain and the novelty grid (no continuation, unrelated-memory, batch-only)")
    p.add_argument("--observe-steps", type=int, nargs="*", default=[],
                   help="trajectory: steps whose x̂0 embeddings the memory also observes (and the reference pool holds)")
    p.add_argument("--trajectories", type=Path, help="trajectory: cache of the sampled x̂0 trajectories (loaded if present, else written)")
    p.add_argument("--quantiles", type=float, nargs="+", default=[0.6], help="renoise: the oracle's thresholds (quantiles of pool NN distances)")
    p.add_argument("--renoise-stop", type=float, default=0.8, help="renoise: re-noise until this fraction of the run")
    p.add_argument("--epochs", type=int, default=20, help="memorization: rehearsal passes over the training images")
    p.add_argument("--repeats", type=int, default=5, help="overhead: interleaved repetitions")
    p.add_argument("--histories", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--observe-chunk", type=int, default=16)
    p.add_argument("--sample-batch", type=int, default=1000)
    p.add_argument("--embeddings", type=Path, help="Cache of the auc run's sample embeddings (loaded if present, else written).")
    args = p.parse_args()
    if args.quick:
        args.classes, args.n, args.steps, args.pool = args.classes[:1], 32, 10, 32
        args.histories, args.n_test, args.sample_batch = [64], 32, 64
    t0 = time.time()
    result = {"args": {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)}}
    result.update({"protocol": protocol, "auc": auc, "trajectory": trajectory, "alignment": alignment, "overhead": overhead, "memorization": memorization,
                   "renoise": renoise}[args.what](args))
    result["wall_seconds"] = time.time() - t0
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.what}.json").write_text(json.dumps(result, indent=1, default=str))  # Path arguments as strings


if __name__ == "__main__":
    main()
