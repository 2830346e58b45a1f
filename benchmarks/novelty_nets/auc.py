"""``auc``: how well a memory tells observed from fresh samples, at growing history."""

from __future__ import annotations

import time

import torch

from noveltynets.sampling import sample

from .common import FRESH_SEEDS, Memories, emit, load, roc_auc, sampling_config


def run(args) -> dict:
    """Per history size H: a memory (reference: ``--pool`` unguided samples) observes H samples in chunks of
    ``--observe-chunk``; ROC-AUC of its recall and smooth heads for ``--n-test`` of them vs as many fresh ones."""
    model, emb = load(args)
    dev, memories = args.device, Memories(model, emb, args)
    config = sampling_config(args, args.classes[0], batch_size=args.sample_batch)
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
        with torch.no_grad():
            history = emb(sample(model, range(biggest), config).images.to(dev))
            fresh = emb(sample(model, range(FRESH_SEEDS, FRESH_SEEDS + args.n_test), config).images.to(dev))
        ref = memories.reference(config).to(dev)  # the session's reference pool (its seeds, finished samples only)
        print(f"sampled {biggest + args.n_test + args.pool} in {time.time() - t0:.0f} s", flush=True)
        if args.embeddings:
            torch.save({"history": history.half().cpu(), "fresh": fresh.half().cpu(), "pool": ref.half().cpu()}, args.embeddings)
    out = []
    for h in args.histories:
        mem = memories.with_reference(ref)
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
        out.append(emit(args, row))
    memories.close()
    return {"auc": out}
