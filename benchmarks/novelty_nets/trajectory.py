"""``trajectory``: does the memory know a seen sample *during* sampling, from x̂0 at each step?"""

from __future__ import annotations

import numpy as np
import torch

from noveltynets.bench.runner import Judge
from noveltynets.sampling import sample

from .common import FRESH_SEEDS, POOL_SEEDS, Memories, emit, load, observe, roc_auc, sampling_config


def run(args) -> dict:
    """After observing ``--n`` samples (and, with ``--observe-steps``, their x̂0 at those steps, against the
    reference pool's x̂0 at the same steps), replay their trajectories and as many fresh ones; per step: ROC-AUC
    of the memory's logit on x̂0 for seen vs fresh, and the early-warning AUC: among the fresh trajectories,
    those whose finished sample is a near-dup of a seen one (evaluation embedder) vs the rest. The second is
    what guidance needs: to know, while the layout is still open, which trajectories are heading for history."""
    model, emb = load(args)
    dev, klass, memories = args.device, args.classes[0], Memories(model, emb, args)
    config = sampling_config(args, klass)

    def x0_hats(seeds):
        """x̂0 at every step, then the finished samples: a list of (N, C, H, W)."""
        per_step: list[list[torch.Tensor]] = [[] for _ in range(args.steps)]
        run = sample(model, seeds, config, callback=lambda d: per_step[d["i"]].append(d["x0_hat"].cpu()))
        return [torch.cat(s) for s in per_step] + [run.images]

    def embed(traj, steps):  # the finished samples' embeddings, then those of x̂0 at ``steps``
        with torch.no_grad():
            return torch.cat([emb(traj[-1].to(dev))] + [emb(traj[k].to(dev)) for k in steps])

    if args.trajectories and args.trajectories.exists():  # x̂0 trajectories cached by an earlier run with these settings
        pool, seen, fresh = torch.load(args.trajectories)
    else:  # the pool: the session's reference-pool seeds, its images kept whole at every step
        pool, seen, fresh = (x0_hats(list(range(base, base + n))) for base, n in
                             ((POOL_SEEDS, args.pool), (0, args.n), (FRESH_SEEDS, args.n)))
        if args.trajectories:
            torch.save((pool, seen, fresh), args.trajectories)
    mem = memories.with_reference(embed(pool, args.observe_steps), n_final=args.pool, trajectory=bool(args.observe_steps))
    per_sample = embed(seen, args.observe_steps).view(1 + len(args.observe_steps), args.n, -1)
    for chunk in per_sample.split(args.batch, dim=1):  # batch by batch, as a sampling run observes
        observe(mem, chunk)
    judge = Judge(klass, dev)
    fs, ff = judge.ev.features(seen[-1]).numpy(), judge.ev.features(fresh[-1]).numpy()
    heading = np.linalg.norm(ff[:, None] - fs[None], axis=-1).min(1) < judge.tau  # fresh finals that are near-dups of seen ones
    both = 0 < heading.sum() < len(heading)
    rows = []
    with torch.no_grad():
        for i, (a, b) in enumerate(zip(seen, fresh)):
            ea, eb = emb(a.to(dev)), emb(b.to(dev))
            la, lb = mem.logit(ea).cpu().numpy(), mem.logit(eb).cpu().numpy()
            ra, rb = mem.recall_logit(ea).cpu().numpy(), mem.recall_logit(eb).cpu().numpy()
            knn = -torch.cdist(eb, ea).min(1).values.cpu().numpy()  # oracle: nearest seen x̂0 of the same step
            rows.append(emit(args, {
                "step": i if i < args.steps else "final", "auc": roc_auc(la, lb), "recall_auc": roc_auc(ra, rb),
                "early_auc": roc_auc(lb[heading], lb[~heading]) if both else None,
                "knn_early_auc": roc_auc(knn[heading], knn[~heading]) if both else None,
                "p_seen": float(torch.tensor(la).sigmoid().mean()), "p_fresh": float(torch.tensor(lb).sigmoid().mean()),
                "p_fresh_heading": float(torch.tensor(lb[heading]).sigmoid().mean()), "n_heading": int(heading.sum())}))
    memories.close()
    return {"trajectory": rows}
